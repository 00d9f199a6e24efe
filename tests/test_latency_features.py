"""Latency features: the same signatures and MACs as the analytic profiler; the fast path of
predict agrees with the per-layer breakdown for every zoo network and space."""
from __future__ import annotations

import random

import numpy as np
import pytest

import latency_models
from latency_models.features import FEATURES, layer_features, total_macs
from search_space import zoo
from search_space.arch import signatures
from search_space.profile import layer_cost, profile
from search_space.space import load_space, space_names


def _archs():
    out = [zoo.get(n, w) for n in zoo.names() for w in zoo.widths(n)]
    for name in space_names():
        rng = random.Random(0)
        out += [load_space(name).sample(rng) for _ in range(5)]
    return out


def test_feature_macs_equal_the_analytic_count():
    for arch in _archs():
        for sig in signatures(arch, 224):
            assert total_macs(sig) == pytest.approx(layer_cost(sig)[1], rel=0.01), sig.key
    a = zoo.get("mobilenet_v2")
    assert sum(total_macs(s) for s in signatures(a, 224)) == pytest.approx(300_774_272, rel=1e-9)
    assert profile(a)["macs"] == 300_774_272


def test_mbconv_split():
    sig = signatures(zoo.get("mobilenet_v2"), 224)[3]  # 24 -> 24, mid 144, k3, 56x56, residual
    f = dict(zip(FEATURES, layer_features(sig)))
    assert sig.key == "mbconv_i24_o24_m144_k3_s1_r6_skip@24x56x56"
    assert f["pw_macs"] == 2 * 24 * 144 * 56 * 56
    assert f["dw3_macs"] == 144 * 9 * 56 * 56 and f["dw5_macs"] == f["dw7_macs"] == f["dws2_macs"] == 0
    assert f["se_macs"] == 0 and f["hswish_elems"] == 0 and f["ops"] == 3
    assert f["in_bytes"] == f["out_bytes"] == 4 * 24 * 56 * 56


def test_head_dropout_does_not_change_the_key():
    """Dropout is an identity at inference: heads differing only in it share one key, and the
    shipped targets (whose tables hold heads keyed without dropout) price them from the table."""
    from dataclasses import replace

    import latency_models

    a = zoo.get("mobilenet_v3_large")
    head = signatures(a, 224)[-1]
    plain = signatures(replace(a, head=replace(a.head, dropout=0.0)), 224)[-1]
    assert a.head.dropout > 0 and "_d0" not in head.key and head.key == plain.key
    assert "_d0" in a.to_string()  # the arch string still carries it
    for target in ("local-cpu.json",):  # measured every zoo layer
        m = latency_models.load(target)
        assert m.source_of(a, 224)[-1] == "table", target
    for target in latency_models.targets():  # no table key anywhere still carries a dropout
        m = latency_models.load(target)
        assert not [k for _, k, _ in m.table.items() if k.startswith("head") and "_d0." in k], target


@pytest.mark.parametrize("target", ["pixel-cpu", "note10-cpu"])
def test_fast_path_equals_breakdown(target):
    model = latency_models.load(target)
    archs = _archs()
    many = model.predict_many(archs, 224)
    for arch, p in zip(archs, many):
        rows = model.breakdown(arch, 224)
        assert len(rows) == len(arch.blocks) + 2 + (1 if model.overhead_ms else 0)
        assert sum(ms for _, ms in rows) == pytest.approx(p, rel=1e-9)
        assert model.predict(arch, 224) == pytest.approx(p, rel=1e-9)
    assert np.all(many > 0)


def test_unaligned_depthwise_marks_channel_counts_not_a_multiple_of_four():
    """``dwu4_macs``: depthwise MACs on channel counts ONNX Runtime's NCHWc depthwise kernel does not
    take (not a multiple of 4: 5-13x slower per MAC here, ``benchmarks/ort_alignment.py``); 644 and 648
    channels run the fast kernel, 646 and 650 do not.  The numeric path agrees with the per-layer one."""
    from search_space.arch import Arch
    from latency_models.features import features_many

    keys = {}
    for mid in (640, 644, 646, 648, 650):
        a = Arch.from_string(f"stem_i3_o32_k3_s2_re-mbconv_i32_o32_m{mid}_k7_s1_re_skip-head_l1280_re")
        sig = signatures(a, 224)[1]
        f = dict(zip(FEATURES, layer_features(sig)))
        keys[mid] = f["dwu4_macs"]
        assert f["dw7_macs"] == mid * 49 * 112 * 112
        assert total_macs(sig) == pytest.approx(layer_cost(sig)[1], rel=1e-9)  # the extra term is not a MAC count
        assert np.array_equal(features_many([sig])[0], layer_features(sig))
    assert keys == {640: 0, 644: 0, 646: 646 * 49 * 112 * 112, 648: 0, 650: 650 * 49 * 112 * 112}


def test_pw_align_16_flags_1x1_convs_on_channels_not_a_multiple_of_16():
    """``meta.pw_align`` 16 (ONNX Runtime's NCHWc block with AVX-512): a 1x1 conv on 24 or 40 channels (multiples of
    8, not of 16) gets the pwu_macs term, as one on 20 channels does under both; 32 and 48 under neither.  The numeric
    path (``features_cols``, what predict_many prices with) agrees with the per-layer one for every space's layers."""
    from search_space.arch import Arch
    from latency_models.features import features_many

    got = {}
    for mid in (20, 24, 32, 40, 48):
        sig = signatures(Arch.from_string(f"stem_i3_o32_k3_s2_re-mbconv_i32_o32_m{mid}_k3_s1_re_skip-head_l1280_re"),
                         224)[1]
        f8, f16 = (dict(zip(FEATURES, layer_features(sig, a))) for a in (8, 16))
        got[mid] = (f8["pwu_macs"], f16["pwu_macs"])
        assert {k: v for k, v in f8.items() if k != "pwu_macs"} == {k: v for k, v in f16.items() if k != "pwu_macs"}
    expand_project = 2 * 32 * 112 * 112
    assert got == {20: (20 * expand_project,) * 2, 24: (0, 24 * expand_project), 32: (0, 0),
                   40: (0, 40 * expand_project), 48: (0, 0)}
    sigs = [s for a in _archs() for s in signatures(a, 224)]
    for align in (8, 16):
        assert np.array_equal(features_many(sigs, align), np.stack([layer_features(s, align) for s in sigs]))
    assert not np.array_equal(features_many(sigs, 8), features_many(sigs, 16))


def _fresh(model):
    from latency_models.model import LatencyModel

    return LatencyModel.from_file(model.path)


def _with_meta(tmp_path, src, name: str, **meta):
    import json

    from latency_models.model import LatencyModel

    d = json.loads(open(src.path).read())
    d["meta"].update(meta)
    (tmp_path / name).write_text(json.dumps(d))
    return lambda: LatencyModel.from_file(tmp_path / name)


def test_a_target_prices_with_its_pw_align_and_refuses_others(tmp_path, monkeypatch):
    """A target file's ``meta.pw_align`` decides its features on every pricing path: a layer the table lacks costs
    its regressor on the layer's features under that align; predict, predict_many (layer codes) and the per-layer walk
    agree, each on a freshly loaded model.  Every shipped target made before it existed prices with 8; the shipped
    Xeon target (session 13) with 16.  A value outside 8 / 16 is one line naming the file and the field."""
    from search_space.errors import TargetError

    src = latency_models.load("local-cpu.json")
    assert src.pw_align == 8 and "pw_align" not in src.meta
    assert latency_models.load("local-cpu-xeon.json").pw_align == 16
    for t in ("pixel-cpu", "note10-cpu", "local-tflite"):
        assert "pw_align" not in latency_models.load(t).meta and latency_models.load(t).pw_align == 8, t
    new16 = _with_meta(tmp_path, src, "a16.json", pw_align=16)
    archs = [load_space("mobile-unified").sample(random.Random(3)) for _ in range(20)]
    p16 = new16().predict_many(archs)
    one = new16()
    assert one.pw_align == 16 and np.array_equal(p16, np.array([one.predict(a) for a in archs]))
    walk = new16()
    monkeypatch.setattr(walk, "_codes_np", lambda *a: None)
    monkeypatch.setattr(walk, "_codes_walk", lambda *a: None)
    assert np.array_equal(walk.predict_many(archs), p16) and not walk._cache and walk._wcache
    assert not np.allclose(p16, src.predict_many(archs))          # its pwu coefficient sees other layers
    # the network term's inputs: the layers' features summed under the target's align; layers the table lacks are
    # priced by the regressor on those features, so an arch with a layer flagged only at 16 costs more or less
    from latency_models.features import N_FEATURES

    m, m8 = new16(), _fresh(src)
    k = FEATURES.index("pwu_macs")
    arch = next(a for a in archs if any(x.key not in m.table.entries and layer_features(x, 16)[k] > layer_features(x, 8)[k]
                                        for x in signatures(a, 224)))
    V16, V8 = m.network_inputs([arch])[0], m8.network_inputs([arch])[0]
    sigs = signatures(arch, 224)
    np.testing.assert_allclose(V16[-N_FEATURES:], np.sum([layer_features(x, 16) for x in sigs], axis=0), rtol=1e-12)
    np.testing.assert_allclose(V8[-N_FEATURES:], np.sum([layer_features(x, 8) for x in sigs], axis=0), rtol=1e-12)
    assert V16[-N_FEATURES + k] > V8[-N_FEATURES + k] and V16[0] != V8[0]
    for bad in (12, "16", True):
        f = _with_meta(tmp_path, src, "bad.json", pw_align=bad)
        with pytest.raises(TargetError, match=r"bad\.json: meta\.pw_align: got .*; allowed: 8, 16$"):
            f()
