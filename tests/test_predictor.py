"""The predictor's arch encoding (per resolution stage) and its noise ceiling (``retest``), on a tiny
supernet and toy data.  Its real numbers on mobile-unified come from benchmarks/predictor.py."""
from __future__ import annotations

import json
import math
import pickle
import random
import sys
from collections import Counter
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


def test_features_by_resolution_stage():
    """Each layer appears again under its output size and its index there; per-stage depth, width
    and sums are those of the arch's layers; the layer-position columns are kept."""
    from search_space.space import load_space
    from searchers.evaluators.predictor import arch_features
    from searchers.supernet import position_keys

    space = load_space("mobile-unified")
    rng = random.Random(3)
    for _ in range(20):
        a = space.sample(rng)
        f = arch_features(a, 32, 10)
        groups = [k.split(".", 1)[0] for k in position_keys(a)]
        depth = Counter(groups)
        assert sum(f[f"{g}.depth"] for g in depth) == len(a.blocks)
        for g, n in depth.items():
            assert f[f"{g}.depth"] == n and f"{g}#{n}.on" not in f
            blocks = [b for b, h in zip(a.blocks, groups) if h == g]
            assert f[f"{g}.sum_k"] == sum(b.kernel for b in blocks)
            assert f[f"{g}.n_se"] == sum(b.se_ch > 0 for b in blocks)
            assert f[f"{g}.width"] == pytest.approx(math.log2(blocks[-1].out_ch))
            for j, b in enumerate(blocks):
                assert f[f"{g}#{j}.on"] == 1.0 and f[f"{g}#{j}.k"] == b.kernel
                assert f[f"{g}#{j}.e"] == pytest.approx(b.mid_ch / b.in_ch if b.mid_ch else 0.0)
                assert f[f"{g}#{j}.se"] == float(b.se_ch > 0) and f[f"{g}#{j}.hs"] == float(b.act == "hswish")
        assert f["depth"] == len(a.blocks) and "log_macs" in f       # the earlier columns are still there
        assert sum(1 for k in f if k.endswith(".on") and "#" not in k) == len(a.blocks)
        assert sum(v for k, v in f.items() if k.startswith("n.") and k[2:] in {b.type for b in a.blocks}) == len(a.blocks)


def test_a_layer_keeps_its_resolution_stage_column_when_a_width_split_moves_it():
    """Two archs that differ only in where a 14x14 stage changes width: ``position_keys`` puts the
    third 14x14 layer in different stages, the resolution-stage columns in the same one."""
    from search_space.arch import Arch
    from searchers.evaluators.predictor import arch_features

    base = ("stem_i3_o16_k3_s2_re-mbconv_i16_o16_m16_k3_s1_re-mbconv_i16_o24_m64_k3_s2_re-"
            "mbconv_i24_o40_m72_k5_s2_re-mbconv_i40_o80_m240_k3_s2_hs-mbconv_i80_o80_m200_k3_s1_hs_skip-{}-"
            "mbconv_i{}_o160_m480_k5_s2_hs-head_l960_h1280_hs")
    same = Arch.from_string(base.format("mbconv_i80_o80_m320_k7_s1_hs_skip", 80))
    split = Arch.from_string(base.format("mbconv_i80_o112_m320_k7_s1_hs", 112))
    fa, fb = arch_features(same, 32), arch_features(split, 32)
    moved = [k for k in fb if k.endswith(".k=7") and k.startswith("o14")]
    assert moved and moved[0] not in fa                     # position_keys: another stage's columns
    assert fa["o14#2.k"] == fb["o14#2.k"] == 7.0 and fa["o14.depth"] == fb["o14.depth"] == 3


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from searchers.evaluators import get_evaluator

    data = toy_npz(tmp_path_factory.mktemp("d") / "toy.npz", n=1200)   # 120 validation images
    ev = get_evaluator("predictor", space=SPACE, dataset=str(data), samples=12, progress=False,
                       cache_root=tmp_path_factory.mktemp("cache"), **TINY)
    ev.prepare()
    return ev


def test_retest_scores_again_on_other_images_and_calibration(predictor):
    from search_space.arch import Arch
    from searchers.evaluators.predictor import kendall_tau
    from searchers.supernet import SupernetRecipe, evaluate_subnet

    rows = predictor.read_evals()[:8]
    archs = [Arch.from_string(r["arch"]) for r in rows]
    rt = predictor.retest(archs)
    assert rt["n"] == 8
    assert rt["first"] == pytest.approx([r["accuracy"] for r in rows])   # the collected scores
    # the second score: the images after the first 48, calibration batches of seed 1
    data = predictor.data
    sev = predictor.supernet_evaluator
    assert sev.recipe.eval_images == 48 and len(data.val) == 120
    from dataclasses import replace

    later = replace(data, val=replace(data.val, x=data.val.x[48:96], y=data.val.y[48:96]))
    want = [evaluate_subnet(sev.supernet, a, later, sev.recipe, 1) for a in archs[:3]]
    assert rt["second"][:3] == pytest.approx(want)
    assert all(abs(s * 48 - round(s * 48)) < 1e-9 for s in rt["second"])    # k correct of 48
    assert rt["second"] != rt["first"]
    # the collected scores given: the same result without scoring them again
    n0 = sev.n_evals
    again = predictor.retest(archs, first=[r["accuracy"] for r in rows])
    assert sev.n_evals == n0 and again["second"] == rt["second"] and again["first"] == rt["first"]
    assert rt["kendall_tau"] == pytest.approx(kendall_tau(rt["first"], rt["second"]))
    r = float(np.corrcoef(rt["first"], rt["second"])[0, 1])
    assert rt["pearson"] == pytest.approx(r)
    assert rt["tau_ceiling"] == pytest.approx(2 / math.pi * math.asin(math.sqrt(r)) if r > 0 else 0.0)
    # a split too small for two disjoint sets: one line naming it
    big = SupernetRecipe(**{**sev.recipe.__dict__, "eval_images": 100})
    old, sev.recipe = sev.recipe, big
    try:
        with pytest.raises(Exception, match=r"^predictor retest: validation split: got 120 images \(Split\); "
                                            r"allowed: an in-memory split of at least 200 \(twice eval_images\)$"):
            predictor.retest(archs[:2])
    finally:
        sev.recipe = old


def test_a_model_cached_in_the_old_format_is_refitted(predictor, tmp_path):
    from searchers.evaluators import get_evaluator
    from searchers.evaluators.predictor import MODEL_FORMAT

    path = predictor.dir / "model-gbr-n12-s0.pkl"
    assert pickle.loads(path.read_bytes())["format"] == MODEL_FORMAT == 2
    path.write_bytes(pickle.dumps({"format": 1, "model": None, "names": [], "report": {"stale": True}}))
    again = get_evaluator("predictor", space=SPACE, dataset=str(predictor.dataset), samples=12, progress=False,
                          cache_root=predictor.cache_root, **TINY)
    again.prepare()
    assert "cached" not in again.report and "stale" not in again.report and again.model is not None
    assert pickle.loads(path.read_bytes())["format"] == MODEL_FORMAT


def test_standalone_report_ranks_each_training_recipe_apart(predictor, tmp_path):
    """Accuracies of different stand-alone recipes are not one ranking: a tau per recipe (groups of 3+
    archs the supernet covers), the largest group's at the top level; an arch trained with several
    seeds counts once, at its mean."""
    import csv
    import json

    from search_space.arch import Arch
    from searchers.evaluators.predictor import kendall_tau, recipe_label

    rows = predictor.read_evals()[:9]
    long_ = json.dumps({"epochs": 1, "images_per_epoch": 32000, "batch_size": 64, "lr": 0.05})
    short = json.dumps({"epochs": 1, "images_per_epoch": 5120, "batch_size": 32})
    assert recipe_label(long_) == "1 x 32000 images, batch 64" and recipe_label("") == "unknown recipe"
    path = tmp_path / "standalone.csv"
    truth_long = [r["accuracy"] for r in rows[:4]]            # the supernet's own order: its tau is 1
    truth_short = [1 - r["accuracy"] for r in rows[4:7]]      # the reverse: -1
    assert len(set(truth_long)) > 1 and len(set(truth_short)) > 1
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "space", "dataset", "accuracy_test", "recipe"])
        for r, acc in zip(rows[:4], truth_long):
            w.writerow([r["arch"], SPACE, "", acc, long_])
        for r, acc in zip(rows[:4], truth_long):              # a second training seed, same order
            w.writerow([r["arch"], SPACE, "", acc + 0.01, long_])
        for r, acc in zip(rows[4:7], truth_short):
            w.writerow([r["arch"], SPACE, "", acc, short])
        for r in rows[7:9]:                                   # two archs of a third recipe: no ranking
            w.writerow([r["arch"], SPACE, "", 0.3, "{}"])
        w.writerow(["not_an_arch", SPACE, "", 0.9, long_])
        w.writerow([rows[0]["arch"], SPACE, "another-data-set", 0.9, long_])
    predictor.standalone_csv = path
    rep = predictor.standalone_report()
    assert set(rep["by_recipe"]) == {"1 x 32000 images, batch 64", "1 x 5120 images, batch 32"}
    assert rep["recipe"] == "1 x 32000 images, batch 64" and rep["n"] == 4 and rep["seeds_max"] == 2
    for archs_rows, truth, label in ((rows[:4], truth_long, "1 x 32000 images, batch 64"),
                                     (rows[4:7], truth_short, "1 x 5120 images, batch 32")):
        g = rep["by_recipe"][label]
        archs = [Arch.from_string(r["arch"]) for r in archs_rows]
        sup = [r["accuracy"] for r in archs_rows]                 # the supernet's collected scores
        assert g["n"] == len(truth)
        assert g["kendall_tau_predictor"] == pytest.approx(kendall_tau(predictor.predict_many(archs), truth),
                                                           nan_ok=True)
        assert g["kendall_tau_supernet"] == pytest.approx(1.0 if truth == sup else -1.0)
    # fewer than 3 archs per recipe: a note, not a tau
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "space", "dataset", "accuracy_test", "recipe"])
        for r in rows[:2]:
            w.writerow([r["arch"], SPACE, "", 0.5, long_])
        w.writerow([rows[2]["arch"], SPACE, "", 0.5, short])
    rep = predictor.standalone_report()
    assert rep["n"] == 2 and rep["note"] == "fewer than 3 archs of this space/data set per training recipe"


def test_a_cached_model_redoes_its_standalone_report_when_the_csv_changed(predictor, tmp_path):
    """The fitted model is cached with the stand-alone CSV's hash: the next prepare with another CSV
    loads the same model and recomputes the stand-alone taus (no stale figures), and stores the new hash."""
    import csv
    import json
    import pickle

    from searchers.evaluators import get_evaluator

    rows = predictor.read_evals()[:3]
    path = tmp_path / "standalone.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "space", "dataset", "accuracy_test", "recipe"])
        for r in rows:
            w.writerow([r["arch"], SPACE, "", r["accuracy"], json.dumps({"epochs": 1})])
    assert predictor.report["standalone"].get("n", 0) != 3
    ev = get_evaluator("predictor", space=SPACE, dataset=predictor.dataset, samples=12, progress=False,
                       cache_root=predictor.cache_root, standalone_csv=path, **TINY)
    ev.prepare()
    assert ev.report["cached"] and ev.report["standalone"]["n"] == 3
    assert ev.report["standalone"]["kendall_tau_supernet"] == pytest.approx(1.0)
    state = pickle.loads(Path(ev.report["cached"]).read_bytes())
    assert state["standalone_csv"] == ev._csv_stamp() != predictor._csv_stamp()


def test_precise_stats_recover_known_noise_and_split_halves():
    """On simulated block accuracies with known variance parts (true arch differences, a calibration
    effect per seed, a seed x image interaction, image sampling noise per arch, plus effects common to
    every arch), ``precise_stats`` recovers each part, and its split halves are the stated ones."""
    from scipy.stats import pearsonr

    from searchers.evaluators.predictor import (kendall_tau, precise_stats, predicted_reliability, spearman_brown,
                                                tau_ceiling)

    rng = np.random.default_rng(0)
    n, k, nb, per = 20000, 4, 10, 500
    v_true, v_cal, v_int, v_img = 4e-5, 2e-5, 1e-5, 3e-5     # of a score on all 5,000 images, one seed
    mu = 0.8 + rng.normal(0, math.sqrt(v_true), n)
    g = rng.normal(0, math.sqrt(v_cal - v_int), (n, k))      # the seed's effect, the same on every image set
    h = rng.normal(0, math.sqrt(v_int * nb), (n, k, nb))     # per block: var x blocks (mean over blocks: v_int)
    e = rng.normal(0, math.sqrt(v_img * nb), (n, 1, nb))
    common = rng.normal(0, 0.01, (1, k, 1)) + rng.normal(0, 0.01, (1, 1, nb))   # ranks nothing
    acc = mu[:, None, None] + g[:, :, None] + h + e + common
    st = precise_stats(acc * per, [per] * nb)
    nz = st["noise"]
    assert nz["calibration"] == pytest.approx(v_cal, rel=0.05)
    assert nz["interaction"] == pytest.approx(v_int, rel=0.05)
    assert nz["calibration_shared"] == pytest.approx(v_cal - v_int, rel=0.1)
    assert nz["images"] == pytest.approx(v_img, rel=0.05)
    assert nz["true"] == pytest.approx(v_true, rel=0.05)
    score = acc.mean((1, 2))
    assert st["score"] == pytest.approx(list(score)) and st["k"] == 4 and st["images"] == 5000
    first, second = acc[:, :2, :5].mean((1, 2)), acc[:, 2:, 5:].mean((1, 2))
    r = pearsonr(first, second).statistic
    assert st["split_half"]["pearson"] == pytest.approx(r)
    assert st["split_half"]["reliability"] == pytest.approx(2 * r / (1 + r)) == spearman_brown(r)
    assert st["split_half"]["kendall_tau"] == pytest.approx(kendall_tau(first, second))
    rc = pearsonr(acc[:, :2].mean((1, 2)), acc[:, 2:].mean((1, 2))).statistic
    assert st["split_half_calibration"]["pearson"] == pytest.approx(rc) and rc > r   # shares the image noise
    # Spearman-Brown from halves of half the seeds on half the images: a half's noise is (shared
    # calibration) / 2 + interaction x 4 / 4 + images x 2 -- slightly more than twice the whole's
    # (shared / 4 + interaction / 4 + images), so it is a little below the whole score's reliability
    half = (v_cal - v_int) / 2 + v_int + 2 * v_img
    assert st["split_half"]["reliability"] == pytest.approx(v_true / (v_true + half / 2), abs=0.01)
    whole = v_true / (v_true + v_cal / k + v_img)
    assert st["reliability_model"] == pytest.approx(whole, abs=0.01) and st["split_half"]["reliability"] < whole
    assert st["tau_ceiling"] == pytest.approx(2 / math.pi * math.asin(math.sqrt(st["split_half"]["reliability"])))
    assert tau_ceiling(0.0) == 0.0 and tau_ceiling(1.0) == pytest.approx(1.0)
    # one score of 2,000 images and one seed: its noise from the parts; more images or seeds: higher
    one = predicted_reliability(nz, 2000, 5000)
    exact = v_true / (v_true + v_cal - v_int + v_int * 2.5 + v_img * 2.5)
    assert one == pytest.approx(exact, rel=0.05)
    sim = [mu + g[:, 0] + h[:, 0, :4].mean(1) + e[:, 0, :4].mean(1), mu + g[:, 1] + h[:, 1, 4:8].mean(1) + e[:, 0, 4:8].mean(1)]
    assert pearsonr(*sim).statistic == pytest.approx(exact, abs=0.04)          # what a test-retest would see
    assert predicted_reliability(nz, 5000, 5000) > one and predicted_reliability(nz, 2000, 5000, seeds=2) > one
    assert predicted_reliability(nz, 5000, 5000, calibration=0.0, interaction=0.0) == pytest.approx(
        nz["true"] / (nz["true"] + nz["images"]))
    # the predictor's and the default score's taus
    pred, default = mu + rng.normal(0, 1e-3, n), acc[:, 0, :4].mean(1)
    st = precise_stats(acc * per, [per] * nb, pred, default)
    assert st["kendall_tau_predictor"] == pytest.approx(kendall_tau(pred, score))
    assert st["kendall_tau_default"] == pytest.approx(kendall_tau(default, score))
    assert st["kendall_tau_predictor_vs_default"] == pytest.approx(kendall_tau(pred, default))
    with pytest.raises(Exception, match=r"^precise_stats: counts: got shape \(20000, 4\); allowed: \(archs, seeds, 10 blocks\)$"):
        precise_stats(acc[:, :, 0], [per] * nb)


def test_precise_scores_are_whole_split_scores_cached_and_resumed(predictor, tmp_path, monkeypatch):
    """``precise``: per arch and calibration seed 0..k-1, the correct counts per block of the whole
    validation split, equal to ``evaluate_subnet`` there; cached in a JSON file per protocol key, so a
    second call scores nothing and a larger k scores only the new seeds."""
    from dataclasses import replace

    import searchers.evaluators.predictor as P
    import searchers.supernet as S
    from search_space.arch import Arch

    monkeypatch.setattr(P, "PRECISE_BLOCK", 50)               # 120 validation images: blocks of 50, 50, 20
    archs = [Arch.from_string(r["arch"]) for r in predictor.read_evals()[:4]]
    sev, data = predictor.supernet_evaluator, predictor.data
    cache = tmp_path / "precise.json"
    calls = []
    real = S.evaluate_subnet_correct

    def counting(*a, **kw):
        calls.append(a[4])
        return real(*a, **kw)

    monkeypatch.setattr(S, "evaluate_subnet_correct", counting)
    c = predictor.precise(archs, 2, cache=cache)
    assert c.shape == (4, 2, 3) and len(calls) == 8 and sorted(set(calls)) == [0, 1]
    whole = replace(sev.recipe, eval_images=120)
    for i, a in enumerate(archs[:2]):
        for s in (0, 1):
            assert c[i, s].sum() == round(120 * S.evaluate_subnet(sev.supernet, a, data, whole, s))
            right = real(sev.supernet, a, data, whole, s)
            assert list(c[i, s]) == [int(right[:50].sum()), int(right[50:100].sum()), int(right[100:].sum())]
    calls.clear()
    assert (predictor.precise(archs, 2, cache=cache) == c).all() and calls == []          # all cached
    c3 = predictor.precise(archs, 3, cache=cache)
    assert calls == [2] * 4 and (c3[:, :2] == c).all()                                    # the new seed only
    stored = json.loads(cache.read_text())
    key = predictor.precise_key()
    assert key.endswith("|val120|calib1x32|block50") and list(stored["entries"]) == [key]
    assert stored["entries"][key]["settings"]["eval_images"] == 120
    calls.clear()
    c8 = predictor.precise(archs[:1], 2, calib_batches=3, cache=cache)                  # another protocol key
    assert len(calls) == 2 and len(json.loads(cache.read_text())["entries"]) == 2
    assert c8[0, 0].sum() == round(120 * S.evaluate_subnet(sev.supernet, archs[0], data, replace(whole, calib_batches=3), 0))
    with pytest.raises(Exception, match=r"^predictor precise k: got 0; allowed: an integer >= 1$"):
        predictor.precise(archs, 0)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(Exception, match=r"is not JSON; allowed: a file written by PredictorEvaluator.precise"):
        predictor.precise(archs, 1, cache=bad)


@pytest.mark.parametrize("argv, line", [
    (["--precise", "4", "--calib-variants", "4,x"],
     "predictor.py: error: --calib-variants: got '4,x'; allowed: a comma list of positive integers, e.g. 4,8"),
    (["--calib-variants", "8"], "predictor.py: error: --calib-variants: needs --precise K (its variance components)"),
    (["--precise", "-1"], "predictor.py: error: --precise: got -1; allowed: an integer >= 0"),
    (["--precise", "1"], "predictor.py: error: --precise: got 1; allowed: 0 (off) or an integer >= 2"),
    (["--precise", "4", "--precise-archs", "2"], "predictor.py: error: --precise-archs: got 2; allowed: an integer >= 3"),
    (["--precise", "4", "--variant-archs", "0"], "predictor.py: error: --variant-archs: got 0; allowed: an integer >= 3"),
    (["--precise", "4", "--variants", "gbr,nope"],
     "predictor.py: error: --variants: got 'gbr,nope'; allowed: all, or a comma list of gbr, gbr-depth3, gbr-slow, hgb, "
     "hgb-monotone, gbr-compact, gbr-perpos, ridge-pairs-compact, gp, svr, extra-trees, mean-gbr-gp-ridge"),
    (["--variants", "all"], "predictor.py: error: --variants: needs --precise K (the held-out precise scores)"),
    (["--whole-labels"], "predictor.py: error: --whole-labels: needs --precise K (the held-out precise scores)"),
    (["--precise", "4", "--test-target"], "predictor.py: error: --test-target: needs --whole-labels (its predictors)"),
    (["--precise", "4", "--variants", "gbr", "--cv-folds", "1"], "predictor.py: error: --cv-folds: got 1; allowed: an integer >= 2"),
    (["--precise", "4", "--variants", "gbr", "--cv-seeds", "0"], "predictor.py: error: --cv-seeds: got 0; allowed: an integer >= 1"),
])
def test_benchmark_options_are_checked_in_one_line(argv, line):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "predictor.py"), *argv], capture_output=True,
                       text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == line and "Traceback" not in r.stderr


def _bench():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "predictor.py"
    spec = importlib.util.spec_from_file_location("bench_predictor", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_feature_sets_split_the_columns_into_per_layer_and_summary_ones():
    """``compact`` = no per-layer column (position or resolution-stage index); ``perpos`` = exactly the
    per-layer columns and the resolution; together they are every column once (the resolution twice)."""
    from search_space.space import load_space
    from searchers.evaluators.predictor import Vectorizer, arch_features

    B = _bench()
    space = load_space("mobile-unified")
    rng = random.Random(5)
    feats = [arch_features(space.sample(rng), 32, 10) for _ in range(30)]
    names = Vectorizer.fit(feats).names
    compact, perpos = B.feature_set(names, "compact"), B.feature_set(names, "perpos")
    assert B.feature_set(names, "all") == list(range(len(names)))
    per_layer = {n for n in names if "#" in n or n.count(".") >= 3}
    assert {names[i] for i in perpos} == per_layer | {"resolution"}
    assert not per_layer & {names[i] for i in compact}
    assert sorted(set(compact) | set(perpos)) == list(range(len(names)))
    assert set(compact) & set(perpos) == {names.index("resolution")}
    assert {"log_macs", "log_params", "depth", "o14.sum_k", "stem.out", "head.last"} <= {names[i] for i in compact}
    assert "o14#0.k" in {names[i] for i in perpos} and "o14.s0.0.k=3" in {names[i] for i in perpos}
    with pytest.raises(ValueError):
        B.feature_set(names, "every")


def test_cv_variants_is_the_mean_fold_tau_and_variants_part_refits_the_best():
    """``cv_variants``: per fold seed, k shuffled folds; the figure is the mean of the folds' Kendall
    taus of out-of-fold predictions (checked by refitting every fold by hand); ``variants_part`` picks
    the highest CV tau, refits it on all the training rows and scores it against the precise scores."""
    from types import SimpleNamespace

    from sklearn.model_selection import KFold

    from searchers.evaluators.predictor import kendall_tau

    B = _bench()
    rng = np.random.default_rng(0)
    names = ["log_macs", "o14.s0.0.k=3", "o14#0.k", "resolution"]
    X = rng.normal(size=(60, 4))
    y = X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 0.3, 60)                 # log_macs and a per-layer column
    cv = B.cv_variants(X, y, names, ["svr", "ridge-pairs-compact"], folds=3, seeds=(0, 1), log=lambda m: None)
    for name in ("svr", "ridge-pairs-compact"):
        taus = []
        for fs in (0, 1):
            for tr, te in KFold(3, shuffle=True, random_state=fs).split(X):
                cols, m = B.variant_model(name, 0, names)
                taus.append(kendall_tau(m.fit(X[tr][:, cols], y[tr]).predict(X[te][:, cols]), y[te]))
        assert cv[name]["folds"] == pytest.approx(taus) and cv[name]["cv_tau"] == pytest.approx(np.mean(taus))
        assert cv[name]["se"] == pytest.approx(np.std(taus, ddof=1) / math.sqrt(6))
    # the compact set has no per-layer column: it misses half the signal and ranks worse
    assert B.feature_set(names, "compact") == [0, 3]
    assert cv["svr"]["cv_tau"] > cv["ridge-pairs-compact"]["cv_tau"] > 0.2
    Xte = rng.normal(size=(20, 4))
    truth = Xte[:, 0] + 0.5 * Xte[:, 1]
    args = SimpleNamespace(cv_folds=3, cv_seeds=2, seed=0)
    res = B.variants_part(args, ["ridge-pairs-compact", "svr"], X, y, Xte, {"score": list(truth)}, list(-truth), names,
                          "test labels", also=["ridge-pairs-compact"])
    assert res["chosen"] == "svr" and set(res["held_out"]) == {"svr", "ridge-pairs-compact"}
    cols, m = B.variant_model("svr", 0, names)
    p = m.fit(X[:, cols], y).predict(Xte[:, cols])
    assert res["held_out"]["svr"]["predicted"] == pytest.approx(list(p))
    assert res["held_out"]["svr"]["kendall_tau_precise"] == pytest.approx(kendall_tau(p, truth))
    assert kendall_tau(p, truth) > 0.6
    assert res["held_out"]["svr"]["kendall_tau_default"] == pytest.approx(-kendall_tau(p, truth))


def test_the_standardized_mean_of_regressors():
    """``mean-gbr-gp-ridge``: each member's prediction standardized by its training predictions, averaged,
    and put back on the labels' scale."""
    from sklearn.linear_model import LinearRegression

    B = _bench()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    y = 0.8 + 0.01 * (X[:, 0] - X[:, 1])
    zm = B._ZMean([LinearRegression, lambda: LinearRegression(fit_intercept=False)]).fit(X, y)
    a, b = LinearRegression().fit(X, y), LinearRegression(fit_intercept=False).fit(X, y)
    Xn = rng.normal(size=(5, 3))
    za = (a.predict(Xn) - a.predict(X).mean()) / a.predict(X).std()
    zb = (b.predict(Xn) - b.predict(X).mean()) / b.predict(X).std()
    assert zm.predict(Xn) == pytest.approx(y.mean() + y.std() * (za + zb) / 2)
    cols, m = B.variant_model("mean-gbr-gp-ridge", 0, ["a", "b", "c"])
    assert cols == [0, 1, 2] and len(m.makers) == 3


def test_whole_split_labels_are_the_eval_images_option(predictor, tmp_path):
    """Fitting on whole-split labels is the ``eval_images`` option set to the validation split's size:
    its own evaluations folder (the evaluation settings are in the key), the same supernet (not
    retrained: its cache key does not depend on them), the same archs in the same order, and each
    label is the whole split's score with calibration seed 0 -- ``precise`` with k=1."""
    from search_space.arch import Arch
    from searchers.evaluators import get_evaluator

    whole = get_evaluator("predictor", space=SPACE, dataset=str(predictor.dataset), samples=12, progress=False,
                          cache_root=predictor.cache_root, **{**TINY, "eval_images": 120})
    whole.prepare()
    assert whole.dir != predictor.dir and whole.supernet_evaluator.recipe.eval_images == len(whole.data.val) == 120
    assert whole._supernet_name() == predictor._supernet_name() and not whole.supernet_evaluator.trained_now
    rows, base = whole.read_evals(), predictor.read_evals()
    assert [r["arch"] for r in rows] == [r["arch"] for r in base][:len(rows)] and len(rows) == 12
    counts = predictor.precise([Arch.from_string(r["arch"]) for r in rows], 1, cache=tmp_path / "w.json")
    assert [r["accuracy"] for r in rows] == pytest.approx(list(counts.sum(axis=(1, 2)) / 120))
    assert [r["accuracy"] for r in rows] != [r["accuracy"] for r in base]


def test_the_test_target_scores_the_test_split_with_its_own_calibration_seed(predictor, tmp_path):
    """Part 8: each arch scored once on the whole test split with calibration seed ``--test-seed``
    (= ``evaluate_subnet`` there), cached; the evaluator's data and seed are restored afterwards; the
    taus are against that score."""
    from dataclasses import replace
    from types import SimpleNamespace

    import searchers.supernet as S
    from search_space.arch import Arch
    from searchers.evaluators.predictor import PredictorError, kendall_tau, predicted_reliability

    B = _bench()
    archs = [Arch.from_string(r["arch"]) for r in predictor.read_evals()[:5]]
    data, sev = predictor.data, predictor.supernet_evaluator
    n = len(data.test)
    noise = {"calibration": 2e-5, "interaction": 1e-5, "images": 3e-5, "true": 4e-5}
    args = SimpleNamespace(test_seed=4, test_json=str(tmp_path / "t.json"))
    preds = {"up": [1, 2, 3, 4, 5], "down": [5, 4, 3, 2, 1]}
    res = B.test_target_part(args, predictor, archs, preds, {"noise": noise, "score": [0.1, 0.2, 0.3, 0.4, 0.5]},
                             [0.5, 0.4, 0.3, 0.2, 0.1])
    assert predictor.data is data and predictor.seed == 0 and sev._data is data
    on_test = replace(data, val=data.test)
    want = [S.evaluate_subnet(sev.supernet, a, on_test, replace(sev.recipe, eval_images=n), 4) for a in archs]
    assert res["target"] == pytest.approx(want) and res["images"] == n
    assert res["kendall_tau"]["up"] == pytest.approx(kendall_tau(preds["up"], want))
    assert res["kendall_tau"]["down"] == pytest.approx(-res["kendall_tau"]["up"])
    assert res["kendall_tau"]["precise score"] == pytest.approx(res["kendall_tau"]["up"])
    assert res["reliability_model"] == pytest.approx(predicted_reliability(noise, n, len(data.val)))
    stored = json.loads(Path(args.test_json).read_text())
    ((key, entry),) = stored["entries"].items()
    assert set(entry["counts"][archs[0].to_string()]) == {"4"} and entry["settings"]["eval_images"] == n
    assert key == predictor.precise_key(split="test") and key.startswith(predictor._supernet_name() + "|")
    with pytest.raises(PredictorError, match=r"predictor precise split: got 'train'; allowed: val, test"):
        predictor.precise(archs, 1, split="train")
    assert len(set(want)) > 1
