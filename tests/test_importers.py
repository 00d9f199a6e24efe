"""OFA / ProxylessNAS net.config import: exact parameter counts, published MACs, CLI, bad input."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_space.arch import Arch
from search_space.errors import ArchError
from search_space.importers import from_net_config, main, read_net_config
from search_space.profile import profile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
OFA = DATA / "ofa_specialized"
PROXYLESS = DATA / "proxylessnas"
OFA_MBV3 = OFA / "LG-G8_lat-16ms_top1-74.7_finetune-25.net.config"
PROXYLESS_MOBILE = PROXYLESS / "proxyless_mobile.config"


def test_data_present():
    # the tests below read the shared data; fail loudly (not skip) when it is missing
    assert OFA_MBV3.is_file() and PROXYLESS_MOBILE.is_file(), f"missing shared data under {DATA}"


def _all_configs() -> list[Path]:
    files = sorted(OFA.glob("*.net.config")) + sorted(PROXYLESS.glob("*.config"))
    assert len(files) >= 30
    return files


# --------------------------------------------------------------------------------------------
# An independent parameter count: sum of the layer shapes the JSON describes
# --------------------------------------------------------------------------------------------
def _ofa_make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_params(c: dict) -> int:
    k, g = c["kernel_size"], c.get("groups", 1)
    n = c["out_channels"] * (c["in_channels"] // g) * k * k
    n += c["out_channels"] if c.get("bias") else 0
    n += 2 * c["out_channels"] if c.get("use_bn") else 0
    return n


def _mbconv_params(c: dict) -> int:
    cin, cout, k = c["in_channels"], c["out_channels"], c["kernel_size"]
    mid = c.get("mid_channels") or round(cin * c["expand_ratio"])
    n = 0
    if c["expand_ratio"] != 1:
        n += cin * mid + 2 * mid  # 1x1 expand + BN
    n += mid * k * k + 2 * mid  # depthwise + BN
    if c.get("use_se"):
        se = _ofa_make_divisible(mid // 4)
        n += mid * se + se + se * mid + mid  # reduce/expand 1x1 convs with bias
    n += mid * cout + 2 * cout  # 1x1 project + BN
    return n


def json_param_count(cfg: dict) -> int:
    n = _conv_params(cfg["first_conv"])
    for b in cfg["blocks"]:
        c = b["mobile_inverted_conv"]
        if c["name"] != "ZeroLayer":
            n += _mbconv_params(c)
    for key in ("final_expand_layer", "feature_mix_layer"):
        if key in cfg:
            n += _conv_params(cfg[key])
    cl = cfg["classifier"]
    return n + cl["in_features"] * cl["out_features"] + (cl["out_features"] if cl["bias"] else 0)


def _module_params(arch: Arch, num_classes: int) -> int:
    return sum(p.numel() for p in arch.build(num_classes).parameters())


def test_every_net_config_builds_with_exactly_the_params_its_json_implies():
    for f in _all_configs():
        cfg = json.loads(f.read_text())
        nc = read_net_config(f)
        built = _module_params(nc.arch, nc.num_classes)
        expected = json_param_count(cfg)
        assert built == expected, f.name
        # the analytic profiler agrees with the module
        assert profile(nc.arch, 224, nc.num_classes)["params"] == built, f.name


def test_proxylessnas_mobile_matches_published_size():
    # published_latency.csv, verified rows: MobileNetV3 paper Table 3 lists ProxylessNAS (mobile) at
    # 320M multiply-adds and 4.0M parameters (the paper truncates; the JSON sums to 4,080,512)
    import csv

    rows = [r for r in csv.DictReader((DATA / "published_latency.csv").open())
            if r["network"] == "ProxylessNAS (mobile)" and r["verified"] == "yes" and r["madds_M"]]
    assert rows, "published_latency.csv lost its ProxylessNAS (mobile) rows"
    nc = read_net_config(PROXYLESS_MOBILE)
    cost = profile(nc.arch, 224, nc.num_classes)
    for r in rows:
        assert round(cost["macs"] / 1e6) == int(r["madds_M"])
        assert 0 <= cost["params"] / 1e6 - float(r["params_M"]) < 0.1
    assert cost["params"] == _module_params(nc.arch, 1000) == 4_080_512


def test_ofa_flops_nets_match_their_published_macs():
    # OFA names these subnets by their MACs (OFA counts conv + linear multiply-accumulates)
    for f in sorted(OFA.glob("flops-*.net.config")):
        nc = read_net_config(f)
        published = int(re.match(r"flops-(\d+)M", f.name).group(1))
        assert nc.resolution is not None
        macs = profile(nc.arch, nc.resolution, nc.num_classes)["macs"]
        assert round(macs / 1e6) == published, (f.name, macs)


def test_ofa_mbv3_structure():
    cfg = json.loads(OFA_MBV3.read_text())
    nc = read_net_config(OFA_MBV3)
    arch = nc.arch
    assert nc.source == "MobileNetV3" and nc.resolution == 176 and nc.num_classes == 1000
    assert arch.stem.out_ch == 16 and arch.stem.act == "hswish" and arch.stem.stride == 2
    assert (arch.head.last_ch, arch.head.hidden_ch, arch.head.act, arch.head.dropout) == (960, 1280, "hswish", 0.1)
    convs = [b["mobile_inverted_conv"] for b in cfg["blocks"] if b["mobile_inverted_conv"]["name"] != "ZeroLayer"]
    assert len(arch.blocks) == len(convs)
    first = arch.blocks[0]
    assert first.mid_ch == first.in_ch == 16 and first.residual  # expand_ratio 1: no expansion conv
    for b, c in zip(arch.blocks, convs):
        assert b.type == "mbconv" and b.kernel == c["kernel_size"] and b.stride == c["stride"]
        assert b.act == {"relu": "relu", "h_swish": "hswish"}[c["act_func"]]
        if c["use_se"]:
            assert b.se_ch == _ofa_make_divisible(b.mid_ch // 4) and b.se_gate == "hsigmoid"
        else:
            assert b.se_ch == 0
    # the arch runs and round-trips through its string
    assert Arch.from_string(arch.to_string()) == arch
    torch.manual_seed(0)
    with torch.no_grad():
        y = arch.build(10).eval()(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 10) and torch.isfinite(y).all()


def test_proxylessnas_zero_layers_are_dropped():
    cfg = json.loads(PROXYLESS_MOBILE.read_text())
    arch = from_net_config(PROXYLESS_MOBILE)
    zero = sum(b["mobile_inverted_conv"]["name"] == "ZeroLayer" for b in cfg["blocks"])
    assert zero > 0 and len(arch.blocks) == len(cfg["blocks"]) - zero
    assert arch.stem.act == "relu6" and all(b.act == "relu6" for b in arch.blocks)
    assert (arch.head.last_ch, arch.head.hidden_ch) == (1280, 0)
    assert arch.blocks[0].mid_ch == arch.blocks[0].in_ch == 32 and not arch.blocks[0].residual


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_prints_and_writes_yaml(tmp_path, capsys):
    out = tmp_path / "arch.yaml"
    assert main([str(OFA_MBV3), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    arch = from_net_config(OFA_MBV3)
    p = profile(arch, 176, 1000)
    assert "name: LG-G8_lat-16ms_top1-74.7_finetune-25 (MobileNetV3)" in text
    assert f"params: {p['params']:,}" in text
    assert f"MACs: {p['macs'] / 1e6:.1f}M at 176x176" in text
    assert f"arch: {arch.to_string()}" in text
    assert Arch.load(out) == arch


def _write(tmp_path, cfg, name="bad.net.config") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)
    return p


def _bad_cases():
    base = json.loads(OFA_MBV3.read_text())
    cases = []
    c = copy.deepcopy(base)
    c["blocks"][2]["mobile_inverted_conv"]["name"] = "FancyConv"
    cases.append((c, "blocks[2].mobile_inverted_conv.name: got 'FancyConv'"))
    c = copy.deepcopy(base)
    c["blocks"][3]["mobile_inverted_conv"]["dilation"] = 2
    cases.append((c, "blocks[3].mobile_inverted_conv.dilation"))
    c = copy.deepcopy(base)
    c["blocks"][1]["mobile_inverted_conv"]["act_func"] = "tanh"
    cases.append((c, "blocks[1].mobile_inverted_conv.act_func: got 'tanh'; allowed: h_swish, relu, relu6"))
    c = copy.deepcopy(base)
    c["first_conv"]["groups"] = 3
    cases.append((c, "first_conv.groups: got 3"))
    c = copy.deepcopy(base)
    c["name"] = "ResNet"
    cases.append((c, "(top).name: got 'ResNet'; allowed: MobileNetV3, ProxylessNASNets"))
    c = copy.deepcopy(base)
    c["blocks"][2]["mobile_inverted_conv"]["in_channels"] = 40
    cases.append((c, "blocks[2].mobile_inverted_conv.in_channels: got 40; allowed: 24"))
    c = copy.deepcopy(base)
    c["blocks"][1] = {"name": "MobileInvertedResidualBlock",
                      "mobile_inverted_conv": {"name": "ZeroLayer", "stride": 1}, "shortcut": None}
    cases.append((c, "blocks[1].mobile_inverted_conv: a ZeroLayer without an identity shortcut"))
    c = copy.deepcopy(base)
    c["classifier"]["in_features"] = 1000
    cases.append((c, "classifier.in_features: got 1000; allowed: 1280"))
    c = copy.deepcopy(base)
    del c["first_conv"]
    cases.append((c, "(top).first_conv: missing"))
    return cases


def test_bad_net_configs_name_the_json_path(tmp_path):
    for i, (cfg, message) in enumerate(_bad_cases()):
        p = _write(tmp_path, cfg, f"bad{i}.net.config")
        with pytest.raises(ArchError) as exc:
            from_net_config(p)
        text = str(exc.value)
        assert message in text and str(p) in text and "\n" not in text, text
    with pytest.raises(ArchError, match="malformed JSON"):
        from_net_config(_write(tmp_path, "{not json", "broken.net.config"))
    with pytest.raises(ArchError, match="does not exist"):
        from_net_config(tmp_path / "nope.net.config")


@pytest.mark.parametrize("kind", ["unknown-layer", "missing-file", "malformed"])
def test_cli_bad_input_one_line_no_traceback(tmp_path, kind):
    if kind == "unknown-layer":
        cfg, _ = _bad_cases()[0]
        arg = str(_write(tmp_path, cfg))
    elif kind == "missing-file":
        arg = str(tmp_path / "missing.net.config")
    else:
        arg = str(_write(tmp_path, '{"name": "MobileNetV3", "blocks": [', "m.net.config"))
    r = subprocess.run([sys.executable, "-m", "search_space.importers", arg], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr


def test_cli_usage_errors_are_one_line(capsys):
    prog = "python -m search_space.importers"
    assert main([str(OFA_MBV3), "--bogus"]) == 2
    assert capsys.readouterr().err == f"error: {prog}: unrecognized arguments: --bogus; see {prog} --help\n"
    assert main([]) == 2
    assert capsys.readouterr().err == f"error: {prog}: the following arguments are required: file\n"
