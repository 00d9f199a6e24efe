"""The ``predictor`` evaluator and budget sweeps (searchers.sweep), on tiny supernets and data.

The predictor's real numbers (held-out tau vs the trained mobile-unified supernet, vs the stand-alone
accuracies, the 10,000-candidate search time) come from benchmarks/predictor.py; here: what it learns,
what it caches and reuses, and the sweep's files and errors.
"""
from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy_space import toy_npz  # noqa: E402

SPACE = "mobilenetv3"
TINY = {"epochs": 1, "images_per_epoch": 64, "batch_size": 32, "envelope_samples": 40, "n_random": 1,
        "calib_batches": 1, "calib_batch_size": 32, "eval_images": 48}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return toy_npz(tmp_path_factory.mktemp("d") / "toy.npz", n=240)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _predictor(data_path, cache, samples, **kw):
    from searchers.evaluators import get_evaluator

    return get_evaluator("predictor", space=SPACE, dataset=str(data_path), samples=samples, cache_root=cache,
                         progress=False, **TINY, **kw)


# ------------------------------------------------------------------------------------------------
# The predictor
# ------------------------------------------------------------------------------------------------
def test_features_let_the_model_learn_an_accuracy_function():
    """A known function of the archs' choices (SE blocks, 5x5 kernels, depth, width): the fitted
    model ranks held-out archs by it (Kendall tau well above chance)."""
    from search_space.space import load_space
    from searchers.evaluators.predictor import Vectorizer, arch_features, kendall_tau, make_model

    space = load_space(SPACE)
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(160)]

    def truth(a):
        return (0.6 + 0.01 * sum(b.se_ch > 0 for b in a.blocks) + 0.008 * sum(b.kernel == 5 for b in a.blocks)
                + 0.004 * len(a.blocks) + 0.02 * np.log2(a.head.last_ch or 1) / 11)

    feats = [arch_features(a, 32, 10) for a in archs]
    assert all(f["resolution"] == 32 and f["depth"] == len(a.blocks) for f, a in zip(feats, archs))
    y = np.array([truth(a) for a in archs])
    vec = Vectorizer.fit(feats[:120])
    X = vec.transform(feats)
    assert X.shape == (160, len(vec.names)) and X.dtype == np.float32
    for kind, floor in (("gbr", 0.7), ("ridge", 0.7)):
        m = make_model(kind, 0).fit(X[:120], y[:120])
        tau = kendall_tau(m.predict(X[120:]), y[120:])
        assert tau >= floor, (kind, tau)
    # an unknown feature name is dropped, a missing one is 0
    Z = vec.transform([{"nope": 3.0}])
    assert not Z.any()


def test_collects_caches_and_reuses(data_path, cache):
    from search_space.space import load_space

    ev = _predictor(data_path, cache, 12)
    ev.prepare()
    rows = ev.read_evals()
    assert len(rows) == 12 and len({r["arch"] for r in rows}) == 12
    assert ev.supernet_evaluator.n_evals >= 12  # the collection (+ the stand-alone archs it covers)
    rep = ev.report
    assert rep["samples"] == 12 and rep["held_out"] == 2 and rep["train"] == 10 and rep["model"] == "gbr"
    assert isinstance(rep["kendall_tau_supernet"], float) and "standalone" in rep  # its value: benchmarks/predictor.py
    # a collected evaluation is what the supernet says of that arch
    from search_space.arch import Arch

    a = Arch.from_string(rows[3]["arch"])
    assert ev.rescore(a) == pytest.approx(rows[3]["accuracy"])
    # predictions: accuracies, the same one by one and in a batch
    space = load_space(SPACE)
    archs = [space.sample(random.Random(i)) for i in range(5)]
    many = ev.predict_many(archs)
    assert all(0.0 <= p <= 1.0 for p in many)
    assert [ev.evaluate(x) for x in archs] == pytest.approx(list(many))

    # a second evaluator with the same settings loads the fitted model: no supernet evaluation at all
    again = _predictor(data_path, cache, 12)
    again.prepare()
    assert again.supernet_evaluator.n_evals == 0 and again.report["cached"].endswith("model-gbr-n12-s0.pkl")
    assert list(again.predict_many(archs)) == pytest.approx(list(many))
    # more samples extend the same file (the first 12 are kept, in order)
    more = _predictor(data_path, cache, 16, model="ridge")
    more.prepare()
    rows16 = more.read_evals()
    assert [r["arch"] for r in rows16[:12]] == [r["arch"] for r in rows] and len(rows16) == 16
    assert more.supernet_evaluator.n_evals - 1 <= 4 + more.report["standalone"].get("n", 0)
    # a torn last line (a killed collection) is dropped and the collection resumes
    path = more.evals_path
    path.write_text(path.read_text() + '{"i": 99, "arch": "stem_i3')
    assert len(more.read_evals()) == 16
    resumed = _predictor(data_path, cache, 18, model="ridge")
    resumed.prepare()                                   # appends after the torn line, not onto it
    rows18 = resumed.read_evals()
    assert len(rows18) == 18 and [r["arch"] for r in rows18[:16]] == [r["arch"] for r in rows16]


def test_bad_options():
    from searchers.evaluators import get_evaluator
    from searchers.evaluators.predictor import PredictorError

    # the option names as the user gives them (--eval-opt KEY=VALUE), as the other evaluators say them
    with pytest.raises(PredictorError, match=r"^--eval-opt model: got 'xgb'; allowed: gbr, mlp, ridge$"):
        get_evaluator("predictor", space=SPACE, model="xgb")
    with pytest.raises(PredictorError, match=r"^--eval-opt samples: got 3; allowed: an integer >= 10$"):
        get_evaluator("predictor", space=SPACE, samples=3)
    with pytest.raises(PredictorError, match=r"^--eval-opt rescore_top: got -1; allowed: an integer >= 0$"):
        get_evaluator("predictor", space=SPACE, rescore_top=-1)
    with pytest.raises(PredictorError, match=r"^--eval-opt epochs: got 0; allowed: a positive integer$"):
        get_evaluator("predictor", space=SPACE, epochs=0)  # its supernet's option
    with pytest.raises(PredictorError, match=r"^--eval-opt: got 'epochz'; allowed: predictor evaluator options samples, "
                                             r"model, rescore_top, standalone_csv, supernet_path, device, epochs, "):
        get_evaluator("predictor", space=SPACE, epochz=3)


# ------------------------------------------------------------------------------------------------
# The fast search and the sweep
# ------------------------------------------------------------------------------------------------
class _Synthetic:
    """A stand-in predictor: accuracy grows with MACs-ish width (so the reward trades it off)."""

    def predict_many(self, archs):
        return np.array([min(1.0, 0.5 + 0.02 * len(a.blocks) + 0.03 * sum(b.se_ch > 0 for b in a.blocks) / 4)
                         for a in archs])


def test_fast_search_counts_dedups_improves_and_is_deterministic():
    import latency_models
    from search_space.space import load_space
    from searchers.reward import Reward
    from searchers.sweep import FastSearch, best_of, sample_pool

    space, model = load_space(SPACE), latency_models.load("pixel-cpu")
    pool = sample_pool(space, 30, seed=1)
    lat = [float(x) for x in model.predict_many(pool.archs)]
    budget = sorted(lat)[len(lat) // 3]
    runs = []
    for _ in range(2):
        fs = FastSearch(space, model, _Synthetic(), Reward.make(budget, "soft"), population=20, sample_size=5, seed=3)
        runs.append(fs.run(300, pool, lat, budget))
    hist = runs[0]
    assert len(hist) == 300 and len({c.text for c in hist}) == 300  # distinct archs
    assert [c.text for c in runs[1]] == [c.text for c in hist]       # the same seed, the same search
    for c in hist[:25:6]:
        assert c.latency_ms == pytest.approx(float(model.predict(c.arch)))
        assert space.decode(list(c.codes)) == c.arch
    first = max(c.reward for c in hist[:20])
    assert best_of(hist, budget).reward > first  # evolution improved on its first population
    # hard reward: the first population starts with the pool's archs within the budget
    fs = FastSearch(space, model, _Synthetic(), Reward.make(budget, "hard"), population=5, sample_size=2, seed=3)
    h = fs.run(5, pool, lat, budget)
    assert all(c.latency_ms <= budget for c in h)


def test_top_candidates_and_the_pick_by_rescore():
    """``top``: best_of's order (within the budget first, then reward), skipping what ``verify``
    refuses; ``pick_by_rescore``: the best *re-scored* reward among them, with that accuracy."""
    import latency_models
    from search_space.space import load_space
    from searchers.reward import Reward
    from searchers.sweep import FastSearch, best_of, pick_by_rescore, sample_pool

    space, model = load_space(SPACE), latency_models.load("pixel-cpu")
    pool = sample_pool(space, 30, seed=1)
    lat = [float(x) for x in model.predict_many(pool.archs)]
    budget = sorted(lat)[len(lat) // 2]
    reward = Reward.make(budget, "hard")
    fs = FastSearch(space, model, _Synthetic(), reward, population=20, sample_size=5, seed=3)
    hist = fs.run(200, pool, lat, budget)
    top = fs.top(budget, 8)
    assert len(top) == 8 and top[0] == best_of(hist, budget)
    assert all(c.latency_ms <= budget for c in top)
    keys = [(c.reward, c.accuracy) for c in top]
    assert keys == sorted(keys, reverse=True)
    assert max(c.reward for c in hist if c not in top and c.latency_ms <= budget) <= top[-1].reward
    refused = {top[0].text, top[3].text}
    fs.verify = lambda a: a.to_string() not in refused
    assert [c.text for c in fs.top(budget, 6)] == [c.text for c in top if c.text not in refused][:6]
    # re-scores that reverse the order: the last one wins, with its re-scored accuracy and reward
    truth = {c.text: 0.9 - 0.01 * i for i, c in enumerate(reversed(top))}
    pick, scores = pick_by_rescore(top, lambda a: truth[a.to_string()], reward, budget)
    assert scores == pytest.approx([truth[c.text] for c in top])
    assert pick.text == top[-1].text and pick.accuracy == pytest.approx(0.9)
    assert pick.reward == pytest.approx(reward(0.9, pick.latency_ms)) and pick.latency_ms == top[-1].latency_ms


def _bad(args, capsys) -> str:
    from searchers.evolve import main

    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_sweep_end_to_end(tmp_path, data_path, cache, capsys):
    from searchers.evolve import main

    opts = [f"{k}={v}" for k, v in {**TINY, "samples": 12, "cache_root": cache}.items()]
    eo = [x for o in opts for x in ("--eval-opt", o)]
    out = tmp_path / "sweep"
    args = ["--space", SPACE, "--dataset", data_path, "--evaluator", "predictor", *eo, "--target",
            "pixel-cpu,note10-cpu", "--budget", "15ms, 40ms", "--trials", 120, "--population", 20,
            "--sample-size", 5, "--no-progress", "--no-zoo", "--out", out]
    assert main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    assert "sweep of 4 (target, budget) pairs, 120 candidates each" in printed and "pixel-cpu" in printed
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["target"], float(r["budget_ms"])) for r in rows] == [
        ("pixel-cpu", 15.0), ("pixel-cpu", 40.0), ("note10-cpu", 15.0), ("note10-cpu", 40.0)]
    assert (out / "sweep.png").stat().st_size > 0
    for r in rows:
        folder = Path(r["folder"])
        summary = json.loads((folder / "summary.json").read_text())
        rejected = summary["timing"]["rejected_by_supernet"]  # winners the tiny supernet's envelope misses
        assert folder.parent == out and int(r["candidates"]) == 120 - rejected and rejected < 5
        assert float(r["latency_ms"]) <= float(r["budget_ms"]) and r["within_budget"] == "True"
        assert 0.0 <= float(r["supernet_accuracy"]) <= 1.0  # re-scored by the supernet
        for f in ("best/arch.yaml", "best/model.py", "best/model.onnx", "pareto.csv", "pareto.png",
                  "summary.json", "study.db"):
            assert (folder / f).stat().st_size > 0, (folder, f)
        cands = list(csv.DictReader(open(folder / "candidates.csv")))
        assert len(cands) == 120 - rejected
        assert summary["best"]["arch"] == r["arch"] and summary["trials"] == 120 - rejected
        # the winner: the predictor's top 10 (rescore_top default) re-scored by the supernet, the best
        # re-score within the budget (hard reward) wins, and its accuracy is the supernet's
        rt = json.loads((folder / "rescore_top.json").read_text())
        assert summary["timing"]["rescore_top_s"] > 0
        by_n = {int(c["n"]): c for c in cands}
        top = [by_n[n] for n in rt["candidates"]]
        assert by_n[rt["picked"]]["arch"] == r["arch"]
        inside = sorted(float(c["reward"]) for c in cands if float(c["latency_ms"]) <= float(r["budget_ms"]))
        assert rt["k"] == len(top) == 10 and len(rt["supernet_accuracy"]) == 10
        assert min(float(c["reward"]) for c in top) >= inside[-10]          # the 10 best predicted
        assert r["arch"] in {c["arch"] for c in top}
        ok = [a for c, a in zip(top, rt["supernet_accuracy"]) if float(c["latency_ms"]) <= float(r["budget_ms"])]
        assert float(r["accuracy"]) == pytest.approx(max(ok)) == pytest.approx(float(r["supernet_accuracy"]))
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["fast"] and sweep["predictor"]["samples"] == 12
    # rescore_top=0: the predictor's own best wins
    out3 = tmp_path / "sweep3"
    args3 = [a if a != "pixel-cpu,note10-cpu" else "pixel-cpu" for a in args[:-2]] + ["--eval-opt", "rescore_top=0", "--out", out3]
    assert main([str(a) for a in args3]) == 0
    for r in csv.DictReader(open(out3 / "sweep.csv")):
        cands = list(csv.DictReader(open(Path(r["folder"]) / "candidates.csv")))
        best = max((c for c in cands if float(c["latency_ms"]) <= float(r["budget_ms"])),
                   key=lambda c: float(c["reward"]))
        assert best["arch"] == r["arch"]
        assert not (Path(r["folder"]) / "rescore_top.json").exists()
    # a budget no arch meets is reported for its pair; the other pairs go on
    out2 = tmp_path / "sweep2"
    args2 = [a if a != "15ms, 40ms" else "0.2ms,40ms" for a in args[:-1]] + [out2]
    args2 = [a if a != "pixel-cpu,note10-cpu" else "pixel-cpu" for a in args2]
    assert main([str(a) for a in args2]) == 0
    rows = list(csv.DictReader(open(out2 / "sweep.csv")))
    assert rows[0]["error"].startswith("no architecture of space mobilenetv3 reaches 0.2 ms on pixel-cpu")
    assert rows[1]["arch"] and not rows[1]["error"]


def test_sweep_bad_inputs(tmp_path, capsys):
    base = ["--space", SPACE, "--evaluator", "proxy", "--no-progress", "--out", tmp_path / "x"]
    assert _bad([*base, "--target", "pixel-cpu,", "--budget", "20ms"], capsys) == \
        "error: --target: got 'pixel-cpu,'; allowed: a comma-separated list without empty items"
    assert _bad([*base, "--target", "pixel-cpu,pixel-cpu", "--budget", "20ms"], capsys) == \
        "error: --target: got 'pixel-cpu,pixel-cpu'; allowed: a list without repeats"
    assert _bad([*base, "--target", "pixel-cpu,nokia", "--budget", "20ms"], capsys).startswith(
        "error: --target: got 'nokia'; allowed: local-cpu")
    assert _bad([*base, "--target", "pixel-cpu", "--budget", "20ms,60"], capsys) == \
        "error: --budget: got '60' without a unit; allowed: a latency such as 60ms, 60 ms or 0.06s"
    assert _bad([*base, "--target", "pixel-cpu", "--budget", "20ms,30ms", "--resume"], capsys).startswith(
        "error: --resume: not for sweeps")
    assert not (tmp_path / "x").exists()
    # --out, the data set and the evaluator's options are read before the sweep's folder is made
    two = ["--target", "pixel-cpu,note10-cpu", "--budget", "20ms,40ms"]
    f = tmp_path / "afile"
    f.write_text("x")
    assert _bad([*base[:-1], f, *two], capsys) == f"error: --out: {f} is a file; allowed: a folder (new or existing)"
    assert f.read_text() == "x"
    assert _bad([*base, *two, "--dataset", "/nope.npz"], capsys) == (
        "error: dataset: /nope.npz does not exist; allowed: fashion-mnist, a folder of class sub-folders, "
        "or an .npz file with x and y")
    assert _bad([*base, *two, "--eval-opt", "batch_size=0"], capsys).startswith("error: --eval-opt batch_size: ")
    assert not (tmp_path / "x").exists()


def test_sweep_evaluator_gets_no_progress(tmp_path, monkeypatch):
    """--no-progress reaches the sweep's evaluator (a supernet's training bar); with bars on, the
    evaluator keeps its default (the train evaluator's per-arch bar off)."""
    import searchers.evaluators as evaluators
    from searchers.cli_common import given_options
    from searchers.evolve import build_parser
    from searchers.sweep import run_sweep

    seen = []

    class Stop(Exception):
        pass

    def fake(name, **kw):
        seen.append((name, kw.get("progress", "default")))
        raise Stop

    monkeypatch.setattr(evaluators, "get_evaluator", fake)
    for ev, progress in (("supernet", False), ("supernet", True), ("train", True), ("train", False)):
        given = given_options(build_parser().parse_args(
            ["--space", SPACE, "--evaluator", ev, "--target", "pixel-cpu,note10-cpu", "--budget", "20ms",
             "--out", str(tmp_path / "x")]))
        with pytest.raises(Stop):
            run_sweep(given, progress=progress)
    assert seen == [("supernet", False), ("supernet", "default"), ("train", "default"), ("train", False)]
    assert not (tmp_path / "x").exists()
