"""searchers.pruning: channel groups, magnitude selection, exact weight copying, analytic params."""
from __future__ import annotations

import pytest
import torch

from search_space import zoo
from search_space.arch import Arch
from search_space.errors import ArchError
from search_space.profile import count_module, profile
from searchers.pruning import channel_map, importance, prune, se_size

torch.set_num_threads(1)

# stem 16 -> b0 (expand, stride 2) -> b1 (residual with b0's output) -> b2 (SE, stride 2) -> head
SMALL = Arch.from_string(
    "stem_i3_o16_k3_s2_hs-mbconv_i16_o24_m64_k3_s2_re-mbconv_i24_o24_m72_k5_s1_re_skip-"
    "mbconv_i24_o32_m72_k3_s2_se24h_hs-head_l96_h128_hs")


def randomized(arch: Arch, num_classes: int = 10, seed: int = 0):
    """A model with random weights and random (but valid) BatchNorm statistics."""
    torch.manual_seed(seed)
    model = arch.build(num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_groups_of_mobilenet_v3_large():
    cm = channel_map(zoo.get("mobilenet_v3_large"))
    names = {g.name: g for g in cm.prunable()}
    # the residual chains of V3-Large: 16 (stem + first block), 24, 40, 80, 112, 160
    widths = sorted((g.size, n) for n, g in names.items() if g.kind == "width")
    assert [s for s, _ in widths] == [16, 24, 40, 80, 112, 160]
    assert "width:stem-b0" in names and "width:b3-b5" in names
    # every block but the first (no expansion conv) has a mid group; head last and hidden are filters
    assert sum(g.kind == "mid" for g in names.values()) == 14
    assert {"filters:head.last", "filters:head.hidden"} <= set(names)
    assert names["width:b3-b5"].producers == ("blocks.3.project.conv.weight", "blocks.4.project.conv.weight",
                                              "blocks.5.project.conv.weight")
    assert cm.candidates("width:stem-b0") == [8]
    assert cm.candidates("mid:b1")[:3] == [56, 48, 40] and cm.candidates("mid:b1")[-1] == 8


def test_keeps_highest_magnitude_filters_and_copies_them():
    arch = zoo.get("mobilenet_v3_small", 0.35)
    model = randomized(arch)
    sd = model.state_dict()
    b = 4
    mid = arch.blocks[b].mid_ch                  # 96, SE 24
    g = torch.Generator().manual_seed(3)
    strong = sorted(torch.randperm(mid, generator=g)[:40].tolist())
    w = sd[f"blocks.{b}.expand.conv.weight"]
    scale = torch.full((mid,), 0.1)
    scale[strong] = 10.0
    w.mul_(scale.view(-1, 1, 1, 1))
    p = prune(arch, sd, {f"mid:b{b}": 40})
    assert p.kept[f"mid:b{b}"] == strong
    nb = p.arch.blocks[b]
    assert nb.mid_ch == 40 and nb.se_ch == se_size(24, 96, 40) == 16
    assert p.arch.blocks[b - 1] == arch.blocks[b - 1] and p.arch.blocks[b + 1] == arch.blocks[b + 1]
    idx = torch.tensor(strong)
    new = p.state_dict
    torch.testing.assert_close(new[f"blocks.{b}.expand.conv.weight"], w[idx], rtol=0, atol=0)
    for k in ("weight", "bias", "running_mean", "running_var"):
        torch.testing.assert_close(new[f"blocks.{b}.expand.bn.{k}"], sd[f"blocks.{b}.expand.bn.{k}"][idx], rtol=0, atol=0)
        torch.testing.assert_close(new[f"blocks.{b}.dw.bn.{k}"], sd[f"blocks.{b}.dw.bn.{k}"][idx], rtol=0, atol=0)
    torch.testing.assert_close(new[f"blocks.{b}.dw.conv.weight"], sd[f"blocks.{b}.dw.conv.weight"][idx], rtol=0, atol=0)
    torch.testing.assert_close(new[f"blocks.{b}.project.conv.weight"], sd[f"blocks.{b}.project.conv.weight"][:, idx],
                               rtol=0, atol=0)
    torch.testing.assert_close(new[f"blocks.{b}.se.fc2.bias"], sd[f"blocks.{b}.se.fc2.bias"][idx], rtol=0, atol=0)
    # the SE keeps its 16 units with the largest fc1 filters, and their columns for the kept channels
    se_kept = p.kept[f"se:b{b}"]
    fc1 = sd[f"blocks.{b}.se.fc1.weight"]
    norms = fc1.reshape(24, -1).norm(dim=1)
    assert se_kept == sorted(norms.argsort(descending=True)[:16].tolist())
    torch.testing.assert_close(new[f"blocks.{b}.se.fc1.weight"], fc1[se_kept][:, idx], rtol=0, atol=0)
    torch.testing.assert_close(new[f"blocks.{b}.se.fc2.weight"], sd[f"blocks.{b}.se.fc2.weight"][idx][:, se_kept],
                               rtol=0, atol=0)


def test_mid_pruning_is_exact_when_the_removed_channels_feed_nothing():
    model = randomized(SMALL)
    sd = model.state_dict()
    removed = [3, 10, 11, 20, 33, 40, 50, 63]                       # 64 -> 56 mid channels of block 0
    sd["blocks.0.expand.conv.weight"][removed] *= 0.01               # the weakest filters ...
    sd["blocks.0.project.conv.weight"][:, removed] = 0.0             # ... whose outputs the project ignores
    model.load_state_dict(sd)
    p = prune(SMALL, sd, {"mid:b0": 56})
    assert p.kept["mid:b0"] == [i for i in range(64) if i not in removed]
    small = p.arch.build(num_classes=10).eval()
    small.load_state_dict(p.state_dict)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    assert p.arch.blocks[0].mid_ch == 56 and p.arch.blocks[1] == SMALL.blocks[1]


def test_width_pruning_of_a_residual_chain_is_exact_for_dead_channels():
    model = randomized(SMALL)
    sd = model.state_dict()
    dead = [1, 5, 6, 7, 12, 17, 22, 23]                              # 24 -> 16 channels of the b0/b1 chain
    for b in (0, 1):                                                 # both producers write zeros there
        sd[f"blocks.{b}.project.conv.weight"][dead] = 0.0
        sd[f"blocks.{b}.project.bn.bias"][dead] = 0.0
        sd[f"blocks.{b}.project.bn.running_mean"][dead] = 0.0
    model.load_state_dict(sd)
    p = prune(SMALL, sd, {"width:b0-b1": 16})
    assert p.kept["width:b0-b1"] == [i for i in range(24) if i not in dead]
    a = p.arch
    assert (a.blocks[0].out_ch, a.blocks[1].in_ch, a.blocks[1].out_ch, a.blocks[2].in_ch) == (16, 16, 16, 16)
    assert a.blocks[1].residual and a.blocks[1].mid_ch == 72      # the chain stays a valid residual
    small = a.build(num_classes=10).eval()
    small.load_state_dict(p.state_dict)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_head_filters_prune_exactly_for_dead_units():
    model = randomized(SMALL)
    sd = model.state_dict()
    sd["head.hidden.weight"][96:] = 0.0
    sd["head.hidden.bias"][96:] = 0.0                                # hswish(0) = 0: nothing reaches the classifier
    model.load_state_dict(sd)
    p = prune(SMALL, sd, {"filters:head.hidden": 96})
    assert p.arch.head.hidden_ch == 96 and p.kept["filters:head.hidden"] == list(range(96))
    small = p.arch.build(num_classes=10).eval()
    small.load_state_dict(p.state_dict)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                                  "mnasnet_a1", "proxylessnas_mobile", "fbnet_c"])
def test_pruned_params_match_the_analytic_profile(name):
    arch = zoo.get(name)
    sd = arch.build(num_classes=10).state_dict()
    cm = channel_map(arch)
    sizes = {}
    for i, g in enumerate(cm.prunable()):
        cands = cm.candidates(g.name)
        if cands and i % 2 == 0:
            sizes[g.name] = cands[len(cands) // 2]
    p = prune(arch, sd, sizes)
    model = p.arch.build(num_classes=10)
    model.load_state_dict(p.state_dict)
    counted = count_module(model, resolution=32)
    analytic = profile(p.arch, resolution=32, num_classes=10)
    assert counted == analytic
    assert analytic["params"] < profile(arch, resolution=32, num_classes=10)["params"]
    assert Arch.from_string(p.arch.to_string()) == p.arch       # the string is recorded exactly


def test_mid_down_to_in_keeps_the_expansion_conv():
    sd = SMALL.build(num_classes=10).state_dict()
    p = prune(SMALL, sd, {"mid:b1": 24})                             # mid == in: an explicit 1x1 stays (pw=1)
    b = p.arch.blocks[1]
    assert (b.mid_ch, b.in_ch, b.opt("pw")) == (24, 24, 1)
    assert "blocks.1.expand.conv.weight" in p.arch.build(10).state_dict()
    assert "_xpw=1" in p.arch.to_string()
    # and pruning it further separates them again
    q = prune(p.arch, p.state_dict, {"mid:b1": 16})
    assert q.arch.blocks[1].mid_ch == 16 and q.arch.blocks[1].opt("pw") == 0


def test_importance_is_the_filter_l2_norm():
    sd = SMALL.build(num_classes=10).state_dict()
    cm = channel_map(SMALL)
    w = sd["head.conv.weight"]
    torch.testing.assert_close(importance(cm, sd, "filters:head.last").float(), w.reshape(96, -1).norm(dim=1))


def test_bad_prune_requests():
    sd = SMALL.build(num_classes=10).state_dict()
    with pytest.raises(ArchError, match=r"prune group: got 'mid:b9'; allowed: .*mid:b0"):
        prune(SMALL, sd, {"mid:b9": 8})
    with pytest.raises(ArchError, match=r"prune group mid:b0: got 80; allowed: an integer in \[1, 64\]"):
        prune(SMALL, sd, {"mid:b0": 80})
    shuffle = zoo.get("shufflenet_v2")
    cm = channel_map(shuffle)
    assert [g.name for g in cm.prunable()] == ["filters:head.last"]
    with pytest.raises(ArchError, match="cannot be pruned .*block type shufflev2"):
        prune(shuffle, shuffle.build(10).state_dict(), {"fixed:stem-b15": 8} if "fixed:stem-b15" in cm.groups
              else {next(n for n in cm.groups if n.startswith("fixed")): 8})
    with pytest.raises(ArchError, match="weights: missing"):
        prune(SMALL, {}, {"mid:b0": 8})
