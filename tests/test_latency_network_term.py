"""The network-level term (fitted on whole networks measured end-to-end), the vectorized layer
features and the one pricing path behind predict / predict_many / breakdown."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import latency_models
from latency_models import build, measure_nets
from latency_models.features import FEATURES, N_FEATURES, features_many, layer_features
from latency_models.fitting import error_stats
from latency_models.model import LatencyModel
from latency_models.predictor import NetworkTerm
from search_space import zoo
from search_space.arch import Arch, signatures
from search_space.errors import TargetError
from search_space.space import load_space, space_names

REPO = Path(__file__).resolve().parents[1]
NETS = REPO / "latency_models" / "targets" / "measurements" / "local-cpu.networks-quiet.jsonl"


def _fresh_archs(n_per_space=40, seed=7):
    out = []
    for name in space_names():
        rng = random.Random(seed)
        out += [load_space(name).sample(rng) for _ in range(n_per_space)]
    return out + [zoo.get(n) for n in zoo.names()]


def test_features_many_equal_layer_features_exactly():
    """Every block family, stems and heads, odd resolutions and a 10-class head: the numpy path
    gives layer_features' numbers bit for bit (the regressors were fitted on those)."""
    sigs = []
    for i, a in enumerate(_fresh_archs(25, seed=3)):
        sigs += signatures(a, (224, 160, 193, (192, 256))[i % 4], 10 if i % 5 == 0 else 1000)
    kinds = {s.kind for s in sigs}
    assert {"stem", "head", "mbconv", "dwsep", "sandglass", "shufflev2", "fire", "xception", "maxpool", "conv",
            "shufflev1"} <= kinds
    fast = features_many(sigs)
    slow = np.stack([layer_features(s) for s in sigs])
    assert fast.shape == (len(sigs), N_FEATURES)
    bad = np.flatnonzero(~np.all(fast == slow, axis=1))
    assert not len(bad), [sigs[i].key for i in bad[:3]]
    mv2 = features_many(signatures(zoo.get("mobilenet_v2"), 224))[3]
    assert dict(zip(FEATURES, mv2))["pw_macs"] == 2 * 24 * 144 * 56 * 56


@pytest.mark.parametrize("target", latency_models.targets())
def test_predict_equals_predict_many_exactly(target):
    """predict one by one on a fresh model, predict_many in one batch and in reverse on two more
    fresh models: the same floats, whatever else shares the batch or was priced before."""
    archs = _fresh_archs(10)
    path = latency_models.target_path(target)
    one, many, rev = (LatencyModel.from_file(path) for _ in range(3))
    for res in (224, 160):
        a = np.array([one.predict(x, res) for x in archs])
        b = many.predict_many(archs, res)
        c = rev.predict_many(archs[::-1], res)[::-1]
        assert np.array_equal(a, b) and np.array_equal(a, c)
        assert np.array_equal(many.predict_many(archs, res), b)  # cached: the same again
    assert np.all(a > 0)


def test_local_cpu_carries_a_network_term_that_reproduces_its_fit():
    """The shipped local-cpu prices networks through the network term fitted on the committed
    whole-network measurements; predicting those networks again gives the recorded in-sample error
    and cross-validation says the term beats the plain layer sum."""
    m = latency_models.load("local-cpu.json")
    assert m.term is not None and m.term.fitted_on["networks"] >= 200
    assert m.term.fitted_on["from"] == "latency_models/targets/measurements/local-cpu.networks-quiet.jsonl"
    assert m.scale == 1.0 and m.overhead_ms == 0.0 and not m.predictor.net_coef.any()
    archs, ms, _ = build.read_networks(NETS)
    rec = m.error["network_term"]
    assert error_stats(m.predict_many(archs), ms) == rec["fitted"]
    cv = rec["cross_validation"]
    chosen = cv[cv["chosen"]]
    # against the plain sum priced the way the CV priced its held-out networks (cross-fitted layers
    # when the term was chosen so, as a fresh arch's layers are)
    plain = cv.get("plain layer sum, cross-fitted layers", cv["plain layer sum (no term)"])
    assert chosen["mape_pct"] < plain["mape_pct"] - 2.0 and chosen["within_10pct"] > plain["within_10pct"] + 0.1
    assert (m.term.fitted_on.get("cv_held_out_layers") == "cross-fitted") == bool(m.meta.get("network_term_crossfit"))
    assert chosen["spearman"] >= 0.99


def test_breakdown_with_a_network_term_sums_to_predict():
    m = latency_models.load("local-cpu.json")
    for name in ("mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2"):
        a = zoo.get(name)
        rows = m.breakdown(a)
        assert [k for k, _ in rows] == [s.key for s in signatures(a, 224)]
        assert sum(ms for _, ms in rows) == pytest.approx(m.predict(a), rel=1e-12)


def test_network_term_fit_recovers_known_scales():
    """Networks made of layers whose in-network cost is known (per-kind scales, weight-bytes term,
    overhead): the fit finds them and a JSON round trip keeps the predictions."""
    kinds = ["dwsep", "mbconv", "stem", "head"]
    term = NetworkTerm.identity(kinds)
    rng = np.random.default_rng(0)
    V = []
    for _ in range(120):
        n = rng.integers(8, 30)
        ks = rng.choice(kinds + ["fire"], size=n)
        cost = rng.uniform(0.05, 2.0, size=n)
        X = np.abs(rng.normal(1e6, 5e5, size=(n, N_FEATURES)))
        V.append(term.layer_vectors(list(ks), cost, X).sum(0))
    V = np.array(V)
    true_scale = np.array([0.9, 1.2, 1.0, 1.1, 1.3])  # dwsep, mbconv, stem, head, other (fire)
    wb = FEATURES.index("weight_bytes")
    measured = V[:, 1:6] @ true_scale + 0.02 * V[:, 6 + wb] * 1e-6 + 0.5
    fit = NetworkTerm.fit(kinds, V, measured, by_kind=True, residual="none", shrink=1e-6)
    np.testing.assert_allclose(fit.kind_scale, true_scale, rtol=0.02)
    assert fit.overhead_ms == pytest.approx(0.5, rel=0.1)
    np.testing.assert_allclose(fit.predict(V), measured, rtol=0.01)
    back = NetworkTerm.from_dict(json.loads(json.dumps(fit.to_dict())), "t")
    np.testing.assert_allclose(back.predict(V), fit.predict(V), rtol=1e-10)
    trees = NetworkTerm.fit(kinds, V, measured * np.exp(0.05 * np.sin(V[:, 0])), residual="trees", trees=20)
    back = NetworkTerm.from_dict(json.loads(json.dumps(trees.to_dict())), "t")
    np.testing.assert_allclose(back.predict(V), trees.predict(V), rtol=1e-8)


@pytest.mark.parametrize("field,value,message", [
    ("kind_scale", [-1.0], "network_term.kind_scale: got [-1.0]; allowed: 12 finite non-negative numbers"),
    ("intercept", "x", "network_term.intercept: got 'x'; allowed: a finite number"),
    ("kind", "mlp", "network_term.kind: got 'mlp'; allowed: network-term"),
])
def test_corrupt_network_term_is_one_line(tmp_path, field, value, message):
    d = json.loads(latency_models.target_path("local-cpu.json").read_text())
    assert len(d["predictor"]["network_term"]["kinds"]) == 11  # + "other": 12 in-network scales
    d["predictor"]["network_term"][field] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(TargetError, match="^" + str(bad).replace(".", r"\.") + r"\.predictor\.") as e:
        LatencyModel.from_file(bad)
    assert message in str(e.value) and "\n" not in str(e.value)
    if field != "kind_scale":
        return  # one CLI run is enough: the CLIs print the same one line
    r = subprocess.run([sys.executable, "-m", "latency_models.validate", "--target", str(bad), "--archs", "0",
                        "--no-zoo", "--png", str(tmp_path / "x.png")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr


def test_measure_nets_file_resumes_after_a_torn_line(tmp_path, capsys):
    path = tmp_path / "n.jsonl"
    row = {"space": "mobile-unified", "seed": 7000, "index": 0, "arch": zoo.get("mobilenet_v2").to_string(),
           "resolution": 224, "rel": 7.5, "ref_ms": 1.0, "ms": 7.5}
    path.write_text(json.dumps(row) + "\n" + json.dumps(row)[:40])  # killed mid-write
    assert measure_nets.read_rows(path) == [row]
    archs, ms, _ = build.read_networks(path)
    assert archs == [zoo.get("mobilenet_v2")] and ms.tolist() == [7.5]
    assert build.read_networks(path, ref_ms=2.0)[1].tolist() == [15.0]
    assert measure_nets.main(["--seed", "1001", "--out", str(path)]) != 0
    assert "--seed: got 1001; allowed: any integer but 0, 1 (build) and 1000-2999 (validate samples with its --seed + 1000)" in capsys.readouterr().err
    path.write_text("{]\n" + json.dumps(row) + "\n")
    with pytest.raises(TargetError, match="n.jsonl:1: not a JSON line"):
        measure_nets.read_rows(path)
    # one runtime per file: rows of another backend or thread count are refused, not mixed
    other = {**row, "arch": zoo.get("mobilenet_v3_small").to_string(), "backend": "torch", "threads": 1}
    path.write_text(json.dumps({**row, "backend": "onnxruntime", "threads": 1}) + "\n" + json.dumps(other) + "\n")
    with pytest.raises(TargetError, match=r"measurements of onnxruntime x 1 thread\(s\), torch x 1 thread\(s\); "
                                          r"allowed: one backend and thread count per file"):
        build.read_networks(path)
    path.write_text(json.dumps({**row, "backend": "onnxruntime", "threads": 1}) + "\n")
    with pytest.raises(TargetError, match=r"allowed: torch x 1 thread\(s\) only per file"):
        measure_nets.measure(path, "mobile-unified", 1, 7000, backend="torch")
    # --networks without --refit, and a network term from fewer networks than the CV folds: one line
    assert build.main(["--target", "local-cpu", "--networks", str(path)]) != 0
    assert "--networks " + str(path) + ": only with --refit" in capsys.readouterr().err
    model = latency_models.load("local-cpu.json")
    with pytest.raises(TargetError, match="1 measured networks at 224; allowed: at least 5"):
        build.fit_network_term(model, *build.read_networks(path)[:2], str(path), log=lambda m: None)


def test_networks_from_several_files(tmp_path, capsys):
    """``--networks a,b``: the term's networks are both files' (in order, spaces around commas allowed),
    the meta records the list; an empty list, a missing file, a file named twice or a network measured
    in two files is one line naming it (copies would sit on both sides of the term's cross-validation)."""
    rows = [json.loads(x) for x in NETS.read_text().splitlines()[:12]]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in rows[:7]))
    b.write_text("".join(json.dumps(r) + "\n" for r in rows[7:]))
    archs, ms, where = build.read_networks_files(f"{a} , {b}")
    assert [x.to_string() for x in archs] == [r["arch"] for r in rows] and ms.tolist() == [r["ms"] for r in rows]
    assert where == f"{a},{b}"
    for spec, msg in ((",", "--networks: empty; allowed: one or more"),
                      (f"{a},{tmp_path / 'nope.jsonl'}", "nope.jsonl does not exist; allowed: latency_models.measure_nets files"),
                      (f"{a},{a}", "a.jsonl is named twice; allowed: each file once")):
        with pytest.raises(TargetError, match=msg):
            build.read_networks_files(spec)
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps(rows[3]) + "\n")
    with pytest.raises(TargetError, match=r"is measured in .*a.jsonl and again in .*c.jsonl; allowed: each network in one file"):
        build.read_networks_files(f"{a},{c}")
    # through the CLI: --networks "" is an error, not "no network term"
    tfl = build.REPO / "latency_models" / "targets" / "local-tflite.json"
    assert build.main(["--refit", str(tfl), "--networks", "", "--out", str(tmp_path / "x.json")]) == 2
    assert "--networks: empty" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_batch_that_cannot_be_priced_leaves_nothing_behind(tmp_path):
    """A block type without a regressor fails the whole batch with one line naming it; the layers
    of that batch are not left half-priced: the model prices the other archs afterwards as a fresh
    model does."""
    d = json.loads(latency_models.target_path("local-cpu.json").read_text())
    d["predictor"]["coefs"] = {k: v for k, v in d["predictor"]["coefs"].items() if k not in ("dwsep", "generic")}
    path = tmp_path / "no-dwsep.json"
    path.write_text(json.dumps(d))
    m, ref = LatencyModel.from_file(path), LatencyModel.from_file(path)
    good = [a for a in _fresh_archs(6) if not any(b.type == "dwsep" for b in a.blocks)
            and all(b.type in d["predictor"]["coefs"] for b in a.blocks)]
    # an arch whose only block type without a regressor is dwsep, at widths the table lacks (which of
    # several missing types a batch reports first follows the specs' creation order in the process)
    bad = zoo.get("mobilenet_v1", 0.75)
    assert {b.type for b in bad.blocks} == {"dwsep"}
    with pytest.raises(TargetError, match=r"cannot price block type 'dwsep' at arch\.blocks\[\d+\]") as e:
        m.predict_many(good[:5] + [bad])
    assert "\n" not in str(e.value) and m._n == 0 and not m._cache
    assert len(good) >= 10 and np.array_equal(m.predict_many(good), ref.predict_many(good))


def test_layer_codes_and_the_per_layer_walk_price_alike(monkeypatch):
    """The two ways a batch finds its layers' cached costs (layer codes from the specs' intern ids,
    computed with numpy or in Python for a few archs; and the per-layer walk on field values kept
    for specs that have no id) give the same floats, on every space and zoo net, at odd and
    non-square resolutions."""
    archs = _fresh_archs(8, seed=5)
    for target in ("local-cpu.json", "note10-cpu"):
        path = latency_models.target_path(target)
        for res in (224, 193, (160, 224)):
            codes, walk = LatencyModel.from_file(path), LatencyModel.from_file(path)
            monkeypatch.setattr(walk, "_codes_np", lambda *a: None)
            monkeypatch.setattr(walk, "_codes_walk", lambda *a: None)
            a = codes.predict_many(archs, res)
            b = walk.predict_many(archs, res)
            assert np.array_equal(a, b), (target, res)
            assert codes._cache and not walk._cache and walk._wcache
            assert np.array_equal([codes.predict(x, res) for x in archs[::9]], a[::9])


def test_specs_past_the_intern_limit_take_the_walk(monkeypatch):
    """A block spec created after the intern table is full gets id -1; an arch holding one is priced
    by the per-layer walk, to the same floats."""
    from search_space import arch as A

    archs = _fresh_archs(4, seed=9)
    ref = LatencyModel.from_file(latency_models.target_path("pixel-cpu")).predict_many(archs)
    texts = [a.to_string() for a in archs]
    monkeypatch.setattr(A.BLOCKS, "limit", len(A.BLOCKS))
    again = [Arch.from_string(t) for t in texts]
    fresh = A.BlockSpec("mbconv", 16, 24, mid_ch=24 * 7 + 5, kernel=3, stride=2)  # never met before
    assert fresh._iid == -1 and again[0].blocks[0]._iid >= 0
    blk = A.BlockSpec("mbconv", again[0].blocks[0].in_ch, again[0].blocks[0].out_ch, mid_ch=4096 + 3,
                      kernel=again[0].blocks[0].kernel, stride=again[0].blocks[0].stride)
    odd = A.Arch(again[0].stem, (blk,) + again[0].blocks[1:], again[0].head)
    m = LatencyModel.from_file(latency_models.target_path("pixel-cpu"))
    out = m.predict_many(again + [odd])
    assert np.array_equal(out[:-1], ref) and out[-1] > 0 and m._wcache
    monkeypatch.undo()
    back = Arch.from_string(odd.to_string())
    assert back.blocks[0]._iid >= 0
    assert LatencyModel.from_file(latency_models.target_path("pixel-cpu")).predict(back) == out[-1]


def test_intern_ids_follow_equality_and_survive_pickling():
    """Equal specs share an intern id (and the arch's equality and hashing ignore it); a pickled or
    copied spec gets the id of its fields in the loading process, not the stored one."""
    import copy
    import pickle

    from search_space import arch as A

    a = zoo.get("mobilenet_v3_large")
    b = Arch.from_string(a.to_string())
    assert a == b and hash(a) == hash(b) and a.blocks[3] is not b.blocks[3]
    assert [x._iid for x in a.blocks] == [x._iid for x in b.blocks]
    assert a.stem._iid == b.stem._iid and a.head._iid == b.head._iid
    assert len({x._iid for x in a.blocks}) == len(set(a.blocks))
    row = dict(zip(A.ROW_FIELDS, A.BLOCKS.rows[a.blocks[3]._iid * len(A.ROW_FIELDS):][:len(A.ROW_FIELDS)]))
    blk = a.blocks[3]
    assert A.TYPE_NAMES[row["type"]] == blk.type and row["mid_ch"] == blk.mid_ch and row["se_ch"] == blk.se_ch
    assert A.ACTIVATIONS[row["act"]] == blk.act and (row["sh"], row["sw"]) == (blk.stride, blk.stride)
    data = pickle.dumps(a)
    assert b"_iid" not in data and b"_ids" not in data
    for c in (pickle.loads(data), copy.deepcopy(a), copy.copy(a)):
        assert c == a and [x._iid for x in c.blocks] == [x._iid for x in a.blocks] and c.head._iid == a.head._iid
    spec = a.blocks[5]
    state = spec.__getstate__()
    assert "_iid" not in state
    other = A.BlockSpec.__new__(A.BlockSpec)
    other.__setstate__({**state, "_iid": 10 ** 9})  # a stale id from another process is replaced
    assert other._iid == spec._iid and other == spec


def test_a_pickled_model_prices_alike():
    """A model sent to another process travels without its caches (their layer codes hold this
    process's intern ids) and prices the same floats."""
    import pickle

    archs = _fresh_archs(3, seed=4)
    m = latency_models.load("local-cpu.json")
    a = m.predict_many(archs)
    back = pickle.loads(pickle.dumps(m))
    assert back._n == 0 and not back._cache and back._tblocks
    assert np.array_equal(back.predict_many(archs), a)


def test_pricing_in_steps_gives_the_same_floats():
    """New layers are priced CHUNK rows at a time; any step size gives the same floats (each row's
    cost is computed on its own), for every target."""
    archs = _fresh_archs(4, seed=6)
    for target in latency_models.targets():
        path = latency_models.target_path(target)
        whole, steps = LatencyModel.from_file(path), LatencyModel.from_file(path)
        steps.CHUNK = 7
        assert np.array_equal(whole.predict_many(archs, 192), steps.predict_many(archs, 192)), target


def test_layer_sums_are_reduceats_floats():
    """The network term's per-network layer sums (numpy's pairwise order, all networks of one length
    at once) equal np.add.reduceat's to the last bit, for segment lengths 1..200 (longer ones go to
    reduceat itself): the term's trees would tell a different rounding."""
    m = latency_models.load("local-cpu.json")
    m.predict_many(_fresh_archs(10, seed=8))
    rng = np.random.default_rng(0)
    lens = np.concatenate([np.arange(1, 201), rng.integers(1, 60, 300)])
    rows = rng.integers(0, m._n, int(lens.sum()))
    starts = np.cumsum(lens) - lens
    assert np.array_equal(m._layer_sums(rows, starts), np.add.reduceat(m._V[rows], starts, axis=0))


def test_crossfit_prices_held_out_networks_without_their_layers(monkeypatch):
    """``--crossfit``: a held-out network is priced as a fresh arch is -- its layers' table entries
    are not used and the regressor is refitted without them -- and the refit chooses among terms
    fitted on table-priced and on cross-fitted layer costs."""
    import copy

    from latency_models.predictor import Predictor
    from latency_models.table import Entry

    model = latency_models.load("local-cpu.json")
    first = build.partial_paths(model.meta["network_term_from"], "--networks")[0]
    rows = [json.loads(x) for x in first.read_text().splitlines()[:15]]
    archs, ms = [Arch.from_string(r["arch"]) for r in rows], np.array([r["ms"] for r in rows])
    p = Predictor.from_dict(json.loads(json.dumps(model.predictor.to_dict())), "t")
    p.scale, p.kind_scale, p.net_coef, p.overhead_ms = 1.0, {}, np.zeros_like(p.net_coef), 0.0
    kinds = sorted(set(p.fitted_on.get("layers", {})) | {"stem", "head"})
    p.network_term = NetworkTerm.identity(kinds)
    plain = LatencyModel(model.name, model.table, p, model.meta).network_inputs(archs)
    # a table that also holds every layer of these networks, at 10x its price: priced from the table
    # the sums explode; cross-fitted (all of them held out) they are priced as before
    rigged = copy.deepcopy(model)
    for a in archs:
        for s, (_, ms_) in zip(signatures(a, 224), model.breakdown(a)):
            rigged.table.entries[s.key] = Entry(10 * ms_, 0.0, 1)
    assert (LatencyModel(model.name, rigged.table, p, model.meta).network_inputs(archs)[:, 0] > 5 * plain[:, 0]).all()
    Vx = build._crossfit_inputs(rigged, p, archs, 224, [(np.array([], int), np.arange(len(archs)))], 0)
    assert (np.abs(Vx[:, 0] / plain[:, 0] - 1) < 0.3).all()  # the regressor's prices, not the 10x entries
    out = build.fit_network_term(model, archs, ms, "t", crossfit=True, log=lambda m: None)
    cv = out.error["network_term"]["cross_validation"]
    assert "plain layer sum, cross-fitted layers" in cv and "per-kind scale + trees, fitted on cross-fitted layers" in cv
    assert cv["chosen"] in cv and out.term.fitted_on["layers"] in ("table", "cross-fitted")
    # the CV scores every candidate on the cross-fitted prices of its held-out networks
    real = build._crossfit_inputs
    monkeypatch.setattr(build, "_crossfit_inputs", lambda *a, **k: 2 * real(*a, **k))
    cv2 = build.fit_network_term(model, archs, ms, "t", crossfit=True, log=lambda m: None).error["network_term"]
    assert cv2["cross_validation"]["plain layer sum, cross-fitted layers"]["mape_pct"] > 60


def test_measure_nets_from_validation_writes_the_random_archs_at_their_own_time(tmp_path, capsys):
    """Saved validate measurements become measure_nets rows (random archs only, min over passes of
    the relative cost x the median reference ms, each naming its file), so a term can be fitted on
    them; the term's record then says its networks include validation archs."""
    a = zoo.get("mobilenet_v2").to_string()
    b = zoo.get("mobilenet_v3_small").to_string()
    rec = {"backend": "onnxruntime", "threads": 1, "resolution": 224, "space": "mobile-unified", "seed": 2099,
           "passes": 2, "load_average": [1.0, 1.1],
           "networks": [{"label": "mobile-unified#0", "arch": a, "rel": [10.0, 9.0], "ref_ms": [1.0, 1.2]},
                        {"label": "mobile-unified#1", "arch": b, "rel": [4.0, 4.4], "ref_ms": [1.1, 0.9]},
                        {"label": "mobilenet_v2", "arch": a, "rel": [9.5, 9.6], "ref_ms": [1.0, 1.0]}]}
    src = tmp_path / "v.json"
    src.write_text(json.dumps(rec))
    out = tmp_path / "n.jsonl"
    assert measure_nets.main(["--from-validation", str(src), "--out", str(out)]) == 0
    rows = measure_nets.read_rows(out)
    assert [r["index"] for r in rows] == [0, 1] and {r["from"] for r in rows} == {"v.json"}
    assert rows[0]["ms"] == pytest.approx(9.0 * 1.1) and rows[1]["ms"] == pytest.approx(4.0 * 1.0)
    archs, ms, _ = build.read_networks(out)
    assert [x.to_string() for x in archs] == [a, b] and ms.tolist() == pytest.approx([9.9, 4.0])
    assert build._has_validation_rows(str(out)) and not build._has_validation_rows(str(NETS))
    capsys.readouterr()
    assert measure_nets.main(["--from-validation", str(src), "--out", str(out)]) == 2  # never overwrites
    assert "exists; allowed: a new file with --from-validation" in capsys.readouterr().err
    src.write_text("{}")
    assert measure_nets.main(["--from-validation", str(src), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "not a latency_models.validate --save file" in capsys.readouterr().err
    bad = dict(rec, networks=[{"label": "mobile-unified#0", "arch": a, "ref_ms": [1.0]}])   # no rel
    src.write_text(json.dumps(bad))
    assert measure_nets.main(["--from-validation", str(src), "--out", str(tmp_path / "k.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network mobile-unified#0: field rel, ref_ms or arch missing or bad" in err
    zoo_only = dict(rec, networks=rec["networks"][2:])                                      # no random arch
    src.write_text(json.dumps(zoo_only))
    assert measure_nets.main(["--from-validation", str(src), "--out", str(tmp_path / "z.jsonl")]) == 2
    assert "no random archs" in capsys.readouterr().err and not (tmp_path / "z.jsonl").exists()


def test_validate_says_when_the_networks_ran_on_another_cpu(capsys):
    """A target measured on one CPU scored on networks measured on another: the scores say so (session
    9's seed-1014 set ran on an Intel Xeon, the target was built on an AMD EPYC)."""
    from latency_models import validate

    model = latency_models.load("local-cpu.json")
    device = str(model.meta["device"]).split(" (")[0]
    assert validate.other_cpu(model, device) is None
    line = validate.other_cpu(model, "Intel(R) Xeon(R) Processor")
    assert line and device in line and "Intel(R) Xeon(R) Processor" in line and "rebuild" in line
    rec = {"reference_alone_ms": 1.0, "resolution": 224, "passes": 1, "space": "mobile-unified",
           "machine": {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2},
           "networks": [{"label": "mobilenet_v2", "arch": zoo.get("mobilenet_v2").to_string(), "rel": [7.0],
                         "ref_ms": [1.0]}]}
    res = validate.score_networks(model, rec, None, quiet=False)
    assert res["other_cpu"] == {"target": model.meta["device"], "measured": "Intel(R) Xeon(R) Processor"}
    assert "warning: target local-cpu was measured on" in capsys.readouterr().out
    rec["machine"]["cpu"] = device
    assert "other_cpu" not in validate.score_networks(model, rec, None, quiet=True)


def test_validate_calibration_networks_set_one_scale_and_are_scored_nowhere(tmp_path, capsys):
    """Session 12: networks of a fixed seed measured in the same passes rescale every prediction by their
    median measured / predicted; they enter no figure.  On a real Xeon measurement (seed 1016, session 11):
    the first 10 random archs relabelled as calibration networks."""
    from latency_models import validate

    M = Path(latency_models.__file__).parent / "targets" / "measurements"
    rec = json.loads((M / "local-cpu-xeon.validation-s11-seed1016.json").read_text())
    model = latency_models.load("local-cpu-xeon.json")
    plain = validate.score_networks(model, rec, quiet=True)
    for i, n in enumerate(rec["networks"][:10]):
        n["label"] = f"calibration#{i}"
    res = validate.score_networks(model, rec, quiet=True)
    nets = rec["networks"]
    ref = validate._reference_ms(model)
    true = np.array([min(n["rel"]) * ref for n in nets])
    pred = model.predict_many([Arch.from_string(n["arch"]) for n in nets], 224)
    scale = float(np.median(true[:10] / pred[:10]))
    assert res["calibration"]["n"] == 10 and res["calibration"]["scale"] == pytest.approx(scale, abs=1e-4)
    assert res["random_archs"]["n"] == 90 and res["zoo"] == plain["zoo"]
    rand = slice(10, 100)
    assert res["random_archs_calibrated"] == validate.stats(pred[rand] * res["calibration"]["scale"], true[rand])
    assert res["random_archs"] == validate.stats(pred[rand], true[rand])
    assert not any(p["label"].startswith("calibration#") for p in res["per_network"])
    assert res["all"]["n"] == 90 + 21
    assert "calibration" not in plain and "random_archs_calibrated" not in plain
    # calibration networks are no training rows either (measure_nets --from-validation skips them)
    src, rows = tmp_path / "rec.json", tmp_path / "rows.jsonl"
    src.write_text(json.dumps(rec))
    assert measure_nets.main(["--from-validation", str(src), "--out", str(rows)]) == 0
    got = [json.loads(x) for x in rows.read_text().splitlines()]
    assert len(got) == 90 and not any(r["arch"] in {n["arch"] for n in nets[:10]} for r in got)
    # validating the calibration networks themselves is refused before anything is measured
    assert validate.main(["--target", "local-cpu-xeon.json", "--seed", str(validate.CALIBRATION_SEED - 1000),
                          "--calibrate", "2"]) == 2
    assert f"--seed: got {validate.CALIBRATION_SEED - 1000}; allowed: any seed but" in capsys.readouterr().err


def test_validate_measures_the_calibration_networks_among_the_others(tmp_path):
    from latency_models import validate

    space = load_space("proxylessnas")
    cal = validate.calibration_archs(space, 2)
    assert [a.to_string() for a in cal] == [a.to_string() for a in validate.calibration_archs(space, 2)]
    rec = validate.measure_networks("onnxruntime", 1, "proxylessnas", 2, 1001, rounds=1, zoo_nets=False,
                                    calibrate=2)
    labels = [n["label"] for n in rec["networks"]]
    assert labels == ["proxylessnas#0", "calibration#0", "proxylessnas#1", "calibration#1"]
    assert [n["arch"] for n in rec["networks"] if n["label"].startswith("calibration#")] == [a.to_string() for a in cal]
    assert rec["calibration"] == {"seed": validate.CALIBRATION_SEED, "n": 2}
    model = latency_models.load("local-cpu-xeon.json")
    res = validate.score_networks(model, rec, quiet=True)
    assert res["random_archs"]["n"] == 2 and res["calibration"]["n"] == 2 and res["calibration"]["scale"] > 0


def test_a_calibrated_target_scales_every_prediction(tmp_path):
    base = latency_models.load("local-cpu-xeon.json")
    d = json.loads(Path(base.path).read_text())
    d["meta"]["calibration"] = {"scale": 0.9}
    f = tmp_path / "cal.json"
    f.write_text(json.dumps(d))
    cal = latency_models.load(str(f))
    archs = [load_space("mobile-unified").sample(random.Random(i)) for i in range(20)] + [zoo.get("mobilenet_v2")]
    assert cal.calibration == 0.9 and base.calibration == 1.0
    np.testing.assert_allclose(cal.predict_many(archs), 0.9 * base.predict_many(archs), rtol=1e-12)
    assert cal.predict(archs[3]) == pytest.approx(0.9 * base.predict(archs[3]), rel=1e-12)
    assert sum(ms for _, ms in cal.breakdown(archs[3])) == pytest.approx(cal.predict(archs[3]), rel=1e-9)
    for (k, ms), (k0, ms0) in zip(cal.breakdown(archs[3]), base.breakdown(archs[3])):   # every row, not just the sum
        assert k == k0 and ms == pytest.approx(0.9 * ms0, rel=1e-9)
    # a target without a network term and with a per-network overhead: the overhead row is scaled too
    tfl = latency_models.load("local-tflite.json")
    assert tfl.term is None and tfl.overhead_ms > 0
    t = json.loads(Path(tfl.path).read_text())
    t["meta"]["calibration"] = {"scale": 1.25}
    g = tmp_path / "tfl.json"
    g.write_text(json.dumps(t))
    ctfl = latency_models.load(str(g))
    a = zoo.get("mobilenet_v2")
    rows, rows0 = ctfl.breakdown(a), tfl.breakdown(a)
    assert rows[-1] == ("network overhead", pytest.approx(1.25 * tfl.overhead_ms))
    assert [ms for _, ms in rows] == pytest.approx([1.25 * ms for _, ms in rows0], rel=1e-12)
    assert ctfl.predict(a) == pytest.approx(1.25 * tfl.predict(a), rel=1e-12)
    assert sum(ms for _, ms in rows) == pytest.approx(ctfl.predict(a), rel=1e-9)
    for bad in ("x", -1, 10, True, None):
        d["meta"]["calibration"] = {"scale": bad}
        f.write_text(json.dumps(d))
        with pytest.raises(TargetError, match=r"meta\.calibration\.scale: got .*; allowed: a number in \[0\.2, 5\]"):
            LatencyModel.from_file(f)


def test_calibrate_cli_measures_and_writes_a_calibrated_copy(tmp_path, capsys):
    from latency_models import calibrate

    out = tmp_path / "mine.json"
    argv = ["--target", "local-cpu-xeon.json", "--out", str(out), "--networks", "2", "--rounds", "1", "--passes", "1"]
    assert calibrate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "calibration of local-cpu" in printed and f"use it as --target {out}" in printed
    cal = latency_models.load(str(out))
    meta = cal.meta["calibration"]
    assert meta["n"] == 2 and meta["seed"] == 9000 and 0.2 <= meta["scale"] <= 5 and cal.calibration == meta["scale"]
    # the shipped Xeon target's network term was fitted on the build's time scale (session 13): so is its calibration
    assert meta["applied"] == "build_scale" and meta["scale"] == meta["scale_build_scale"]
    ratios = [m["measured_ms"] / m["predicted_ms"] for m in meta["networks"]]
    assert meta["scale"] == pytest.approx(float(np.median(ratios)), rel=1e-3)
    # session 9's Xeon target (now a candidate) was fitted on own times: its calibration is on own times
    own = tmp_path / "own.json"
    assert calibrate.main(["--target", str(REPO / "latency_models/targets/candidates/local-cpu-xeon-s9.json"), "--out", str(own),
                           "--networks", "2", "--rounds", "1", "--passes", "1"]) == 0
    capsys.readouterr()
    m_own = latency_models.load(str(own)).meta["calibration"]
    assert m_own["applied"] == "own_time" and m_own["scale"] == m_own["scale_own_time"]
    assert m_own["scale"] == pytest.approx(float(np.median([m["measured_own_ms"] / m["predicted_ms"]
                                                            for m in m_own["networks"]])), rel=1e-3)
    assert meta["how"] == "python -m latency_models.calibrate " + " ".join(argv)
    base = latency_models.load("local-cpu-xeon.json")
    a = zoo.get("mobilenet_v3_small")
    assert cal.predict(a) == pytest.approx(meta["scale"] * base.predict(a), rel=1e-9)
    assert {k: v for k, v in cal.meta.items() if k != "calibration"} == base.meta      # the rest unchanged
    # calibrating a calibrated copy: the new scale is taken on the uncalibrated predictions
    again = tmp_path / "again.json"
    assert calibrate.main(["--target", str(out), "--out", str(again), "--networks", "2", "--rounds", "1",
                           "--passes", "1"]) == 0
    capsys.readouterr()
    m2 = latency_models.load(str(again)).meta["calibration"]
    assert [n["predicted_ms"] for n in m2["networks"]] == pytest.approx([n["predicted_ms"] for n in meta["networks"]])
    targets = Path(latency_models.__file__).parent / "targets"
    for argv, msg in ((["--target", "pixel-cpu", "--out", str(out)], "--target: got 'pixel-cpu'; allowed:"),
                      (["--out", str(out), "--networks", "0"], "--networks"),
                      (["--out", str(tmp_path / "x.txt")], "--out: got"),
                      (["--out", str(tmp_path)], "--out: got"),
                      (["--out", str(targets / "local-cpu-mine.json")], "outside latency_models/targets/"),
                      (["--out", str(out / "sub.json")], "--out: got"),
                      ([], "--out")):
        assert calibrate.main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def test_repeatability_benchmark_on_seed_1019_measured_twice(capsys):
    """benchmarks/latency_repeatability.py on the two committed measurements of seed 1019 (session 13): the share of
    random archs whose two measurements agree within 10%, recomputed here from the files, and the normal-noise
    ceiling it prints (a perfect model's expected share is share_within(sigma))."""
    import importlib.util
    import math

    from latency_models import validate

    spec = importlib.util.spec_from_file_location("latency_repeatability", REPO / "benchmarks" / "latency_repeatability.py")
    B = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(B)
    M = REPO / "latency_models" / "targets" / "measurements"
    a, b = M / "local-cpu-xeon.validation-s13-seed1019.json", M / "local-cpu-xeon.validation-s13-seed1019-again.json"
    assert B.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    first, second = json.loads(a.read_text()), json.loads(b.read_text())
    pairs = [(p, q) for p, q in B.paired(first, second) if validate.network_group(p["label"]) == "random"]
    x = np.array([min(p["rel"]) for p, _ in pairs])
    y = np.array([min(q["rel"]) for _, q in pairs])
    share = float(np.mean(np.abs(x / y - 1) <= 0.10))
    assert len(pairs) == 100 and share == 0.88
    assert f"random      build scale n 100: the two within +/-10% {share:6.1%}" in out
    stats = B.agreement(x / np.median(x / y), y)
    assert stats["pairs_expected_within_10pct"] == pytest.approx(0.869, abs=0.002)   # docs/latency.md: 86.9%
    assert B.share_within(math.log1p(0.10) / 1.959964) == pytest.approx(0.95, abs=1e-6)
    assert B.share_within(B.NN_METER_SD) == pytest.approx(0.99, abs=1e-4)   # 99% within 10%, as nn-Meter reports
    assert stats["perfect_model_within_10pct"] > stats["nn_meter_class_within_10pct"] and stats["model_sd_for_95pct"] > 0
