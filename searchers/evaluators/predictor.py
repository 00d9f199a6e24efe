"""``predictor``: accuracy predicted from the arch by a model fitted once to supernet evaluations.

    ev = get_evaluator("predictor", space="mobile-unified", samples=1000)   # + any supernet option
    ev.prepare()          # the supernet (trained or cached), its evaluations (collected or cached), the fit
    ev.evaluate(arch)     # ~0.1 ms: a searched arch costs what its latency does
    ev.predict_many(archs)
    ev.report             # held-out Kendall tau vs the supernet, tau vs the stand-alone ground truth

Once-for-All's accuracy predictor, over our archs.  ``prepare()``:

1. loads (or trains, as the ``supernet`` evaluator does) the space's supernet;
2. scores ``samples`` random archs of the space with it (archs the supernet covers, ``Supernet.sample``;
   one a second or two each), appending each to ``<cache>/predictors/<supernet>/evals.jsonl``: a
   killed collection resumes where it stopped, a larger ``samples`` extends it, and every later
   search reuses it;
3. fits the model (``model=gbr``: scikit-learn gradient-boosted trees, default; ``mlp``; ``ridge``)
   on the first ``samples`` of them, after measuring its Kendall tau on a held-out fifth (fitted on
   the other four fifths), and caches the fitted model by (supernet, evaluation settings, count,
   model, seed);
4. reports the tau against the stand-alone accuracies of ``benchmarks/data/standalone_fashion_mnist.csv``
   (the archs of this space and data set there), and the supernet's own tau on them for comparison.

Features (``arch_features``): the arch's choices as one-hot/numeric columns per *layer position* --
the supernet's own position keys (output size, stage, index), so that a layer sits in the same
columns in every arch that shares its weights -- with its block type, kernel, stride, activation and SE
one-hot, log2 widths and expansion numeric; the same choices again by *resolution stage* (output size
at 224) and index in it -- Once-for-All's encoding, stable when a width split moves a layer between
``position_keys``' stages -- with per-stage depth, width and sums of kernel, expansion, log2 mid
width, SE and h-swish layers; the stem's and head's choices; depth, block-type counts, log MACs and
log params at the data resolution; and the resolution.  ``retest`` measures how far the supernet's
own noise lets any predictor go (the tau ceiling); ``precise`` scores archs K times on the whole
validation split (cached counts) and ``precise_stats`` makes precise scores, their split-half
reliability and the noise's variance parts of them (benchmarks/predictor.py --precise).  Not ``Space.encode``'s code list:
encoding an arch of mobile-unified takes ~17 ms (its split rules), which alone would make a
10,000-candidate search take minutes; these features take ~2 ms and are the same choices.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pickle
import random
import sys
import time

from pathlib import Path

import numpy as np

from search_space.errors import field_error
from searchers.evaluators.base import Evaluator, EvaluatorError, UnknownOption, unknown_option

MODELS = ("gbr", "mlp", "ridge")
DEFAULT_SAMPLES = 1000
HOLDOUT = 0.2
FORMAT = 1        # of the collected evaluations (part of their folder's name)
MODEL_FORMAT = 2  # of a cached fitted model: 2 = the per-resolution-stage features
PRECISE_FORMAT = 1  # of the precise-score cache (PredictorEvaluator.precise)
PRECISE_BLOCK = 500  # validation images per stored count of a precise score
REPO = Path(__file__).resolve().parents[2]
STANDALONE_CSV = REPO / "benchmarks" / "data" / "standalone_fashion_mnist.csv"


class PredictorError(EvaluatorError):
    """A predictor option is wrong, or its collected evaluations do not fit."""


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------
def _log2(x) -> float:
    return math.log2(x) if x and x > 0 else 0.0


def arch_features(arch, resolution: int, num_classes: int = 10) -> dict[str, float]:
    """Named feature values of ``arch`` (missing names are 0)."""
    from search_space.profile import profile
    from searchers.supernet import position_keys

    if isinstance(resolution, (tuple, list)):
        resolution = int(resolution[0])
    f: dict[str, float] = {"resolution": float(resolution), "depth": float(len(arch.blocks))}
    st = arch.stem
    f["stem.out"] = _log2(st.out_ch)
    f[f"stem.act={st.act}"] = 1.0
    f[f"stem.k={st.kernel}"] = 1.0
    f["stem.pool"] = float(bool(st.pool))
    for key, b in zip(position_keys(arch), arch.blocks):
        p = key.rsplit(".", 1)[0]
        f[f"{p}.on"] = 1.0
        f[f"{p}.type={b.type}"] = 1.0
        f[f"{p}.k={b.kernel}"] = 1.0
        f[f"{p}.stride={b.stride}"] = 1.0
        f[f"{p}.act={b.act}"] = 1.0
        f[f"{p}.out"] = _log2(b.out_ch)
        f[f"{p}.in"] = _log2(b.in_ch)
        f[f"{p}.expand"] = b.mid_ch / b.in_ch if b.mid_ch and b.in_ch else 0.0
        f[f"{p}.se"] = b.se_ch / max(1, b.mid_ch or b.out_ch) if b.se_ch else 0.0
        f[f"{p}.skip"] = float(bool(b.residual))
        f[f"{p}.groups"] = _log2(b.groups)
        f[f"n.{b.type}"] = f.get(f"n.{b.type}", 0.0) + 1.0
        f[f"n.k{b.kernel}"] = f.get(f"n.k{b.kernel}", 0.0) + 1.0
        f[f"n.act={b.act}"] = f.get(f"n.act={b.act}", 0.0) + 1.0
        f["n.se"] = f.get("n.se", 0.0) + float(b.se_ch > 0)
    h = arch.head
    # the same choices grouped by output size (Once-for-All's encoding: the j-th layer of a resolution
    # stage, whatever the width splits that make ``position_keys``' stages), and per-stage sums
    count: dict[str, int] = {}
    for key, b in zip(position_keys(arch), arch.blocks):
        g = key.split(".", 1)[0]
        j = count.get(g, 0)
        count[g] = j + 1
        expand = b.mid_ch / b.in_ch if b.mid_ch and b.in_ch else 0.0
        q = f"{g}#{j}"
        f[f"{q}.on"] = 1.0
        f[f"{q}.k"] = float(b.kernel)
        f[f"{q}.e"] = expand
        f[f"{q}.se"] = float(b.se_ch > 0)
        f[f"{q}.hs"] = float(b.act == "hswish")
        f[f"{q}.out"] = _log2(b.out_ch)
        f[f"{g}.depth"] = j + 1.0
        f[f"{g}.width"] = _log2(b.out_ch)
        f[f"{g}.sum_k"] = f.get(f"{g}.sum_k", 0.0) + b.kernel
        f[f"{g}.sum_e"] = f.get(f"{g}.sum_e", 0.0) + expand
        f[f"{g}.sum_log_mid"] = f.get(f"{g}.sum_log_mid", 0.0) + _log2(b.mid_ch)
        f[f"{g}.n_se"] = f.get(f"{g}.n_se", 0.0) + float(b.se_ch > 0)
        f[f"{g}.n_hs"] = f.get(f"{g}.n_hs", 0.0) + float(b.act == "hswish")
    f["head.last"] = _log2(h.last_ch)
    f["head.hidden"] = _log2(h.hidden_ch)
    f[f"head.act={h.act}"] = 1.0
    f[f"head.classifier={h.classifier}"] = 1.0
    f["head.dropout"] = float(h.dropout)
    try:
        prof = profile(arch, resolution, num_classes)
        f["log_macs"] = math.log(max(1, prof["macs"]))
        f["log_params"] = math.log(max(1, prof["params"]))
    except Exception:  # noqa: BLE001 -- an arch that collapses at this resolution: no cost features
        pass
    return f


class Vectorizer:
    """Feature dicts -> a dense matrix over the names seen at fit time (others are dropped)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def fit(cls, dicts) -> "Vectorizer":
        return cls(sorted({k for d in dicts for k in d}))

    def transform(self, dicts) -> np.ndarray:
        X = np.zeros((len(dicts), len(self.names)), dtype=np.float32)
        idx = self.index
        for r, d in enumerate(dicts):
            for k, v in d.items():
                j = idx.get(k)
                if j is not None:
                    X[r, j] = v
        return X


def make_model(kind: str, seed: int):
    if kind == "gbr":
        from sklearn.ensemble import GradientBoostingRegressor

        # shallow trees, many of them: on 1000 evaluations of mobile-unified's first supernet (3 seeded
        # splits) depth 2 x 800 held out tau 0.374 vs 0.354 for depth 4 x 500 (fitted in 2/3 the time)
        return GradientBoostingRegressor(n_estimators=800, max_depth=2, learning_rate=0.02, subsample=0.7,
                                         min_samples_leaf=5, random_state=seed)
    if kind == "mlp":
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(256, 128), alpha=1e-2,
                                                            learning_rate_init=1e-3, max_iter=800,
                                                            early_stopping=True, random_state=seed))
    if kind == "ridge":
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12)))
    raise field_error(PredictorError, "predictor model", kind, MODELS)


def recipe_label(text: str) -> str:
    """A stand-alone training recipe (the CSV's JSON ``recipe``) in a few words: its epochs, images
    per epoch and batch size (the raw text when it is not such a JSON object)."""
    try:
        r = json.loads(text)
        return f"{r['epochs']} x {r['images_per_epoch']} images, batch {r['batch_size']}"
    except (ValueError, KeyError, TypeError):
        return text.strip() or "unknown recipe"


def kendall_tau(a, b) -> float:
    from scipy.stats import kendalltau

    if len(a) < 3:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def spearman_brown(r: float, factor: float = 2.0) -> float:
    """The reliability of a score ``factor`` times as long as two halves that correlate ``r``."""
    return factor * r / (1 + (factor - 1) * r) if r > -1 / max(factor - 1, 1e-12) else float("nan")


def tau_ceiling(reliability: float) -> float:
    """Kendall's tau of a noise-free predictor against a score of this reliability (Gaussian
    model: their correlation is sqrt(reliability), tau = 2/pi * arcsin of it)."""
    return 2 / math.pi * math.asin(math.sqrt(reliability)) if reliability > 0 else 0.0


def precise_stats(counts, block_sizes, predicted=None, default=None) -> dict:
    """The precise scores and their reliability from ``PredictorEvaluator.precise``'s counts
    (archs x K seeds x blocks; ``block_sizes``: the images of each block).

    * ``score``: per arch, the mean over the K seeds of top-1 on all the blocks' images.
    * ``split_half``: the first K/2 seeds on the first half of the blocks vs the other K/2 seeds on
      the other half (both noise sources apart): Pearson r, Kendall tau, and the Spearman-Brown
      reliability of the whole score 2r / (1 + r) (the primary figure; a little conservative: halving
      both seeds and images quadruples the seed x image interaction, not doubles it);
      ``split_half_calibration``: the same seed halves on all the images (calibration noise only).
    * ``tau_ceiling``: a noise-free predictor's tau against the precise score (from the primary reliability).
    * with ``predicted`` (per arch): its Kendall tau against the precise score; with ``default`` (one
      ordinary score per arch): its tau against the precise score, and the predictor's against it.
    * ``noise``: variance components (fractions squared) under an additive model -- ``calibration``: of
      one seed's score on all the images (pooled within-arch variance over seeds), its part that is the
      same on every image set (``calibration_shared``) and the seed-by-image interaction on all the
      images (``interaction``: from the seed-to-seed spread of the difference of the two image halves);
      ``images``: the image sampling noise of a score on all the images (from the variance across archs
      of the two halves' difference, less the interaction); ``true``: the variance across archs of the
      supernet's expected score (the precise scores' variance less their noise); ``reliability_model``:
      the precise score's reliability from these parts (``predicted_reliability``)."""
    from scipy.stats import pearsonr

    c = np.asarray(counts, dtype=np.float64)
    sizes = np.asarray(block_sizes, dtype=np.float64)
    if c.ndim != 3 or c.shape[2] != len(sizes):
        raise PredictorError(f"precise_stats: counts: got shape {c.shape}; allowed: (archs, seeds, {len(sizes)} blocks)")
    n, k, nb = c.shape
    acc = c.sum(2) / sizes.sum()                               # (archs, seeds)
    score = acc.mean(1)
    out: dict = {"n": n, "k": k, "images": int(sizes.sum()), "score": [float(x) for x in score],
                 "score_range": [float(score.min()), float(score.max())], "score_std": float(score.std(ddof=1))}
    if k >= 2 and nb >= 2 and n >= 3:
        h, hb = k // 2, nb // 2
        sa, sb = sizes[:hb].sum(), sizes[hb:].sum()
        first = (c[:, :h, :hb].sum(2) / sa).mean(1)
        second = (c[:, h:2 * h, hb:].sum(2) / sb).mean(1)
        r = float(pearsonr(first, second).statistic)
        out["split_half"] = {"pearson": r, "kendall_tau": kendall_tau(first, second),
                             "reliability": spearman_brown(r)}
        ca, cb = acc[:, :h].mean(1), acc[:, h:2 * h].mean(1)
        rc = float(pearsonr(ca, cb).statistic)
        out["split_half_calibration"] = {"pearson": rc, "kendall_tau": kendall_tau(ca, cb),
                                         "reliability": spearman_brown(rc)}
        out["tau_ceiling"] = tau_ceiling(out["split_half"]["reliability"])
        # variance components; effects common to every arch (a seed's batches, a half's images) rank
        # nothing and are removed (two-way residuals: arch x seed)
        def within(x):                      # pooled within-arch variance over seeds, seed means removed
            res = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
            return float((res ** 2).sum() / ((n - 1) * (k - 1)))

        calib = within(acc)
        half_a, half_b = c[:, :, :hb].sum(2) / sa, c[:, :, hb:].sum(2) / sb          # (archs, seeds)
        diff = half_a - half_b
        inter_diff = within(diff)
        # noise var on a set of m of the N images is var_all * N / m: the difference of the halves has
        # var_all * N^2 / (sa * sb) (interaction over seeds, image noise across archs)
        scale = sa * sb / (sa + sb) ** 2
        interaction = inter_diff * scale
        images = max(0.0, (float(diff.mean(1).var(ddof=1)) - inter_diff / k) * scale)
        true = float(score.var(ddof=1)) - calib / k - images
        out["noise"] = {"calibration": calib, "interaction": interaction,
                        "calibration_shared": max(0.0, calib - interaction), "images": images, "true": true}
        out["reliability_model"] = predicted_reliability(out["noise"], sa + sb, sa + sb, seeds=k)
    if predicted is not None:
        out["kendall_tau_predictor"] = kendall_tau(predicted, score)
    if default is not None:
        out["kendall_tau_default"] = kendall_tau(default, score)
        if predicted is not None:
            out["kendall_tau_predictor_vs_default"] = kendall_tau(predicted, default)
    return out


def predicted_reliability(noise: dict, images: int, all_images: int, seeds: int = 1, calibration: float | None = None,
                          interaction: float | None = None) -> float:
    """The reliability of a score on ``images`` validation images averaged over ``seeds`` calibration
    draws, from ``precise_stats``' variance components measured on ``all_images`` images (optionally
    those of another calibration setting: ``calibration`` and ``interaction`` of one seed on all images):
    true / (true + (shared calibration + interaction * all/images) / seeds + images noise * all/images)."""
    cal = noise["calibration"] if calibration is None else calibration
    inter = noise["interaction"] if interaction is None else interaction
    f = all_images / images
    err = (max(0.0, cal - inter) + inter * f) / seeds + noise["images"] * f
    t = noise["true"]
    return t / (t + err) if t > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------
class PredictorEvaluator(Evaluator):
    name = "predictor"

    def __init__(self, space=None, dataset="fashion-mnist", seed: int = 0, samples: int = DEFAULT_SAMPLES,
                 model: str = "gbr", cache_root: str | Path | None = None, supernet_path: str | Path | None = None,
                 progress: bool = True, log=None, standalone_csv: str | Path | None = None, rescore_top: int = 10,
                 **supernet_opts):
        super().__init__(space, dataset, seed)
        if self.space is None:
            raise PredictorError("predictor evaluator: space: got None; allowed: a space name, path or Space")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 10:
            raise field_error(PredictorError, "--eval-opt samples", samples, "an integer >= 10")
        if model not in MODELS:
            raise field_error(PredictorError, "--eval-opt model", model, MODELS)
        if not isinstance(rescore_top, int) or isinstance(rescore_top, bool) or rescore_top < 0:
            raise field_error(PredictorError, "--eval-opt rescore_top", rescore_top, "an integer >= 0")
        self.rescore_top = rescore_top   # a sweep pair's winner: the best of its top-k by the supernet's score
        from searchers.evaluators.supernet import SupernetEvaluator

        try:
            self.supernet_evaluator = SupernetEvaluator(space=self.space, dataset=dataset, seed=seed,
                                                        cache_root=cache_root, supernet_path=supernet_path,
                                                        progress=progress, log=log, **supernet_opts)
        except UnknownOption as exc:  # the predictor's own options beside its supernet's
            raise PredictorError(str(unknown_option("predictor evaluator", exc.key, [
                "samples", "model", "rescore_top", "standalone_csv", *exc.names]))) from None
        except EvaluatorError as exc:
            raise PredictorError(str(exc)) from None  # --eval-opt <key>: ..., as every evaluator says
        self.samples, self.kind = samples, model
        self.cache_root = Path(cache_root).expanduser() if cache_root else None
        self.progress, self.log = progress, log
        self.standalone_csv = Path(standalone_csv) if standalone_csv else STANDALONE_CSV
        self.model = None
        self.vectorizer: Vectorizer | None = None
        self.report: dict = {}
        self.supernet = None  # the supernet (for ``check``: archs it does not cover are not searched)
        self.dir: Path | None = None
        self.collect_s = 0.0

    def check_inputs(self) -> None:
        self.supernet_evaluator._data = self.data  # one data set in memory (as _prepare does)
        self.supernet_evaluator.check_inputs()

    # -- where things live ----------------------------------------------------------------------
    def _supernet_tag(self) -> str:
        """Names the supernet and the evaluation settings that make its accuracies."""
        sev = self.supernet_evaluator
        ev_settings = {k: getattr(sev.recipe, k) for k in ("calib_batches", "calib_batch_size", "eval_images")}
        ev_key = hashlib.sha1(json.dumps({"eval": ev_settings, "seed": self.seed, "data": self.data.key,
                                          "format": FORMAT}, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self._supernet_name()}-e{ev_key}"

    def _supernet_name(self) -> str:
        """Names the supernet: its cache folder's name, or its file's content hash."""
        sev = self.supernet_evaluator
        if sev.supernet_path is not None:
            h = hashlib.sha1()
            with open(sev.supernet_path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            base = f"{getattr(self.space, 'name', 'space')}-file-{h.hexdigest()[:16]}"
        else:
            from searchers.supernet import supernet_dir

            base = supernet_dir(self.space, self.data, sev.recipe, self.seed, sev.cache_root).name
        return base

    def _root(self) -> Path:
        from searchers.cli_common import cache_dir

        return (self.cache_root or cache_dir()) / "predictors"

    @property
    def evals_path(self) -> Path:
        return self.dir / "evals.jsonl"

    # -- prepare ----------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.data  # noqa: B018
        sev = self.supernet_evaluator
        sev._data = self.data  # one data set in memory
        sev.prepare()
        self.supernet = sev.supernet
        self.dir = self._root() / self._supernet_tag()
        self.dir.mkdir(parents=True, exist_ok=True)
        model_path = self.dir / f"model-{self.kind}-n{self.samples}-s{self.seed}.pkl"
        if model_path.is_file():
            try:
                state = pickle.loads(model_path.read_bytes())
                if state.get("format") == MODEL_FORMAT:
                    self.model, self.vectorizer, self.report = state["model"], Vectorizer(state["names"]), state["report"]
                    if state.get("standalone_csv") != self._csv_stamp():   # the ground truth changed since
                        self.report["standalone"] = self.standalone_report()
                        self._save_model(model_path)
                    self.report = {**self.report, "cached": str(model_path)}
                    return
            except Exception:  # noqa: BLE001 -- an unreadable cache entry is refitted
                pass
        rows = self.collect(self.samples)
        self.fit(rows)
        self.report["standalone"] = self.standalone_report()
        self._save_model(model_path)

    def _csv_stamp(self) -> str:
        """The stand-alone CSV's content hash: a cached model's stand-alone report is redone when it changed."""
        path = self.standalone_csv
        return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""

    def _save_model(self, model_path: Path) -> None:
        tmp = model_path.with_name(f".{model_path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps({"format": MODEL_FORMAT, "model": self.model, "names": self.vectorizer.names,
                                      "report": self.report, "standalone_csv": self._csv_stamp()}))
        os.replace(tmp, model_path)
        (self.dir / f"report-{self.kind}-n{self.samples}-s{self.seed}.json").write_text(json.dumps(self.report, indent=1))

    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)
        elif self.progress:
            print(msg, file=sys.stderr, flush=True)

    def read_evals(self) -> list[dict]:
        """The collected (arch, accuracy) rows, in collection order (a torn last line is dropped)."""
        rows, seen = [], set()
        if self.evals_path.is_file():
            for line in self.evals_path.read_text().splitlines():
                try:
                    r = json.loads(line)
                    arch, acc = str(r["arch"]), float(r["accuracy"])
                except (ValueError, KeyError, TypeError):
                    continue
                if arch not in seen:
                    seen.add(arch)
                    rows.append({"arch": arch, "accuracy": acc, "i": int(r.get("i", len(rows)))})
        return rows

    def collect(self, n: int) -> list[dict]:
        """At least ``n`` supernet evaluations of distinct random archs (resumes the cached file)."""
        from search_space.arch import Arch

        rows = self.read_evals()
        if len(rows) >= n:
            return rows[:n]
        sev = self.supernet_evaluator
        seen = {r["arch"] for r in rows}
        start = len(rows)
        self._say(f"predictor: collecting {n - start} supernet evaluations ({start} cached) in {self.evals_path}")
        bar = None
        if self.progress and self.log is None:
            from tqdm import tqdm

            bar = tqdm(total=n, initial=start, desc="predictor data", unit="arch", dynamic_ncols=True, file=sys.stderr)
        t0 = time.perf_counter()
        i = max([r["i"] for r in rows], default=-1) + 1
        if self.evals_path.is_file() and self.evals_path.stat().st_size:
            with open(self.evals_path, "rb") as f:     # a killed run may have left a torn last line:
                f.seek(-1, 2)                           # end it so the next row is not glued onto it
                torn = f.read(1) != b"\n"
            if torn:
                with open(self.evals_path, "a") as f:
                    f.write("\n")
        with open(self.evals_path, "a", buffering=1) as f:
            while len(rows) < n:
                rng = random.Random(f"predictor:{self.seed}:{i}")
                i += 1
                arch = sev.sample(rng)
                text = arch.to_string()
                if text in seen:
                    continue
                acc = float(sev.evaluate(Arch.from_string(text)))
                seen.add(text)
                rows.append({"arch": text, "accuracy": acc, "i": i - 1})
                f.write(json.dumps({"i": i - 1, "arch": text, "accuracy": acc, "s": round(sev.last_cost_s, 3)}) + "\n")
                if bar is not None:
                    bar.update(1)
                elif self.log is not None and len(rows) % 50 == 0:
                    self._say(f"predictor: {len(rows)}/{n} evaluations, {time.perf_counter() - t0:.0f} s")
        if bar is not None:
            bar.close()
        self.collect_s = time.perf_counter() - t0
        return rows[:n]

    def features(self, archs) -> list[dict]:
        res, nc = self.data.resolution, self.data.num_classes
        return [arch_features(a, res, nc) for a in archs]

    def fit(self, rows: list[dict]) -> None:
        from search_space.arch import Arch

        archs = [Arch.from_string(r["arch"]) for r in rows]
        y = np.array([r["accuracy"] for r in rows], dtype=np.float64)
        feats = self.features(archs)
        order = list(range(len(rows)))
        random.Random(f"predictor-split:{self.seed}").shuffle(order)
        k = max(1, int(round(HOLDOUT * len(rows))))
        test, train = order[:k], order[k:]
        t0 = time.perf_counter()
        vec = Vectorizer.fit([feats[i] for i in train])
        held = make_model(self.kind, self.seed).fit(vec.transform([feats[i] for i in train]), y[train])
        pred = held.predict(vec.transform([feats[i] for i in test]))
        from scipy.stats import spearmanr

        self.report = {
            "model": self.kind, "samples": len(rows), "train": len(train), "held_out": len(test),
            "kendall_tau_supernet": kendall_tau(pred, y[test]),
            "spearman_supernet": float(spearmanr(pred, y[test]).statistic),
            "mae_supernet": float(np.mean(np.abs(pred - y[test]))),
            "supernet_accuracy_range": [float(y.min()), float(y.max())],
            "supernet_accuracy_std": float(y.std()),
            "features": len(vec.names), "evals": str(self.evals_path),
        }
        self.vectorizer = Vectorizer.fit(feats)
        self.model = make_model(self.kind, self.seed).fit(self.vectorizer.transform(feats), y)
        self.report["fit_s"] = round(time.perf_counter() - t0, 2)
        self._say(f"predictor ({self.kind}, {len(rows)} supernet evaluations): held-out Kendall tau vs the "
                  f"supernet {self.report['kendall_tau_supernet']:.3f} on {len(test)} archs")

    def standalone_report(self) -> dict:
        """Tau of the predictor (and of the supernet) against the stand-alone accuracies of the archs of
        this space and data set in the stand-alone CSV (its ``accuracy_test``), one ranking per
        training recipe (its whole ``recipe`` column: accuracies of different recipes are not
        comparable), each arch once, at the mean over the training seeds it has rows for.
        The top-level figures are those of the recipe with the most archs (then seeds); ``by_recipe`` has all
        (keyed by ``recipe_label``, with ``#2``... where two recipes share a label)."""
        from search_space.arch import Arch

        path = self.standalone_csv
        if not path.is_file():
            return {"n": 0, "note": f"{path} not found"}
        groups: dict[str, dict[str, list[float]]] = {}    # recipe JSON -> arch string -> accuracy per seed
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("dataset") not in (None, "", self.data.name):
                    continue
                try:
                    a = Arch.from_string(row["arch"])
                    if self.supernet is not None and not self.supernet.fits(a):
                        continue
                    acc = float(row.get("accuracy_test") or row.get("accuracy") or "nan")
                except Exception:  # noqa: BLE001 -- a row of another space or format
                    continue
                if math.isfinite(acc):
                    groups.setdefault(row.get("recipe") or "", {}).setdefault(a.to_string(), []).append(acc)
        usable = {}
        for rj, per_arch in sorted(groups.items(), key=lambda kv: (-len(kv[1]), -max(map(len, kv[1].values())))):
            if len(per_arch) >= 3:
                label, k = recipe_label(rj), 2
                while label in usable:
                    label, k = f"{recipe_label(rj)} #{k}", k + 1
                usable[label] = ([Arch.from_string(t) for t in per_arch],
                                 [sum(v) / len(v) for v in per_arch.values()],
                                 max(len(v) for v in per_arch.values()))
        if not usable:
            return {"n": max((len(v) for v in groups.values()), default=0), "csv": str(path),
                    "note": "fewer than 3 archs of this space/data set per training recipe"}
        sup_of: dict[str, float] = {}

        def sup(a) -> float:
            t = a.to_string()
            if t not in sup_of:
                sup_of[t] = float(self.supernet_evaluator.evaluate(a))
            return sup_of[t]

        by = {}
        for label, (archs, truth, seeds) in usable.items():
            pred = self.predict_many(archs)
            sp = [sup(a) for a in archs]
            by[label] = {"n": len(archs), "seeds_max": seeds, "kendall_tau_predictor": kendall_tau(pred, truth),
                         "kendall_tau_supernet": kendall_tau(sp, truth),
                         "kendall_tau_predictor_vs_supernet": kendall_tau(pred, sp)}
        head = next(iter(by))
        return {**by[head], "recipe": head, "csv": str(path), "by_recipe": by}

    def retest(self, archs, progress: bool = False, first: list[float] | None = None) -> dict:
        """How well *any* function of the arch can rank the supernet's scores: each arch scored a
        second time, on the next ``eval_images`` validation images with the calibration batches of
        seed + 1 (the two sources of a score's noise).  Returns both score lists, the test-retest
        Kendall tau and Pearson r, and the tau a noise-free predictor would reach against one noisy
        score, estimated under a Gaussian model: the correlation of the noise-free score with one
        noisy score is sqrt(r), and tau = 2/pi * arcsin(correlation)."""
        from dataclasses import replace

        from searchers.data import Split
        from searchers.supernet import evaluate_subnet

        self.prepare()
        sev = self.supernet_evaluator
        n, val = sev.recipe.eval_images, self.data.val
        if not isinstance(val, Split) or len(val) < 2 * n:
            raise PredictorError(f"predictor retest: validation split: got {len(val)} images "
                                 f"({type(val).__name__}); allowed: an in-memory split of at least {2 * n} "
                                 f"(twice eval_images)")
        other = replace(self.data, val=replace(val, x=val.x[n:2 * n], y=val.y[n:2 * n]))
        archs = list(archs)
        if first is not None and len(first) != len(archs):
            raise PredictorError(f"predictor retest: first: got {len(first)} scores; allowed: one per arch ({len(archs)})")
        known = list(first) if first is not None else None
        first, second = [], []
        it = archs
        if progress:
            from tqdm import tqdm

            it = tqdm(archs, desc="retest", unit="arch", file=sys.stderr, dynamic_ncols=True)
        for i, a in enumerate(it):
            first.append(float(known[i]) if known is not None else float(sev.evaluate(a)))
            second.append(float(evaluate_subnet(sev.supernet, a, other, sev.recipe, self.seed + 1, sev.device)))
        r = float(np.corrcoef(first, second)[0, 1]) if len(archs) >= 3 else float("nan")
        ceiling = 2 / math.pi * math.asin(math.sqrt(r)) if r > 0 else 0.0
        return {"n": len(first), "first": first, "second": second, "kendall_tau": kendall_tau(first, second),
                "pearson": r, "tau_ceiling": ceiling}

    def precise_key(self, calib_batches: int | None = None, split: str = "val") -> str:
        """Names a precise-score protocol: the supernet, the data set, the whole scored split (the
        validation split, or ``test``), the calibration batches per score (default: the recipe's) and
        their size, the block size (not the recipe's default ``eval_images``: these scores do not
        depend on it)."""
        self.prepare()
        sev = self.supernet_evaluator
        b = calib_batches or sev.recipe.calib_batches
        return (f"{self._supernet_name()}|{self.data.key}|{split}{len(getattr(self.data, split))}"
                f"|calib{b}x{sev.recipe.calib_batch_size}|block{PRECISE_BLOCK}")

    def precise(self, archs, k: int = 4, calib_batches: int | None = None, cache: str | Path | None = None,
                progress: bool = False, split: str = "val", seed: int | None = None) -> np.ndarray:
        """Each arch scored ``k`` times by the supernet on the *whole* validation split (``split="test"``:
        the test split, for a check no label has seen), with the calibration batches of seeds
        ``seed .. seed + k - 1`` (``seed``: default the evaluator's; ``calib_batches`` of the recipe's
        size each; default: the recipe's count).  Returns the correct counts per block of ``PRECISE_BLOCK``
        validation images, shape (archs, k, blocks) (``precise_stats`` makes the scores).  ``cache``: a
        JSON file of such counts (keyed by ``precise_key``, then arch, then seed), read first and
        written after each arch, so a killed run resumes and a later one reuses them."""
        from dataclasses import replace

        from searchers.supernet import evaluate_subnet_correct

        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise field_error(PredictorError, "predictor precise k", k, "an integer >= 1")
        if calib_batches is not None and (not isinstance(calib_batches, int) or isinstance(calib_batches, bool)
                                          or calib_batches < 1):
            raise field_error(PredictorError, "predictor precise calib_batches", calib_batches, "an integer >= 1")
        if split not in ("val", "test"):
            raise field_error(PredictorError, "predictor precise split", split, ["val", "test"])
        self.prepare()
        sev = self.supernet_evaluator
        data = self.data if split == "val" else replace(self.data, val=self.data.test)  # scored: data.val
        n_val = len(data.val)
        recipe = replace(sev.recipe, eval_images=n_val, calib_batches=calib_batches or sev.recipe.calib_batches)
        key = self.precise_key(recipe.calib_batches, split)
        path = Path(cache) if cache else None
        store = {"format": PRECISE_FORMAT, "entries": {}}
        if path is not None and path.is_file():
            try:
                store = json.loads(path.read_text())
            except ValueError:
                raise PredictorError(f"predictor precise cache: {path} is not JSON; allowed: a file written by "
                                     f"PredictorEvaluator.precise (or a new path)") from None
            if store.get("format") != PRECISE_FORMAT:
                raise field_error(PredictorError, f"predictor precise cache {path} format", store.get("format"),
                                  [PRECISE_FORMAT])
        entry = store["entries"].setdefault(key, {"settings": {
            "eval_images": n_val, "calib_batches": recipe.calib_batches, "calib_batch_size": recipe.calib_batch_size,
            "block": PRECISE_BLOCK, "data": self.data.key}, "counts": {}})
        counts = entry["counts"]
        archs = list(archs)
        seeds = [(self.seed if seed is None else seed) + s for s in range(k)]
        todo = [a for a in archs if any(str(s) not in counts.get(a.to_string(), {}) for s in seeds)]
        it = todo
        if progress and todo:
            from tqdm import tqdm

            it = tqdm(todo, desc=f"precise scores (k={k}, calib {recipe.calib_batches})", unit="arch",
                      file=sys.stderr, dynamic_ncols=True)
        for a in it:
            sev.supernet.check(a)
            have = counts.setdefault(a.to_string(), {})
            for s in seeds:
                if str(s) not in have:
                    right = evaluate_subnet_correct(sev.supernet, a, data, recipe, s, sev.device)
                    have[str(s)] = [int(b.sum()) for b in right.split(PRECISE_BLOCK)]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(store, indent=None, separators=(",", ":")))
                os.replace(tmp, path)
        return np.array([[counts[a.to_string()][str(s)] for s in seeds] for a in archs], dtype=np.int64)

    # -- evaluation ---------------------------------------------------------------------------------
    def predict_many(self, archs) -> np.ndarray:
        if self.model is None:
            self.prepare()
        X = self.vectorizer.transform(self.features(list(archs)))
        return np.clip(self.model.predict(X), 0.0, 1.0)

    def _evaluate(self, arch) -> float:
        return float(self.predict_many([arch])[0])

    def evaluate_many(self, archs) -> list[float]:
        self.prepare()
        t0 = time.perf_counter()
        out = [float(x) for x in self.predict_many(archs)]
        self.total_cost_s += time.perf_counter() - t0
        self.n_evals += len(out)
        return out

    def check(self, arch) -> None:
        """Archs the supernet does not cover (reduced-scale supernets) are not scored."""
        self.prepare()
        self.supernet.check(arch)

    def sample(self, rng):
        return self.supernet_evaluator.sample(rng)

    def search_space(self):
        """The part of the space the supernet covers (its scope): searches draw from it."""
        fn = getattr(self.supernet_evaluator, "search_space", None)
        return fn() if callable(fn) else self.space

    def extract(self, arch):
        return self.supernet_evaluator.extract(arch)

    def rescore(self, arch) -> float:
        """The supernet's accuracy of ``arch`` (what the prediction stands for)."""
        return float(self.supernet_evaluator.evaluate(arch))
