"""The predictor's arch encoding (per resolution stage) and its noise ceiling (``retest``), on a tiny
supernet and toy data.  Its real numbers on mobile-unified come from benchmarks/predictor.py."""
from __future__ import annotations

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
