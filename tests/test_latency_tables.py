"""Latency tables: importers on the real OFA / ProxylessNAS files, the note10-cpu exact lookup,
the target file format and its errors."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

import latency_models
from latency_models.fit_note10 import ofa_keys, ofa_w12_arch, random_ofa_arch
from latency_models.model import LatencyModel
from latency_models.table import LatencyTable, import_ofa, import_proxylessnas, import_yaml, OFA
from search_space.arch import Arch, BlockSpec, Head, Stem
from search_space.errors import TargetError

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
LUTS = DATA / "luts"


def test_shared_data_present():
    assert (LUTS / "proxylessnas_mobile.yaml").is_file(), f"missing {LUTS} (../shared/data)"


def test_import_proxylessnas_pixel_table():
    t = import_proxylessnas(LUTS / "proxylessnas_mobile.yaml")
    # 72 operators: stem + 69 blocks + Conv_1 + Logits -> the last two make our one head entry
    assert len(t) == 71 and list(t.by_res) == [224]
    e = t.get("stem_i3_o32_k3_s2_r6@3x224x224", 224)
    assert e.ms == pytest.approx(4.083755600814664) and e.n == 982
    blk = t.get("mbconv_i16_o24_m96_k7_s2_r6@16x112x112", 224)  # expand ratio 6 -> 96 mid channels
    assert blk.ms == pytest.approx(22.104676829268296)
    assert blk.spread == pytest.approx(0.20440296570731653 ** 0.5)
    head = t.get("head_l1280_r6@320x7x7_n1000", 224)
    assert head.ms == pytest.approx(3.088623217922607 + 0.3096415478615071)
    assert head.source == ("Conv_1-input:7x7x320-output:7x7x1280", "Logits-input:7x7x1280-output:1000")
    assert t.get("stem_i3_o32_k3_s2_r6@3x224x224", 192) is None  # filed under 224 only


def test_import_ofa_note10_tables():
    paths = [LUTS / f"ofa_note10_{r}.yaml" for r in (160, 176, 192, 208, 224)]
    t = import_ofa(paths)
    assert sorted(t.by_res) == [160, 176, 192, 208, 224]
    # 96 operators per file: 91 blocks + stem + 4 head operators (one head entry)
    assert all(len(t.by_res[r]) == 93 for r in t.by_res)
    e = t.get("mbconv_i136_o136_m408_k3_s1_se104h_hs_skip@136x14x14", 224)
    assert e.ms == pytest.approx(1.6344455445544555) and e.n == 101
    # the same 7x7 layer was measured in both the 208 and the 224 table: each keeps its own value
    k = "head_l1152_h1536_nobias_hs@192x7x7_n1000"
    assert t.get(k, 208).ms != t.get(k, 224).ms
    raw = yaml.safe_load((LUTS / "ofa_note10_224.yaml").read_text())
    assert t.get(k, 224).ms == pytest.approx(sum(raw[s]["mean"] for s in t.get(k, 224).source))


@pytest.mark.parametrize("res", [160, 176, 192, 208, 224])
def test_note10_ofa_net_is_plain_sum_of_its_entries(res):
    model = latency_models.load("note10-cpu")
    raw = yaml.safe_load((LUTS / f"ofa_note10_{res}.yaml").read_text())
    rng = random.Random(res)
    for arch in [random_ofa_arch(rng) for _ in range(5)] + [ofa_w12_arch([4] * 5, [7] * 20, [6] * 20)]:
        expected = sum(raw[k]["mean"] for k in ofa_keys(arch, res))  # KeyError = key mapping broken
        assert model.predict(arch, res) == pytest.approx(expected, rel=1e-12)
        assert set(model.source_of(arch, res)) == {"table"}
        assert sum(ms for _, ms in model.breakdown(arch, res)) == pytest.approx(expected, rel=1e-12)


def test_note10_predicts_off_table_archs_close_to_table():
    model = latency_models.load("note10-cpu")
    arch = ofa_w12_arch([3] * 5, [5] * 15, [4] * 15)
    exact = model.predict(arch, 192)
    other = model.predict(arch, 200)  # no table at 200: predictor only
    assert set(model.source_of(arch, 200)) == {"predictor"}
    assert exact < other < model.predict(arch, 208) * 1.1
    err = model.error["networks_predictor_only_200_random_ofa_at_192"]
    assert err["mape_pct"] < 5 and err["within_10pct"] >= 0.95


def test_predict_many_matches_predict():
    model = latency_models.load("note10-cpu")
    rng = random.Random(0)
    archs = [random_ofa_arch(rng) for _ in range(20)]
    many = model.predict_many(archs, 176)
    assert many.shape == (20,)
    assert list(many) == pytest.approx([model.predict(a, 176) for a in archs])


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError) as exc:
        latency_models.load("iphone-npu")
    msg = str(exc.value)
    assert "iphone-npu" in msg and "note10-cpu" in msg and "\n" not in msg


def _target_dict():
    return json.loads((latency_models.TARGET_DIR / "note10-cpu.json").read_text())


def test_corrupt_and_foreign_target_files(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"format": "edgenas-latency-target", "vers')
    with pytest.raises(TargetError, match="broken.json: corrupt target file"):
        latency_models.load(str(p))
    d = _target_dict()
    d["version"] = 99
    p.write_text(json.dumps(d))
    with pytest.raises(TargetError, match="version 99 is not supported; allowed: 1"):
        latency_models.load(str(p))
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(TargetError, match="is not a latency target"):
        latency_models.load(str(p))


def test_table_key_that_does_not_parse(tmp_path):
    d = _target_dict()
    d["table"]["224"]["expanded_conv-input:7x7x1"] = {"ms": 1.0}
    p = tmp_path / "badkey.json"
    p.write_text(json.dumps(d))
    with pytest.raises(TargetError) as exc:
        latency_models.load(str(p))
    assert "table.224" in str(exc.value) and "'expanded_conv-input:7x7x1' does not parse" in str(exc.value)
    y = tmp_path / "lut.yaml"
    y.write_text("expanded_conv-input:7x7x1-output:7x7x2-kernal:3:\n  mean: 1.0\n  std: 0.1\n")
    with pytest.raises(TargetError, match="lut.yaml: table key .*unknown field 'kernal'"):
        import_yaml(y, OFA)


def test_block_type_the_target_cannot_price(tmp_path):
    d = _target_dict()
    coefs = d["predictor"]["coefs"]
    d["predictor"]["coefs"] = {"mbconv": coefs["mbconv"]}  # no generic regressor, no stem/head ones
    p = tmp_path / "mbconv-only.json"
    p.write_text(json.dumps(d))
    model = latency_models.load(str(p))
    arch = Arch(Stem(24, 3, 2, "hswish"), (BlockSpec("dwsep", 24, 32, kernel=3, stride=2),),
                Head(last_ch=1152, hidden_ch=1536, act="hswish"))
    with pytest.raises(TargetError) as exc:
        model.predict(arch, 224)
    msg = str(exc.value)
    assert "cannot price block type 'dwsep' at arch.blocks[0]" in msg and "mbconv" in msg


def test_ofa_specialized_nets_use_the_importers_keys():
    """Blocks of real OFA MobileNetV3 subnets (search_space.importers.from_net_config) get the same
    keys as the Note10 importer gives the OFA operators that describe them."""
    from search_space.arch import signatures
    from search_space.importers import from_net_config
    from latency_models.table import _block_sig, _parse_foreign_key

    nets = 0
    for path in sorted((DATA / "ofa_specialized").glob("*.net.config")):
        arch = from_net_config(path)
        if arch.stem.act != "hswish":  # ProxylessNAS-style subnets (relu6)
            continue
        nets += 1
        sigs = signatures(arch, 224)
        for sig, key in zip(sigs[1:-1], ofa_keys(arch, 224)[1:-4]):
            assert _block_sig(_parse_foreign_key(key, "test")[1], OFA).key == sig.key
        assert "nobias" in sigs[-1].key  # OFA's feature_mix_layer has no bias
    assert nets >= 10
