"""Block types: modules, analytic cost vs forward hooks, behaviour, and bad input (issue 2, 2 and 8)."""
from __future__ import annotations

import pytest
import torch

from search_space import modules
from search_space.arch import Arch, BlockSpec, Head, Stem
from search_space.blocks import BLOCKS, check_block, get_block_type
from search_space.builder import build, module_plan
from search_space.errors import ArchError
from search_space.profile import count_module, profile, profile_layers

torch.set_num_threads(1)


def _one_block(spec: BlockSpec, head: Head | None = None) -> Arch:
    return Arch(Stem(out_ch=spec.in_ch, kernel=3, stride=1, act="relu"), (spec,), head or Head())


VARIANTS = [
    BlockSpec("mbconv", 16, 24, mid_ch=96, kernel=3, stride=2, act="relu6"),
    BlockSpec("mbconv", 24, 24, mid_ch=72, kernel=5, stride=1, se_ch=24, se_gate="hsigmoid", act="hswish", residual=True),
    BlockSpec("mbconv", 16, 16, mid_ch=16, kernel=3, stride=1, se_ch=8, act="relu", residual=True),   # timm ds
    BlockSpec("mbconv", 16, 16, mid_ch=16, kernel=7, stride=2, opts=(("pw", 1),)),                      # timm ir e1
    BlockSpec("mbconv", 16, 32, mid_ch=64, kernel=3, stride=1, groups=4, se_ch=4, se_gate="sigmoid", act="swish"),
    BlockSpec("dwsep", 16, 32, kernel=3, stride=2),
    BlockSpec("dwsep", 16, 16, kernel=5, stride=1, act="hswish"),
    BlockSpec("sandglass", 32, 32, mid_ch=16, kernel=3, stride=1, act="relu6", residual=True),
    BlockSpec("sandglass", 32, 48, mid_ch=16, kernel=3, stride=2, act="relu6", opts=(("dw1", 0),)),
    BlockSpec("sandglass", 32, 48, mid_ch=16, kernel=5, stride=1, act="relu6", opts=(("dw1", 0), ("dw2", 0))),
    BlockSpec("shufflev2", 24, 48, mid_ch=24, kernel=3, stride=2),
    BlockSpec("shufflev2", 48, 48, mid_ch=24, kernel=5, stride=1),
    # issue 9: the rest of the family
    BlockSpec("dwsep", 16, 24, kernel=5, stride=2, se_ch=4, act="hswish"),                # PP-OCR MV1Enhance
    BlockSpec("dwsep", 16, 24, kernel=3, stride=1, opts=(("dwbn", 0),)),                  # Xception exit
    BlockSpec("fire", 16, 32, mid_ch=8, kernel=3),
    BlockSpec("fire", 32, 32, mid_ch=8, kernel=3, residual=True),                         # simple bypass
    BlockSpec("shufflev1", 24, 48, mid_ch=12, kernel=3, stride=2, groups=3, opts=(("gpw1", 1),)),
    BlockSpec("shufflev1", 48, 48, mid_ch=12, kernel=3, stride=1, groups=4),
    BlockSpec("xception", 16, 32, mid_ch=32, kernel=3, stride=2, opts=(("relu1", 0),)),
    BlockSpec("xception", 16, 16, mid_ch=16, kernel=3, stride=1, opts=(("reps", 3),)),
    BlockSpec("xception", 16, 32, mid_ch=16, kernel=5, stride=1, act="hswish"),
    BlockSpec("xception", 16, 24, mid_ch=24, kernel=3, stride=1, opts=(("reps", 1),)),
    BlockSpec("conv", 16, 32, kernel=3, stride=2, groups=2, act="hswish"),
    BlockSpec("conv", 16, 32, kernel=1, stride=1),
    BlockSpec("maxpool", 16, 16, kernel=3, stride=2),
]


def test_registry_has_the_four_families():
    assert {"mbconv", "dwsep", "sandglass", "shufflev2", "fire", "shufflev1", "xception", "conv", "maxpool"} <= set(BLOCKS)
    for name, bt in BLOCKS.items():
        assert bt.type_name == name
        assert hasattr(modules, bt.module_class)


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: s.to_string())
def test_cost_matches_hooks_and_forward_shape(spec):
    arch = _one_block(spec, Head(last_ch=64, hidden_ch=32, act="hswish", dropout=0.1))
    net = arch.build(num_classes=10)
    for res in (32, (17, 23)):
        assert count_module(net, res) == profile(arch, res, num_classes=10), res
    # the block alone, through the registry: cost() equals its module's hooked count at 15x15
    bt = get_block_type(spec.type)
    block = bt.module(spec)
    assert count_module(block, 15, in_ch=spec.in_ch) == dict(zip(("params", "macs"), bt.cost(spec, 15, 15)))
    x = torch.randn(2, spec.in_ch, 16, 16)
    block.eval()
    y = block(x)
    assert y.shape == (2, spec.out_ch, 16 // spec.stride, 16 // spec.stride)
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_known_costs_by_hand():
    # MobileNetV2 block 16 -> 24, e6, k3, s2 at 112x112 (torchvision features.2)
    spec = BlockSpec("mbconv", 16, 24, mid_ch=96, kernel=3, stride=2, act="relu6")
    params, macs = get_block_type("mbconv").cost(spec, 112, 112)
    assert params == 16 * 96 + 2 * 96 + 96 * 9 + 2 * 96 + 96 * 24 + 2 * 24 == 5_136
    assert macs == 112 * 112 * 16 * 96 + 56 * 56 * (96 * 9 + 96 * 24) == 29_202_432
    # MobileNetV1 first dwsep 32 -> 64 at 112x112
    spec = BlockSpec("dwsep", 32, 64)
    assert get_block_type("dwsep").cost(spec, 112, 112) == (32 * 9 + 64 + 32 * 64 + 128, 112 * 112 * (32 * 9 + 32 * 64))


def test_module_registration_order_follows_the_references():
    spec = BlockSpec("mbconv", 16, 24, mid_ch=64, kernel=5, stride=2, se_ch=16)
    keys = [k for k in get_block_type("mbconv").module(spec).state_dict() if "running" not in k and "num_batches" not in k]
    assert keys == ["expand.conv.weight", "expand.bn.weight", "expand.bn.bias", "dw.conv.weight", "dw.bn.weight",
                    "dw.bn.bias", "se.fc1.weight", "se.fc1.bias", "se.fc2.weight", "se.fc2.bias",
                    "project.conv.weight", "project.bn.weight", "project.bn.bias"]
    net = build(_one_block(BlockSpec("dwsep", 8, 8), Head(last_ch=16, hidden_ch=12)))
    top = [k.split(".")[0] + "." + k.split(".")[1] for k in net.state_dict()]
    assert top[0] == "stem.conv" and top[-1] == "head.classifier"
    assert [k for k in net.state_dict() if k.startswith("head.") and "running" not in k and "num_b" not in k] == [
        "head.conv.weight", "head.bn.weight", "head.bn.bias", "head.hidden.weight", "head.hidden.bias",
        "head.classifier.weight", "head.classifier.bias"]


def test_module_plan_names_plain_kwargs():
    arch = _one_block(VARIANTS[1])
    plan = module_plan(arch, num_classes=7)
    assert [n for n, _ in plan] == ["Stem", "MBConv", "Head"]
    assert plan[1][1]["se_ch"] == 24 and plan[1][1]["residual"] is True and plan[2][1]["num_classes"] == 7
    for _, kw in plan:
        assert all(isinstance(v, (int, float, str, bool)) for v in kw.values())


def test_residual_and_identity_behaviour():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 8, 8)
    # mbconv with a zeroed projection BN is the identity when residual, zero otherwise
    for residual in (True, False):
        m = get_block_type("mbconv").module(BlockSpec("mbconv", 16, 16, mid_ch=32, residual=residual)).eval()
        torch.nn.init.zeros_(m.project.bn.weight)
        torch.nn.init.zeros_(m.project.bn.bias)
        with torch.no_grad():
            y = m(x)
        assert torch.allclose(y, x if residual else torch.zeros_like(x))
    m = get_block_type("sandglass").module(BlockSpec("sandglass", 16, 16, mid_ch=8, residual=True)).eval()
    torch.nn.init.zeros_(m.dw2.bn.weight)
    torch.nn.init.zeros_(m.dw2.bn.bias)
    with torch.no_grad():
        assert torch.allclose(m(x), x)


def test_shufflev2_split_and_shuffle():
    """Stride 1: the untouched half comes out on the even channels (concat then shuffle of 2 groups)."""
    m = get_block_type("shufflev2").module(BlockSpec("shufflev2", 16, 16, mid_ch=8)).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        y = m(x)
    assert torch.equal(y[:, 0::2], x[:, :8])
    assert not torch.allclose(y[:, 1::2], x[:, 8:])
    assert torch.equal(modules.channel_shuffle(torch.arange(6.).view(1, 6, 1, 1), 2).flatten(),
                       torch.tensor([0., 3., 1., 4., 2., 5.]))


def test_se_gates_and_activations():
    m = modules.SqueezeExcite(8, 4, "sigmoid")
    assert isinstance(m.gate, torch.nn.Sigmoid)
    assert isinstance(modules.SqueezeExcite(8, 4, "hsigmoid").gate, torch.nn.Hardsigmoid)
    acts = {"relu": torch.nn.ReLU, "relu6": torch.nn.ReLU6, "hswish": torch.nn.Hardswish, "swish": torch.nn.SiLU,
            "linear": torch.nn.Identity}
    for name, cls in acts.items():
        assert isinstance(modules.make_act(name), cls)


def test_profile_layers_sum_and_keys():
    arch = _one_block(VARIANTS[0], Head(last_ch=32))
    rows = profile_layers(arch, 64, num_classes=5)
    assert [r[0].split("_")[0] for r in rows] == ["stem", "mbconv", "head"]
    assert rows[1][0] == "mbconv_i16_o24_m96_k3_s2_r6@16x64x64"
    p = profile(arch, 64, num_classes=5)
    assert p == {"params": sum(r[1] for r in rows), "macs": sum(r[2] for r in rows)}


def test_stem_pool_and_resolution():
    arch = Arch(Stem(out_ch=24, pool=True), (BlockSpec("shufflev2", 24, 48, mid_ch=24, stride=2),), Head(last_ch=64))
    net = arch.build(num_classes=3).eval()
    assert net.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 48, 8, 8)
    assert count_module(net, 64) == profile(arch, 64, num_classes=3)


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the field and the allowed values
# --------------------------------------------------------------------------------------------
BAD = [
    (dict(type="resnet", in_ch=16, out_ch=16), r"block\.type: got 'resnet'; allowed: conv, dwsep, fire, maxpool, mbconv, "
                                               r"sandglass, shufflev1, shufflev2, xception"),
    (dict(type="shufflev2", in_ch=24, out_ch=25, mid_ch=12, stride=2), r"block\(shufflev2\)\.out_ch: got 25; allowed: an even number"),
    (dict(type="shufflev2", in_ch=24, out_ch=48, mid_ch=20, stride=2), r"block\(shufflev2\)\.mid_ch: got 20; allowed: out_ch / 2 = 24"),
    (dict(type="shufflev2", in_ch=24, out_ch=48, mid_ch=24, stride=1), r"block\(shufflev2\)\.in_ch: got 24 at stride 1; allowed: 48"),
    (dict(type="mbconv", in_ch=16, out_ch=24, mid_ch=64, groups=3), r"block\(mbconv\)\.groups: got 3, which does not divide in_ch 16"),
    (dict(type="mbconv", in_ch=16, out_ch=24, mid_ch=0), r"block\(mbconv\)\.mid_ch: got 0; allowed: a positive integer"),
    (dict(type="mbconv", in_ch=16, out_ch=24, mid_ch=64, stride=3), r"block\(mbconv\)\.stride: got 3; allowed: 1, 2"),
    (dict(type="mbconv", in_ch=16, out_ch=16, mid_ch=64, kernel=4), r"block\(mbconv\)\.kernel: got 4; allowed: an odd kernel"),
    (dict(type="mbconv", in_ch=16, out_ch=24, mid_ch=64, opts=(("pw", 1),)), r"block\(mbconv\)\.opts\.pw: got 1 with mid_ch 64"),
    (dict(type="mbconv", in_ch=16, out_ch=24, mid_ch=64, opts=(("dw1", 0),)), r"block\(mbconv\)\.opts: got 'dw1'; allowed: pw"),
    (dict(type="mbconv", in_ch=16, out_ch=24, mid_ch=64, act="gelu"), r"block\(mbconv\)\.act: got 'gelu'; allowed: relu, relu6, hswish, swish, linear"),
    (dict(type="mbconv", in_ch=16, out_ch=16, mid_ch=64, stride=2, residual=True), r"block\(mbconv\)\.residual: needs stride 1"),
    (dict(type="dwsep", in_ch=16, out_ch=32, groups=2), r"block\(dwsep\)\.groups: got 2; allowed: 1"),
    (dict(type="dwsep", in_ch=16, out_ch=32, mid_ch=8), r"block\(dwsep\)\.mid_ch: got 8; allowed: 0"),
    (dict(type="sandglass", in_ch=16, out_ch=32, mid_ch=8, stride=2, opts=(("dw2", 0),)), r"block\(sandglass\)\.stride: got 2 with opts dw2=0"),
    (dict(type="sandglass", in_ch=16, out_ch=32, mid_ch=8, opts=(("dw1", 1),)), r"block\(sandglass\)\.opts\.dw1: got 1; allowed: 0"),
    (dict(type="sandglass", in_ch=16, out_ch=32, mid_ch=8, groups=2), r"block\(sandglass\)\.groups: got 2; allowed: 1"),
]


@pytest.mark.parametrize("kw,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_block_specs(kw, message):
    with pytest.raises(ArchError, match=message) as exc:
        check_block(BlockSpec(**kw))
    assert "\n" not in str(exc.value)
    try:
        spec = BlockSpec(**kw)
    except ArchError:
        return  # rejected by the value itself
    # through an Arch, the message names the block index too
    with pytest.raises(ArchError, match=r"arch\.blocks\[0\]: " + message):
        Arch(Stem(out_ch=kw["in_ch"]), (spec,))


def test_bad_arch_strings_and_yaml():
    with pytest.raises(ArchError, match=r"arch\.blocks\[0\]: block\.type: got 'resnet'; allowed: conv, dwsep, fire"):
        Arch.from_string("stem_i3_o16_k3_s2_re-resnet_i16_o16_k3_s1_re-head_re")
    with pytest.raises(ArchError, match=r"block\(shufflev2\)\.out_ch: got 15"):
        Arch.from_string("stem_i3_o16_k3_s2_re-shufflev2_i16_o15_m7_k3_s2_re-head_re")
    with pytest.raises(ArchError, match=r"arch string block 0: field 'q' does not apply here; allowed: "):
        Arch.from_string("stem_i3_o16_k3_s2_re-mbconv_i16_o16_m32_q7_k3_s1_re-head_re")
    with pytest.raises(ArchError, match=r"stride: got 4; allowed: 1, 2"):
        Arch.from_string("stem_i3_o16_k3_s2_re-mbconv_i16_o16_m32_k3_s4_re-head_re")
    with pytest.raises(ArchError, match="malformed YAML"):
        Arch.from_yaml("stem: [out_ch: 16\nblocks: {")
    with pytest.raises(ArchError, match=r"arch\.blocks\[0\]\.colour: got 'colour'; allowed: type, in_ch"):
        Arch.from_yaml("stem: {out_ch: 16}\nblocks:\n  - {type: mbconv, in_ch: 16, out_ch: 16, mid_ch: 32, colour: 1}\n")
    with pytest.raises(ArchError, match=r"num_classes: got 0; allowed: a positive integer"):
        build(_one_block(VARIANTS[5]), num_classes=0)
