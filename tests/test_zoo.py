"""The zoo: named networks are fixed points of the builder (issue 2, sections 3 and 4).

Reference numbers come from two places, neither of them our code:
- ``../shared/data/reference_nets.json``: params, conv+linear MACs at 1x3x224x224 and the ordered
  state_dict shapes of the published implementations (torchvision, timm, MobileNeXt authors' code);
- ``PUBLISHED`` below: the table of issue 2 (torchvision / timm model cards and counters).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_space import zoo
from search_space.arch import Arch
from search_space.errors import ArchError
from search_space.profile import count_module, profile

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
REFERENCE = json.loads((DATA / "reference_nets.json").read_text())["nets"]
REF_ENTRIES = sorted(k for k in REFERENCE if k != "about")  # "name@width", or a SqueezeNet version name

EXPECTED_WIDTHS = {
    "mobilenet_v1": [1.0, 0.75, 0.5, 0.25],
    "mobilenet_v2": [1.4, 1.3, 1.0, 0.75, 0.5, 0.35],
    "mobilenet_v3_large": [1.0, 0.75],
    "mobilenet_v3_small": [1.0, 0.75, 0.5, 0.35],
    "mnasnet_a1": [0.35, 0.5, 0.75, 1.0, 1.4],
    "mnasnet_b1": [0.5, 0.75, 1.0, 1.3],
    "mnasnet_small": [1.0],
    "proxylessnas_mobile": [1.0],
    "fbnet_c": [1.0],
    "shufflenet_v2": [0.5, 1.0, 1.5, 2.0],
    "mobilenext": [1.0, 0.75, 0.5, 1.4],
    "squeezenet1_0": [1.0],
    "squeezenet1_1": [1.0],
    "shufflenet_v1_g1": [1.0],
    "shufflenet_v1_g2": [1.0],
    "shufflenet_v1_g3": [1.0],
    "shufflenet_v1_g4": [1.0],
    "shufflenet_v1_g8": [1.0],
    "xception": [1.0],
    "ppocr_mv3_small_x035": [1.0],
    "ppocr_mv1_enhance": [1.0],
}

# (zoo name, width): (params, conv+linear MACs at 224) -- the published references of issue 2.
PUBLISHED = {
    ("mobilenet_v2", 1.0): (3_504_872, 300_774_272),         # torchvision mobilenet_v2
    ("mobilenet_v3_large", 1.0): (5_483_032, 216_589_760),   # torchvision mobilenet_v3_large
    ("mobilenet_v3_small", 1.0): (2_542_856, 56_510_400),    # torchvision mobilenet_v3_small
    ("shufflenet_v2", 0.5): (1_366_792, 40_476_448),         # torchvision shufflenet_v2_x0_5
    ("shufflenet_v2", 1.0): (2_278_604, 144_907_992),        # torchvision shufflenet_v2_x1_0
    ("shufflenet_v2", 1.5): (3_503_624, 295_759_392),        # torchvision shufflenet_v2_x1_5
    ("shufflenet_v2", 2.0): (7_393_996, 583_253_464),        # torchvision shufflenet_v2_x2_0
    ("mnasnet_b1", 0.5): (2_218_512, 104_455_968),           # torchvision mnasnet0_5
    ("mnasnet_b1", 0.75): (3_170_208, 215_493_104),          # torchvision mnasnet0_75
    ("mnasnet_b1", 1.0): (4_383_312, 314_415_872),           # torchvision mnasnet1_0
    ("mnasnet_b1", 1.3): (6_282_256, 526_362_432),           # torchvision mnasnet1_3
    ("mnasnet_a1", 0.75): (2_912_278, 223_448_480),          # timm semnasnet_075
    ("mnasnet_a1", 1.0): (3_887_038, 311_579_072),           # timm semnasnet_100
    ("mnasnet_a1", 1.4): (6_105_992, 586_317_952),           # timm semnasnet_140
    ("mnasnet_small", 1.0): (2_030_264, 68_339_184),         # timm mnasnet_small
    ("mobilenet_v2", 1.4): (6_108_776, 582_195_824),         # timm mobilenetv2_140
    ("mobilenet_v2", 0.5): (1_968_680, 97_131_840),          # timm mobilenetv2_050
    ("mobilenet_v2", 0.35): (1_677_128, 59_285_808),         # timm mobilenetv2_035
    ("mobilenet_v1", 1.0): (4_231_976, 568_740_352),         # timm mobilenetv1_100
    ("mobilenet_v3_large", 0.75): (3_993_528, 154_560_624),  # timm mobilenetv3_large_075
    ("mobilenet_v3_small", 0.75): (2_041_872, 43_399_344),   # timm mobilenetv3_small_075
    ("mobilenet_v3_small", 0.5): (1_593_224, 24_188_688),    # timm mobilenetv3_small_050
    ("fbnet_c", 1.0): (5_572_200, 384_960_160),              # timm fbnetc_100
    ("mobilenext", 1.0): (3_535_416, 311_342_592),           # MobileNeXt authors' code (DESIGN.md)
    ("squeezenet1_0", 1.0): (1_248_424, 818_924_576),        # torchvision squeezenet1_0 (issue 9)
    ("squeezenet1_1", 1.0): (1_235_496, 349_151_936),        # torchvision squeezenet1_1 (issue 9)
}


def _state_shapes(module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")]


def _as_conv(shape) -> list[int]:
    """A Linear weight [o, i] holds the same numbers as a 1x1 conv weight [o, i, 1, 1]."""
    return list(shape) + [1, 1] if len(shape) == 2 else list(shape)


def _split(key: str) -> tuple[str, float]:
    if "@" not in key:  # SqueezeNet: the version is the name
        return key, 1.0
    name, width = key.split("@")
    return name, float(width)


# --------------------------------------------------------------------------------------------
def test_names_and_widths():
    assert zoo.names() == list(EXPECTED_WIDTHS)
    for name, ws in EXPECTED_WIDTHS.items():
        assert zoo.widths(name) == ws, name
    assert len(zoo.entries()) == sum(len(w) for w in EXPECTED_WIDTHS.values())


def test_reference_file_covers_the_published_table():
    for (name, width), (params, macs) in PUBLISHED.items():
        ref = REFERENCE[name if name.startswith("squeezenet") else f"{name}@{width}"]
        assert (ref["params"], ref["macs"]) == (params, macs), (name, width)


@pytest.mark.parametrize("name,width", sorted(PUBLISHED))
def test_published_params_and_macs(name, width):
    assert profile(zoo.get(name, width), 224) == dict(zip(("params", "macs"), PUBLISHED[(name, width)]))


@pytest.mark.parametrize("key", REF_ENTRIES)
def test_reference_fixed_point(key):
    """Same parameter count, MACs (analytic and hook-counted) and state_dict order/shapes."""
    name, width = _split(key)
    ref = REFERENCE[key]
    arch = zoo.get(name, width)
    assert profile(arch, 224) == {"params": ref["params"], "macs": ref["macs"]}
    net = arch.build(num_classes=1000)
    assert count_module(net, 224) == {"params": ref["params"], "macs": ref["macs"]}
    ours = _state_shapes(net)
    theirs = ref["state_dict"]
    assert len(ours) == len(theirs)
    for (k1, s1), (k2, s2) in zip(ours, theirs):
        assert _as_conv(s1) == _as_conv(s2), f"{key}: {k1} {s1} vs reference {k2} {s2}"


@pytest.mark.parametrize("key", ["mobilenet_v3_small@1.0", "mnasnet_a1@0.75", "shufflenet_v2@0.5", "mobilenext@0.5",
                                 "squeezenet1_0"])
def test_reference_weights_load_one_to_one(key):
    """Reference-shaped tensors, in the reference's order, load through a positional key map and
    land in the matching parameters (Linear <-> 1x1 conv reshaped)."""
    name, width = _split(key)
    net = zoo.get(name, width).build()
    gen = torch.Generator().manual_seed(0)
    ref_tensors = {k: torch.randn(*s, generator=gen) for k, s in REFERENCE[key]["state_dict"]}
    for k in ref_tensors:
        if k.endswith("running_var"):
            ref_tensors[k] = ref_tensors[k].abs() + 0.5
    ours = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    key_map = dict(zip((k for k, _ in REFERENCE[key]["state_dict"]), ours))
    assert len(key_map) == len(ours) == len(ref_tensors)
    target = net.state_dict()
    new_sd = {}
    for ref_key, our_key in key_map.items():
        new_sd[our_key] = ref_tensors[ref_key].reshape(target[our_key].shape)
    missing, unexpected = net.load_state_dict(new_sd, strict=False)
    assert not unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing)
    after = net.state_dict()
    for ref_key, our_key in key_map.items():
        assert torch.equal(after[our_key].flatten(), ref_tensors[ref_key].flatten()), our_key
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64, generator=gen))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_every_entry_analytic_equals_hook_count_and_round_trips():
    for name, width in zoo.entries():
        arch = zoo.get(name, width)
        net = arch.build()
        assert count_module(net, 224) == profile(arch, 224), (name, width)
        # also at an odd, non-square resolution (padding / rounding of spatial sizes)
        assert count_module(net, (97, 129)) == profile(arch, (97, 129)), (name, width)
        assert Arch.from_string(arch.to_string()) == arch
        assert Arch.from_dict(arch.to_dict()) == arch
        assert Arch.from_yaml(arch.to_yaml()) == arch
        assert Arch.from_json(arch.to_json()) == arch
        assert Arch.from_string(arch.to_string()).to_string() == arch.to_string()


def test_widths_shrink_and_grow_monotonically():
    for name in zoo.names():
        ws = sorted(zoo.widths(name))
        costs = [profile(zoo.get(name, w))["macs"] for w in ws]
        assert costs == sorted(costs) and len(set(costs)) == len(costs), name


@pytest.mark.parametrize("width,mmacs,mparams", [(1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_mobilenet_v1_widths_match_the_paper(width, mmacs, mparams):
    """Howard et al. 2017, Table 6 (millions of mult-adds, millions of parameters, as printed)."""
    p = profile(zoo.get("mobilenet_v1", width))
    assert round(p["macs"] / 1e6) == mmacs
    assert round(p["params"] / 1e6, 1) == mparams


def test_proxylessnas_matches_the_authors_config():
    """Parameter count and layer list implied by proxyless_mobile.config, computed from the JSON."""
    cfg = json.loads((DATA / "proxylessnas" / "proxyless_mobile.config").read_text())

    def conv_bn(cin, cout, k, groups=1):
        return cout * (cin // groups) * k * k + 2 * cout

    fc = cfg["first_conv"]
    params = conv_bn(fc["in_channels"], fc["out_channels"], fc["kernel_size"])
    layers = []
    for b in cfg["blocks"]:
        m = b["mobile_inverted_conv"]
        if m["name"] == "ZeroLayer":
            continue
        cin, cout, k, e = m["in_channels"], m["out_channels"], m["kernel_size"], m["expand_ratio"]
        mid = cin * e
        if e != 1:
            params += conv_bn(cin, mid, 1)
        params += conv_bn(mid, mid, k, groups=mid) + conv_bn(mid, cout, 1)
        layers.append((cin, cout, mid, k, m["stride"], b["shortcut"] is not None))
    mix = cfg["feature_mix_layer"]
    params += conv_bn(mix["in_channels"], mix["out_channels"], 1)
    cl = cfg["classifier"]
    params += cl["in_features"] * cl["out_features"] + cl["out_features"]

    arch = zoo.get("proxylessnas_mobile")
    assert [(b.in_ch, b.out_ch, b.mid_ch, b.kernel, b.stride, b.residual) for b in arch.blocks] == layers
    assert arch.stem.out_ch == fc["out_channels"] and arch.head.last_ch == mix["out_channels"]
    assert profile(arch)["params"] == params == 4_080_512


def test_mobilenext_block_variants_follow_the_authors_code():
    arch = zoo.get("mobilenext")
    assert all(b.type == "sandglass" for b in arch.blocks)
    assert arch.head.last_ch == 0 and arch.out_ch == 1280
    first = arch.blocks[0]
    assert (first.in_ch, first.out_ch, first.mid_ch, first.stride, first.opts) == (32, 96, 16, 2, ())
    # features.3 of the reference starts with a 1x1 conv: the first dw is absent
    assert arch.blocks[2].opts == (("dw1", 0),) and arch.blocks[2].stride == 2
    assert dict(arch.blocks[8].opts) == {"dw1": 0, "dw2": 0}
    assert sum(b.residual for b in arch.blocks) == 12


def test_get_bad_name_and_width():
    with pytest.raises(ArchError, match=r"zoo name: got 'resnet50'; allowed: mobilenet_v1, .*mobilenext"):
        zoo.get("resnet50")
    with pytest.raises(ArchError, match=r"zoo mobilenet_v2 width: got 0.6; allowed: 1.4, 1.3, 1.0, 0.75, 0.5, 0.35"):
        zoo.get("mobilenet_v2", 0.6)
    with pytest.raises(ArchError, match=r"width: got 'wide'"):
        zoo.get("mobilenet_v2", "wide")
    with pytest.raises(ArchError, match="zoo name"):
        zoo.widths("nope")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "search_space.zoo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_list_and_show():
    r = _cli("list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["name", "width", "params", "MACs@224"]
    assert len(lines) == 1 + len(zoo.entries())
    row = next(ln for ln in lines if ln.startswith("mobilenet_v3_large ") and " 1.0 " in ln)
    assert "5,483,032" in row and "216,589,760" in row

    r = _cli("show", "shufflenet_v2", "--width", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["name"], d["params"], d["macs"]) == ("shufflenet_v2", 1_366_792, 40_476_448)
    assert Arch.from_string(d["arch"]) == zoo.get("shufflenet_v2", 0.5)

    r = _cli("show", "mobilenet_v3_large@0.75", "--json")  # name@width, as train/netadapt/profile take it
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["name"], d["width"]) == ("mobilenet_v3_large", 0.75)
    assert Arch.from_string(d["arch"]) == zoo.get("mobilenet_v3_large", 0.75)

    r = _cli("show", "mobilenet_v3_small", "--resolution", "160")
    assert r.returncode == 0, r.stderr
    assert f"{profile(zoo.get('mobilenet_v3_small'), 160)['macs']:,}" in r.stdout
    assert "arch:" in r.stdout and "stem_i3_o16_k3_s2_hs" in r.stdout


@pytest.mark.parametrize("args,message", [
    (("show", "resnet50"), "error: zoo name: got 'resnet50'; allowed: mobilenet_v1"),
    (("show", "mobilenext", "--width", "0.6"), "error: zoo mobilenext width: got 0.6; allowed: 1.0, 0.75, 0.5, 1.4"),
    (("show", "mobilenext", "--resolution", "0"), "error: --resolution: got 0; allowed: a positive integer"),
    (("show", "mobilenext", "--width", "wide"), "error: python -m search_space.zoo show: argument --width: invalid float value: 'wide'"),
    (("frobnicate",), "error: python -m search_space.zoo: argument cmd: invalid choice: 'frobnicate'"),
    ((), "error: python -m search_space.zoo: the following arguments are required: cmd"),
    (("show", "mobilenet_v3_large@0.6"), "error: zoo mobilenet_v3_large width: got 0.6; allowed: 1.0, 0.75"),
    (("show", "mobilenet_v3_large@0.75", "--width", "1"),
     "error: --width: got 1.0; allowed: only without name@width (got mobilenet_v3_large@0.75)"),
    (("show", "mobilenext", "--bogus"),
     "error: python -m search_space.zoo: unrecognized arguments: --bogus; see python -m search_space.zoo --help"),
    (("list", "--resolution", "x"),
     "error: python -m search_space.zoo list: argument --resolution: invalid int value: 'x'; allowed: a whole number"),
])
def test_cli_bad_input(args, message):
    r = _cli(*args)
    assert r.returncode == 2
    assert r.stderr.strip() == message or r.stderr.strip().startswith(message)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_scaled_any_width_follows_the_family_rule():
    from search_space import zoo
    from search_space.errors import ArchError

    # published widths give exactly the zoo entries
    assert zoo.scaled("mobilenet_v3_large", 0.75) == zoo.get("mobilenet_v3_large", 0.75)
    # an unpublished width still rounds every channel to the family's divisor of 8
    a = zoo.scaled("mobilenet_v3_large", 0.6)
    assert all(b.out_ch % 8 == 0 for b in a.blocks)
    p06 = profile(a)["params"]
    assert profile(zoo.get("mobilenet_v3_large", 0.75))["params"] > p06
    with pytest.raises(ArchError, match="positive number"):
        zoo.scaled("mobilenet_v3_large", 0)
