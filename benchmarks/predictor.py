"""The accuracy predictor: its rank correlation, and searches in seconds (issue: searches in seconds).

    python benchmarks/predictor.py [--space mobile-unified] [--supernet PATH/supernet.pt] [--samples 1000]
                                   [--target pixel-cpu] [--budget 60ms] [--candidates 10000] [--compare 300]
                                   [--retest 100] [--top 10] [--precise 4 --precise-archs 100]
                                   [--calib-variants 4,8 --variant-archs 50] [--cost 10]
                                   [--variants all] [--whole-labels [--whole-json PATH]] [--test-target]

1. The predictor (``get_evaluator("predictor")``): collects ``--samples`` supernet evaluations once
   (cached, resumable) and fits; prints its held-out Kendall tau against the supernet (goal >= 0.8)
   and against the stand-alone accuracies of benchmarks/data/standalone_fashion_mnist.csv, with the
   supernet's own tau there for comparison; and the held-out tau of each model kind on the same data.
   The ceiling (``--retest``): that many held-out archs scored again by the supernet on the next
   validation images with other calibration batches (``PredictorEvaluator.retest``): the test-retest
   tau, and the tau a noise-free predictor would reach against one noisy score.
2. Speed: one (target, budget) search of ``--candidates`` candidates with the predictor
   (``searchers.sweep.FastSearch``); goal: under 30 s on this machine.
3. Quality: the winners' supernet accuracy.  A supernet-evaluated search of ``--candidates``
   evaluations is not affordable here (1-2 s each), so the comparison is at ``--compare``
   evaluations: aging evolution with the supernet evaluator (``searchers.evolve.Evolution``, the same
   population/tournament) vs the predictor's search of the same length, and the predictor's
   ``--candidates`` search, each winner re-scored by the supernet.  Goal: within 0.5 points.  Also
   the best of the predictor's ``--top`` candidates by the supernet's score (``--top`` supernet
   evaluations more: ``searchers.sweep.pick_by_rescore``).  ``--candidates 0`` skips 2 and 3.
4. The predictor against a *precise* supernet score (``--precise K``), protocol declared before
   measuring (2026-11-29, session 4):
   - archs: the first ``--precise-archs`` (100) of the held-out fifth, in its split order (the same
     archs as ``--retest``'s); the predictor is the one of part 1's held-out tau (``--model``, fitted
     on the other four fifths' cached default scores, unchanged; it never saw these archs);
   - precise score of an arch = the mean of K (4) supernet scores, each top-1 on the *whole*
     validation split (5,000 images for Fashion-MNIST) after BN re-estimation on the recipe's
     calibration batches (2 x 128) of seeds 0..K-1 (``PredictorEvaluator.precise``; counts per
     500-image block cached in ``--precise-json``, resumable);
   - its reliability: split-half, seeds {0..K/2-1} on the first half of the images vs seeds
     {K/2..K-1} on the second half (both noise sources apart), Spearman-Brown corrected (primary);
     and the calibration-only split half (same seed halves, all images);
   - reported: the predictor's Kendall tau vs the precise score (goal >= 0.8), vs the one default
     score of evals.jsonl (as part 1), the default score's tau vs the precise score (it shares seed 0's
     calibration and 2,000 of the images: optimistic), and the noise-free ceiling vs the precise score
     (2/pi asin sqrt(reliability)).  No refit on precise labels (their cost: K x 2.5 s per training arch).
5. Less noisy defaults (``--calib-variants B,..``): the first ``--variant-archs`` (50) of those archs
   scored on the whole split with B calibration batches, seeds 0 and 1; with part 4's variance
   components (``precise_stats``' ``noise``: calibration, seed x image interaction, image sampling,
   true) the predicted reliability / test-retest tau / noise-free predictor's tau vs one score of
   each (scored images, calibration batches) setting.  ``--cost N``: one evaluation's time (median
   wall and CPU over the first N of the archs, each arch in every setting in turn, after one untimed
   warm-up per setting) for 2,000 vs the whole
   split x 2/4/8 calibration batches, BN folding on/off and scored batches of 500/1000/2500, and
   whether folding changed any image's verdict.
6. Model/feature variants (``--variants all`` or a comma list of ``VARIANTS``; needs ``--precise K``),
   protocol declared before measuring (docs/search.md, session 6): each variant's 5-fold
   cross-validated Kendall tau (``--cv-folds``, repeated with ``--cv-seeds`` fold seeds; the mean over
   all folds) on the *training* archs of part 1's split only (their cached default scores); the
   variant with the highest CV tau is refitted on all of them and scored ONCE against part 4's
   precise scores (and the held-out default scores).
7. Less noisy labels (``--whole-labels``; needs ``--precise K``): each training arch scored once on
   the *whole* validation split, calibration seed 0 (``PredictorEvaluator.precise`` with k=1, cached
   per 500-image block in ``--whole-json``, resumable; ~1.5 s CPU an arch); part 6's CV on these
   labels, its best variant (primary) and the default ``gbr`` (secondary) fitted on them and scored
   against part 4's precise scores and the held-out default scores.
8. An image-independent target (``--test-target``; needs ``--whole-labels``): part 4's archs scored once
   on the data set's *test* split (calibration seed ``--test-seed``, 4: a draw no label uses; cached in
   ``--test-json``); the tau against it of the default gbr and part 6's pick (default labels), part 7's
   pick and gbr (whole-split labels), of the precise and default scores themselves, and a noise-free
   predictor's ceiling for it (from part 4's variance parts).  Nothing is selected on it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    import latency_models
    from search_space.space import load_space
    from searchers.cli_common import SearchSettings, parse_budget
    from searchers.evaluators import get_evaluator
    from searchers.evaluators.predictor import MODELS, Vectorizer, kendall_tau, make_model
    from searchers.outputs import machine, versions
    from searchers.reward import Reward
    from searchers.sweep import FastSearch, _admissible, _verifier, pick_by_rescore, sample_pool

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mobile-unified")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--supernet", help="a trained supernet.pt (default: the space's cached one, trained if missing)")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--model", default="gbr", choices=MODELS)
    p.add_argument("--target", default="pixel-cpu")
    p.add_argument("--budget", default="60ms")
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--compare", type=int, default=300, help="length of the supernet-evaluated search (0: skip)")
    p.add_argument("--retest", type=int, default=100, help="held-out archs scored again for the noise ceiling (0: skip)")
    p.add_argument("--top", type=int, default=10, help="the predictor's top candidates re-scored by the supernet (0: skip)")
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--sample-size", dest="sample_size", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precise", type=int, default=0, metavar="K",
                   help="part 4: held-out archs scored K times on the whole validation split (0: skip)")
    p.add_argument("--precise-archs", dest="precise_archs", type=int, default=100)
    p.add_argument("--precise-json", dest="precise_json",
                   default=str(Path(__file__).resolve().parent / "data" / "predictor_precise_mobile-unified.json"))
    p.add_argument("--calib-variants", dest="calib_variants", default="",
                   help="part 5: calibration batch counts scored with seeds 0 and 1, e.g. 4,8 (needs --precise)")
    p.add_argument("--variant-archs", dest="variant_archs", type=int, default=50)
    p.add_argument("--cost", type=int, default=0, help="part 5: archs timed per evaluation setting (0: skip)")
    p.add_argument("--variants", default="", help="part 6: model/feature variants by CV ('all' or a comma list; needs --precise)")
    p.add_argument("--cv-folds", dest="cv_folds", type=int, default=5)
    p.add_argument("--cv-seeds", dest="cv_seeds", type=int, default=2)
    p.add_argument("--whole-labels", dest="whole_labels", action="store_true",
                   help="part 7: the training archs scored on the whole validation split, then fitted (needs --precise)")
    p.add_argument("--whole-json", dest="whole_json",
                   default=str(Path(__file__).resolve().parent / "data" / "predictor_wholesplit_mobile-unified.json"))
    p.add_argument("--test-target", dest="test_target", action="store_true",
                   help="part 8: the held-out archs scored on the test split, an image-independent target (needs --whole-labels)")
    p.add_argument("--test-seed", dest="test_seed", type=int, default=4)
    p.add_argument("--test-json", dest="test_json",
                   default=str(Path(__file__).resolve().parent / "data" / "predictor_testsplit_mobile-unified.json"))
    p.add_argument("--json", default="runs/bench-predictor/predictor.json")
    args = p.parse_args(argv)
    for name in ("precise", "precise_archs", "variant_archs", "cost", "retest", "top", "compare", "candidates"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')}: got {getattr(args, name)}; allowed: an integer >= 0")
    # precise_stats needs two halves of the K scores and at least 3 archs for its split-half figures
    if args.precise == 1:
        p.error(f"--precise: got {args.precise}; allowed: 0 (off) or an integer >= 2")
    for name in ("precise_archs", "variant_archs"):
        if args.precise and getattr(args, name) < 3:
            p.error(f"--{name.replace('_', '-')}: got {getattr(args, name)}; allowed: an integer >= 3")
    try:
        variants = [int(v) for v in args.calib_variants.split(",") if v.strip()]
        if any(v < 1 for v in variants):
            raise ValueError
    except ValueError:
        p.error(f"--calib-variants: got {args.calib_variants!r}; allowed: a comma list of positive integers, e.g. 4,8")
    if variants and not args.precise:
        p.error("--calib-variants: needs --precise K (its variance components)")
    if args.variants.strip() in ("", "all"):
        model_variants = list(VARIANTS) if args.variants.strip() == "all" else []
    else:
        model_variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in model_variants if v not in VARIANTS]
        if bad or not model_variants:
            p.error(f"--variants: got {args.variants!r}; allowed: all, or a comma list of {', '.join(VARIANTS)}")
    for name in ("cv_folds", "cv_seeds"):
        if getattr(args, name) < (2 if name == "cv_folds" else 1):
            p.error(f"--{name.replace('_', '-')}: got {getattr(args, name)}; allowed: an integer >= "
                    f"{2 if name == 'cv_folds' else 1}")
    if args.test_target and not args.whole_labels:
        p.error("--test-target: needs --whole-labels (its predictors)")
    if (model_variants or args.whole_labels) and not args.precise:
        p.error(f"--{'variants' if model_variants else 'whole-labels'}: needs --precise K (the held-out precise scores)")

    t_all = time.perf_counter()
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M %Z')}; {versions()}", flush=True)
    space, model = load_space(args.space), latency_models.load(args.target)
    budget = parse_budget(args.budget)
    reward = Reward.make(budget, "soft")
    opts = {"supernet_path": args.supernet} if args.supernet else {}
    ev = get_evaluator("predictor", space=space, dataset=args.dataset, seed=args.seed, samples=args.samples,
                       model=args.model, **opts)
    t = time.perf_counter()
    ev.prepare()
    rep = ev.report
    out = {"args": vars(args), "machine": machine(), "versions": versions(), "predictor": rep,
           "prepare_s": round(time.perf_counter() - t, 1)}
    st = rep.get("standalone", {})
    print(f"predictor ({rep['model']}) on {rep['samples']} supernet evaluations ({ev.evals_path}):")
    print(f"  held-out Kendall tau vs the supernet: {rep['kendall_tau_supernet']:.3f} on {rep['held_out']} archs "
          f"(Spearman {rep['spearman_supernet']:.3f}, MAE {100 * rep['mae_supernet']:.2f} points; supernet "
          f"accuracies {100 * rep['supernet_accuracy_range'][0]:.1f}-{100 * rep['supernet_accuracy_range'][1]:.1f}%, "
          f"std {100 * rep['supernet_accuracy_std']:.2f}) -> goal >= 0.8: "
          f"{'MET' if rep['kendall_tau_supernet'] >= 0.8 else 'NOT MET'}")
    if st.get("by_recipe"):
        for label, g in st["by_recipe"].items():
            print(f"  vs the stand-alone accuracies ({g['n']} archs of {Path(st['csv']).name} trained {label}): "
                  f"predictor tau {g['kendall_tau_predictor']:.3f}, supernet tau {g['kendall_tau_supernet']:.3f}, "
                  f"predictor vs supernet on them {g['kendall_tau_predictor_vs_supernet']:.3f}")
    else:
        print(f"  vs the stand-alone accuracies: {st.get('note', 'n/a')}")

    # every model kind on the same split
    import random

    import numpy as np

    from search_space.arch import Arch

    rows = ev.read_evals()[:args.samples]
    archs = [Arch.from_string(r["arch"]) for r in rows]
    y = np.array([r["accuracy"] for r in rows])
    feats = ev.features(archs)
    order = list(range(len(rows)))
    random.Random(f"predictor-split:{args.seed}").shuffle(order)
    k = max(1, int(round(0.2 * len(rows))))
    test, train = order[:k], order[k:]
    vec = Vectorizer.fit([feats[i] for i in train])
    kinds, fitted = {}, {}
    for kind in MODELS:
        t = time.perf_counter()
        m = make_model(kind, args.seed).fit(vec.transform([feats[i] for i in train]), y[train])
        fitted[kind] = m
        tau = kendall_tau(m.predict(vec.transform([feats[i] for i in test])), y[test])
        kinds[kind] = {"kendall_tau_supernet": tau, "fit_s": round(time.perf_counter() - t, 1)}
        print(f"  model {kind:5s}: held-out tau {tau:.3f} (fit {kinds[kind]['fit_s']:.1f} s)", flush=True)
    out["models"] = kinds

    if args.retest:
        held = test[:args.retest]
        t = time.perf_counter()
        rt = ev.retest([archs[i] for i in held], progress=True, first=[float(y[i]) for i in held])
        rt["s"] = round(time.perf_counter() - t, 1)
        out["retest"] = rt
        print(f"  noise ceiling ({rt['n']} held-out archs scored again on the next {ev.supernet_evaluator.recipe.eval_images} "
              f"validation images, calibration seed +1): test-retest tau {rt['kendall_tau']:.3f} (Pearson "
              f"{rt['pearson']:.3f}) -> a noise-free predictor's tau vs one score ~{rt['tau_ceiling']:.3f}; this "
              f"predictor {rep['kendall_tau_supernet']:.3f}", flush=True)

    if args.precise:
        out["precise"] = precise_part(args, ev, [archs[i] for i in test[:args.precise_archs]],
                                      fitted[args.model].predict(vec.transform([feats[i] for i in test[:args.precise_archs]])),
                                      [float(y[i]) for i in test[:args.precise_archs]], variants)
    if model_variants or args.whole_labels:
        held = test[:args.precise_archs]
        precise = out["precise"]
        Xtr, Xte = vec.transform([feats[i] for i in train]), vec.transform([feats[i] for i in held])
        ydef = [float(y[i]) for i in held]
        if model_variants:
            out["variants"] = variants_part(args, model_variants, Xtr, y[train], Xte, precise, ydef, vec.names,
                                            "cached default scores")
        if args.whole_labels:
            t = time.perf_counter()
            n_val = len(ev.data.val)
            counts = ev.precise([archs[i] for i in train], 1, cache=args.whole_json, progress=True)
            yw = counts.sum(axis=(1, 2)) / n_val
            print(f"whole-split labels: {len(train)} training archs scored once on all {n_val} validation images "
                  f"(calibration seed {args.seed}) in {time.perf_counter() - t:.0f} s ({args.whole_json}); their tau vs "
                  f"the default scores {kendall_tau(yw, y[train]):.3f}", flush=True)
            res = variants_part(args, model_variants or ["gbr"], Xtr, yw, Xte, precise, ydef, vec.names,
                                "whole-split scores", also=["gbr"])
            res["label_tau_vs_default"] = kendall_tau(yw, y[train])
            out["whole_labels"] = res
            if args.test_target:
                preds = {}
                if "variants" in out:
                    for name, h in out["variants"]["held_out"].items():
                        preds[f"{name}, default labels"] = h["predicted"]
                if "gbr, default labels" not in preds:
                    preds["gbr, default labels"] = list(fitted["gbr"].predict(Xte))
                for name, h in res["held_out"].items():
                    preds[f"{name}, whole-split labels"] = h["predicted"]
                out["test_target"] = test_target_part(args, ev, [archs[i] for i in held], preds, precise, ydef)
    if args.cost:
        out["cost"] = cost_part(ev, [archs[i] for i in test[:args.cost]])
    if not args.candidates:
        return finish(out, args, t_all)

    # speed: one search of --candidates with the predictor, in the part of the space the supernet covers
    space = ev.search_space() or space
    admissible = _admissible(ev)
    t = time.perf_counter()
    pool = sample_pool(space, max(args.population, 200), args.seed, admissible)
    lat = [float(x) for x in model.predict_many(pool.archs)]
    pool_s = time.perf_counter() - t
    t = time.perf_counter()
    fs = FastSearch(space, model, ev, reward, 224, args.population, args.sample_size, args.seed, admissible,
                    verify=_verifier(ev))
    fs.run(args.candidates, pool, lat, budget)
    win = fs.winner(budget)
    hist = fs.history
    search_s = time.perf_counter() - t
    print(f"search: {len(hist)} candidates with the predictor in {search_s:.1f} s (+ {pool_s:.1f} s for the "
          f"first-population pool, once per sweep) -> goal < 30 s: {'MET' if search_s < 30 else 'NOT MET'}; "
          f"parts: " + ", ".join(f"{k} {v:.1f}" for k, v in fs.timing.items()), flush=True)
    out["search"] = {"candidates": len(hist), "search_s": round(search_s, 2), "pool_s": round(pool_s, 2),
                     "rejected_by_supernet": len(fs.rejected),
                     "timing": {k: round(v, 2) for k, v in fs.timing.items()}}

    def rescore(c):
        return float(ev.rescore(c.arch))

    res = {"predictor_full": {"n": len(hist), "arch": win.text, "latency_ms": win.latency_ms,
                              "predicted": win.accuracy, "supernet": rescore(win)}}
    if args.top:
        t = time.perf_counter()
        best, scores = pick_by_rescore(fs.top(budget, args.top), ev.rescore, reward, budget)
        res[f"predictor_full_top{args.top}"] = {
            "n": len(hist) + len(scores), "arch": best.text, "latency_ms": best.latency_ms, "supernet": best.accuracy,
            "rescored": scores, "rescore_s": round(time.perf_counter() - t, 1)}
    if args.compare:
        short = FastSearch(space, model, ev, reward, 224, args.population, args.sample_size, args.seed, admissible,
                           verify=_verifier(ev))
        short.run(args.compare, pool, lat, budget)
        w = short.winner(budget)
        h = short.history
        res["predictor_short"] = {"n": len(h), "arch": w.text, "latency_ms": w.latency_ms, "predicted": w.accuracy,
                                  "supernet": rescore(w)}
        from searchers.evolve import Context, Evolution, probe_budget
        from searchers.records import Records

        s = SearchSettings(target=args.target, budget_ms=budget, space=args.space, evaluator="supernet",
                           trials=args.compare, population=args.population, sample_size=args.sample_size,
                           seed=args.seed)
        ctx = Context(s, space, model, reward, "bench-predictor", Path("/nonexistent"), ":memory:",
                      evaluator=ev.supernet_evaluator)
        records, _ = Records.open(ctx.study_name, ":memory:", space, s.identity(), resume=False, searcher="evolve")
        t = time.perf_counter()
        evo = Evolution(ctx, records, 0, shared=False, board=None, progress=False,
                        seeds=probe_budget(ctx, args.seed).feasible)
        from tqdm import tqdm

        with tqdm(total=args.compare, desc="supernet-evaluated search", unit="arch", file=sys.stderr) as bar:
            evo.run(bar)
        from searchers.records import best_record

        b = best_record(records.complete(), budget)
        res["supernet_search"] = {"n": len(records.complete()), "arch": b.arch, "latency_ms": b.latency_ms,
                                  "supernet": b.accuracy, "search_s": round(time.perf_counter() - t, 1)}
    out["quality"] = res
    print(f"winners (target {args.target}, budget {budget:g} ms, soft reward), accuracy by the supernet:")
    for name, r in res.items():
        extra = f", predicted {100 * r['predicted']:.2f}%" if "predicted" in r else ""
        print(f"  {name:20s} {r['n']:6d} evaluations: supernet {100 * r['supernet']:.2f}% at {r['latency_ms']:.1f} ms{extra}")
    if "supernet_search" in res:
        ref = res["supernet_search"]["supernet"]
        for name in [k for k in res if k.startswith("predictor")]:
            d = round(100 * (res[name]["supernet"] - ref), 6)  # scores are k/eval_images: no float residue at the line
            print(f"  goal: {name} within 0.5 points of the supernet-evaluated search of {args.compare}: "
                  f"{d:+.2f} points -> {'MET' if d >= -0.5 else 'NOT MET'}")
    return finish(out, args, t_all)


_POS = re.compile(r"^o\d+\.s\d+\.\d+\.")      # a layer position's columns (position_keys)
_RES = re.compile(r"^o\d+#\d+\.")             # a resolution stage's j-th layer's columns


def feature_set(names, which: str) -> list[int]:
    """Column indices of a feature set: ``all``; ``compact`` (per-stage and whole-net sums, stem, head,
    no per-layer columns); ``perpos`` (the per-layer columns only, and the resolution)."""
    if which == "all":
        return list(range(len(names)))
    per = [bool(_POS.match(n) or _RES.match(n)) for n in names]
    if which == "compact":
        return [i for i, p in enumerate(per) if not p]
    if which == "perpos":
        return [i for i, (n, p) in enumerate(zip(names, per)) if p or n == "resolution"]
    raise ValueError(which)


class _ZMean:
    """The mean of several regressors' predictions, each standardized by its training predictions."""

    def __init__(self, makers):
        self.makers = makers

    def fit(self, X, y):
        self.models = [m().fit(X, y) for m in self.makers]
        self.stats = []
        for m in self.models:
            p = m.predict(X)
            self.stats.append((float(p.mean()), float(p.std()) or 1.0))
        self.mu, self.sd = float(y.mean()), float(y.std()) or 1.0
        return self

    def predict(self, X):
        import numpy as np

        z = np.mean([(m.predict(X) - a) / b for m, (a, b) in zip(self.models, self.stats)], axis=0)
        return self.mu + self.sd * z


def variant_model(name: str, seed: int, names: list[str]):
    """(feature-set column indices, an unfitted regressor) of a declared variant (docs/search.md, session 6)."""
    import numpy as np
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, HistGradientBoostingRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    from sklearn.svm import SVR

    from searchers.evaluators.predictor import make_model

    def gbr(**kw):
        base = dict(n_estimators=800, max_depth=2, learning_rate=0.02, subsample=0.7, min_samples_leaf=5,
                    random_state=seed)
        return GradientBoostingRegressor(**{**base, **kw})

    def hgb(monotone):
        cols = feature_set(names, "all")
        cst = [1 if names[i] in ("log_macs", "log_params") else 0 for i in cols] if monotone else None
        return HistGradientBoostingRegressor(max_iter=800, learning_rate=0.02, max_leaf_nodes=4, min_samples_leaf=10,
                                             l2_regularization=1.0, monotonic_cst=cst, early_stopping=False,
                                             random_state=seed)

    def gp():
        k = ConstantKernel(1.0) * RBF(length_scale=10.0, length_scale_bounds=(1e-1, 1e4)) + WhiteKernel(0.5)
        return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel=k, normalize_y=True, random_state=seed))

    def ridge():
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))

    table = {
        "gbr": ("all", lambda: make_model("gbr", seed)),
        "gbr-depth3": ("all", lambda: gbr(max_depth=3)),
        "gbr-slow": ("all", lambda: gbr(n_estimators=1600, learning_rate=0.01)),
        "hgb": ("all", lambda: hgb(False)),
        "hgb-monotone": ("all", lambda: hgb(True)),
        "gbr-compact": ("compact", lambda: make_model("gbr", seed)),
        "gbr-perpos": ("perpos", lambda: make_model("gbr", seed)),
        "ridge-pairs-compact": ("compact", lambda: make_pipeline(StandardScaler(), PolynomialFeatures(2, include_bias=False),
                                                                 StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))),
        "gp": ("all", gp),
        "svr": ("all", lambda: make_pipeline(StandardScaler(), TransformedTargetRegressor(
            regressor=SVR(C=1.0, epsilon=0.1, gamma="scale"), transformer=StandardScaler()))),
        "extra-trees": ("all", lambda: ExtraTreesRegressor(n_estimators=500, max_features=0.3, min_samples_leaf=3,
                                                           random_state=seed, n_jobs=1)),
        "mean-gbr-gp-ridge": ("all", lambda: _ZMean([lambda: make_model("gbr", seed), gp, ridge])),
    }
    if name not in table:
        raise ValueError(name)
    which, make = table[name]
    return feature_set(names, which), make()


VARIANTS = ("gbr", "gbr-depth3", "gbr-slow", "hgb", "hgb-monotone", "gbr-compact", "gbr-perpos",
            "ridge-pairs-compact", "gp", "svr", "extra-trees", "mean-gbr-gp-ridge")


def cv_variants(X, y, names, variants=VARIANTS, folds=5, seeds=(0, 1), seed=0, log=print) -> dict:
    """Each variant's k-fold cross-validated Kendall tau on (X, y): per fold seed, ``folds`` folds;
    the mean over all folds, its standard error, and the fit time."""
    import time

    import numpy as np
    from sklearn.model_selection import KFold

    from searchers.evaluators.predictor import kendall_tau

    out = {}
    for name in variants:
        taus, t = [], time.perf_counter()
        for fs in seeds:
            for tr, te in KFold(folds, shuffle=True, random_state=fs).split(X):
                cols, m = variant_model(name, seed, names)
                m.fit(X[tr][:, cols], y[tr])
                taus.append(kendall_tau(m.predict(X[te][:, cols]), y[te]))
        out[name] = {"cv_tau": float(np.mean(taus)), "se": float(np.std(taus, ddof=1) / np.sqrt(len(taus))),
                     "folds": [float(x) for x in taus], "s": round(time.perf_counter() - t, 1)}
        log(f"  CV {name:20s} tau {out[name]['cv_tau']:.3f} +- {out[name]['se']:.3f} ({out[name]['s']:.0f} s)")
    return out


def variants_part(args, names_, Xtr, ytr, Xte, precise, ydef, cols, labels, also=()) -> dict:
    """Parts 6 and 7: every variant's CV tau on (Xtr, ytr); the best one (and ``also``) refitted on all of
    them and scored against the precise scores of the held-out archs (``precise``: part 4's stats) and
    their default scores ``ydef``."""
    import numpy as np

    from searchers.evaluators.predictor import kendall_tau

    Xtr, ytr, Xte = np.asarray(Xtr, np.float64), np.asarray(ytr, np.float64), np.asarray(Xte, np.float64)
    print(f"model variants on the {len(ytr)} training archs' {labels} ({args.cv_folds}-fold CV x {args.cv_seeds} "
          f"fold seeds, Kendall tau of out-of-fold predictions):", flush=True)
    cv = cv_variants(Xtr, ytr, cols, names_, args.cv_folds, tuple(range(args.cv_seeds)), args.seed,
                     log=lambda m: print(m, flush=True))
    best = max(cv, key=lambda k: cv[k]["cv_tau"])
    held = {}
    for name in [best] + [a for a in also if a != best]:
        c, m = variant_model(name, args.seed, cols)
        m.fit(Xtr[:, c], ytr)
        p = m.predict(Xte[:, c])
        held[name] = {"kendall_tau_precise": kendall_tau(p, precise["score"]), "kendall_tau_default": kendall_tau(p, ydef),
                      "predicted": [float(v) for v in p]}
        print(f"  {'chosen' if name == best else 'also  '} {name} (fitted on {labels}): tau vs the precise score "
              f"{held[name]['kendall_tau_precise']:.3f} -> goal >= 0.8: "
              f"{'MET' if held[name]['kendall_tau_precise'] >= 0.8 else 'NOT MET'}; vs the held-out default scores "
              f"{held[name]['kendall_tau_default']:.3f} ({len(ydef)} archs)", flush=True)
    return {"labels": labels, "cv": cv, "chosen": best, "held_out": held}


def test_target_part(args, ev, archs, preds: dict, precise: dict, ydef) -> dict:
    """Part 8: ``archs`` scored once on the test split (calibration seed ``args.test_seed``), and every
    prediction's (and the precise and default scores') Kendall tau against that score."""
    from searchers.evaluators.predictor import kendall_tau, predicted_reliability, tau_ceiling

    t = time.perf_counter()
    counts = ev.precise(archs, 1, cache=args.test_json, progress=True, split="test", seed=args.test_seed)
    n = len(ev.data.test)
    target = [float(v) for v in counts.sum(axis=(1, 2)) / n]
    rel = predicted_reliability(precise["noise"], n, len(ev.data.val))
    res = {"n": len(archs), "images": n, "calib_seed": args.test_seed, "s": round(time.perf_counter() - t, 1),
           "target": target, "reliability_model": rel, "tau_ceiling": tau_ceiling(rel),
           "kendall_tau": {name: kendall_tau(p, target) for name, p in preds.items()}}
    res["kendall_tau"]["precise score"] = kendall_tau(precise["score"], target)
    res["kendall_tau"]["default score"] = kendall_tau(ydef, target)
    print(f"image-independent target: {len(archs)} held-out archs scored once on the {n} test images (calibration "
          f"seed {args.test_seed}; {args.test_json}); a noise-free predictor's tau vs it ~{res['tau_ceiling']:.3f} "
          f"(reliability {rel:.3f} from part 4's parts)")
    for name, tau in res["kendall_tau"].items():
        print(f"  {name:40s} tau vs the test-image score {tau:.3f}", flush=True)
    return res


def finish(out: dict, args, t_all: float) -> int:
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(f"{out['wall_s']:.0f} s in all; {args.json}")
    return 0


SETTINGS = [(2000, 2), (2000, 4), (2000, 8), (0, 2), (0, 4), (0, 8)]     # (scored images (0: all), calib batches)


def precise_part(args, ev, archs, predicted, default, variants) -> dict:
    """Part 4 (and 5's noise): the predictor against the precise scores of ``archs``."""
    from searchers.evaluators.predictor import PRECISE_BLOCK, precise_stats, predicted_reliability, tau_ceiling

    n_val = len(ev.data.val)
    sizes = [min(PRECISE_BLOCK, n_val - i) for i in range(0, n_val, PRECISE_BLOCK)]
    t = time.perf_counter()
    counts = ev.precise(archs, args.precise, cache=args.precise_json, progress=True)
    st = precise_stats(counts, sizes, predicted, default)
    st["s"] = round(time.perf_counter() - t, 1)
    st["archs"] = [a.to_string() for a in archs]
    st["predicted"], st["default"] = [float(v) for v in predicted], list(default)
    sh, shc = st["split_half"], st["split_half_calibration"]
    print(f"precise scores: {st['n']} held-out archs x {st['k']} scores (all {st['images']} validation images, "
          f"calibration {ev.supernet_evaluator.recipe.calib_batches} x {ev.supernet_evaluator.recipe.calib_batch_size}, "
          f"seeds 0..{st['k'] - 1}), {100 * st['score_range'][0]:.2f}-{100 * st['score_range'][1]:.2f}%, "
          f"std {100 * st['score_std']:.2f} points ({args.precise_json})")
    print(f"  reliability: split half (seeds and images apart) r {sh['pearson']:.3f} -> Spearman-Brown "
          f"{sh['reliability']:.3f} (halves' tau {sh['kendall_tau']:.3f}); calibration only r {shc['pearson']:.3f} "
          f"-> {shc['reliability']:.3f}; a noise-free predictor's tau vs the precise score ~{st['tau_ceiling']:.3f}")
    print(f"  predictor ({args.model}, fitted on the cached default scores of the other archs): tau vs the precise "
          f"score {st['kendall_tau_predictor']:.3f} -> goal >= 0.8: "
          f"{'MET' if st['kendall_tau_predictor'] >= 0.8 else 'NOT MET'}; vs one default score "
          f"{st['kendall_tau_predictor_vs_default']:.3f}; the default score vs the precise one {st['kendall_tau_default']:.3f}")
    nz = st["noise"]
    print("  noise (points^2): " + ", ".join(f"{k} {1e4 * v:.4f}" for k, v in nz.items()), flush=True)
    noise_of = {ev.supernet_evaluator.recipe.calib_batches: {"archs": st["n"], **nz}}
    for b in variants:
        m = min(args.variant_archs, len(archs))
        cv = ev.precise(archs[:m], 2, calib_batches=b, cache=args.precise_json, progress=True)
        vs = precise_stats(cv, sizes)["noise"]
        base = precise_stats(counts[:m, :2], sizes)["noise"]      # the recipe's batches, same archs and seeds
        noise_of[b] = {"archs": m, **vs, "recipe_batches_same_archs": base}
        print(f"  calibration {b} x {ev.supernet_evaluator.recipe.calib_batch_size} ({m} archs, seeds 0, 1): "
              f"calibration noise {1e4 * vs['calibration']:.4f} (interaction {1e4 * vs['interaction']:.4f}) vs "
              f"{1e4 * base['calibration']:.4f} ({1e4 * base['interaction']:.4f}) with "
              f"{ev.supernet_evaluator.recipe.calib_batches} on the same archs and seeds", flush=True)
    table = []
    for images, b in SETTINGS:
        if b not in noise_of:
            continue
        n_img = images or n_val
        v = noise_of[b]
        rel = predicted_reliability(nz, n_img, n_val, 1, v["calibration"], v["interaction"])
        table.append({"eval_images": n_img, "calib_batches": b, "reliability": rel, "test_retest_tau":
                      2 / math.pi * math.asin(max(-1.0, min(1.0, rel))), "noise_free_tau_vs_one_score": tau_ceiling(rel)})
        print(f"  one score of {n_img} images, calibration {b}: reliability {rel:.3f} -> test-retest tau "
              f"{table[-1]['test_retest_tau']:.3f}, a noise-free predictor's tau vs it {tau_ceiling(rel):.3f}")
    st["noise_by_calib"] = noise_of
    st["settings"] = table
    return st


def cost_part(ev, archs) -> dict:
    """One evaluation's wall and CPU seconds per setting (median over ``archs``), BN folding and batch
    size: every setting's images prepared first (untimed), then each arch evaluated in every setting
    in turn (so a change of the machine's load falls on all settings alike)."""
    import statistics
    from dataclasses import replace

    import searchers.supernet as S

    sev = ev.supernet_evaluator
    n_val = len(ev.data.val)
    runs = [(img, b, True, 500) for img, b in SETTINGS] + [(2000, 2, False, 500), (0, 2, False, 500),
                                                             (0, 2, True, 1000), (0, 2, True, 2500)]
    S.EVAL_IMAGES_CACHED = max(S.EVAL_IMAGES_CACHED, len(runs))
    recipes = [replace(sev.recipe, eval_images=img or n_val, calib_batches=b) for img, b, _, _ in runs]
    for (img, b, fold, batch), recipe in zip(runs, recipes):     # warm-up: the images of every setting
        S.EVAL_BATCH = batch
        S.evaluate_subnet(sev.supernet, archs[0], ev.data, recipe, ev.seed, fold=fold)
    wall, cpu, verdicts = [[] for _ in runs], [[] for _ in runs], {}
    load = os.getloadavg()
    for a in archs:
        for j, ((img, b, fold, batch), recipe) in enumerate(zip(runs, recipes)):
            S.EVAL_BATCH = batch
            t, c = time.perf_counter(), time.process_time()
            right = S.evaluate_subnet_correct(sev.supernet, a, ev.data, recipe, ev.seed, fold=fold)
            wall[j].append(time.perf_counter() - t)
            cpu[j].append(time.process_time() - c)
            if batch == 500 and b == 2:
                verdicts.setdefault((img, a.to_string()), {})[fold] = right
    S.EVAL_BATCH = 500
    res = []
    for j, (img, b, fold, batch) in enumerate(runs):
        res.append({"eval_images": img or n_val, "calib_batches": b, "fold_bn": fold, "batch": batch,
                    "median_s": statistics.median(wall[j]), "max_s": max(wall[j]),
                    "median_cpu_s": statistics.median(cpu[j])})
        print(f"  cost: {img or n_val} images, calibration {b} x {sev.recipe.calib_batch_size}, fold {fold}, batch "
              f"{batch}: median {res[-1]['median_s']:.2f} s wall (max {res[-1]['max_s']:.2f}), "
              f"{res[-1]['median_cpu_s']:.2f} s CPU over {len(archs)} archs", flush=True)
    differ = sum(int((v[True] != v[False]).sum()) for v in verdicts.values() if len(v) == 2)
    scored = sum(len(v[True]) for v in verdicts.values() if len(v) == 2)
    print(f"  BN folding changed {differ} of {scored} images' verdicts; load average before {load[0]:.2f}, after "
          f"{os.getloadavg()[0]:.2f} (1 torch thread)")
    return {"runs": res, "fold_changed_verdicts": differ, "fold_compared_images": scored,
            "load_before": load, "load_after": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
