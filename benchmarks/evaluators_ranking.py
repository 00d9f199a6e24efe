"""Ranking quality and cost of the accuracy evaluators on archs sampled from a space.

For ``--n`` archs sampled (seeded by ``--seed``) from ``--space``:
  * ground truth: stand-alone short training with one fixed recipe (``--gt-recipe``, one of
    ``GT_RECIPES``; default ``32k``) and each of the training seeds ``--train-seeds``, top-1 on the
    Fashion-MNIST test split (and the validation split), appended row by row to
    ``benchmarks/data/standalone_<dataset>.csv`` (reused by later benchmarks; rows are keyed by arch,
    recipe and training seed and are not retrained).  The ground truth is the mean over the training
    seeds; the report gives the seed-to-seed tau (how far the ground truth itself repeats);
  * ``supernet``: the cached supernet of the space (trained with its default recipe if missing), one
    evaluation per arch with the recipe's settings (BN recalibration + scored validation images);
  * ``proxy``: naswot, synflow and gradnorm at initialisation;
  * baselines: MACs and parameters at the data resolution.
Kendall's tau of each score against the stand-alone test accuracy, costs and the machine go to
``benchmarks/data/evaluators_ranking_<space>.json``.

    python benchmarks/evaluators_ranking.py --space mobile-unified --n 20 --part standalone --train-seeds 0
    python benchmarks/evaluators_ranking.py --space mobile-unified --n 20 --part standalone --train-seeds 1
    python benchmarks/evaluators_ranking.py --space mobile-unified --n 20 --part supernet
    python benchmarks/evaluators_ranking.py --space mobile-unified --n 20 --part report   # proxies + tau
    python benchmarks/evaluators_ranking.py --space mobile-unified --n 20 --part variants # eval settings
    python benchmarks/evaluators_ranking.py --part agreement --sample stratified-macs --epochs 4 --tag T
        --train-seeds 0,1,2,3,4,5,6,7 --checkpoints run1=PATH1,run2=PATH2   # runs of one recipe (one line)
(``--part all`` runs everything in one process.)  ``--part agreement`` scores several training runs of one
supernet recipe under 6 evaluation settings and reports how far their rankings repeat and how each ranks
against the ground truth (``supernet_run_agreement_<space>_<tag>.json``; docs/evaluators.md, session 12).

Samples (``--sample``, ``SAMPLERS``): ``uniform`` (sessions 1-3, sample seed 0: 20 archs that spread over
only 3.9-7.9 MMACs at 32x32 and 85.6-87.6%, seed-to-seed tau 0.14) and ``stratified-macs`` (session 4).
Several samplers, comma-separated, give their union and a report per sample and for the union.

Session-4 protocol (declared 2026-11-29 before any of its archs was trained):
  * archs: ``--sample stratified-macs``, sample seed 1 (``DEFAULT_SAMPLE_SEED``), ``--n 20``: a pool of
    2,000 draws of the scope ``mobile-unified/mbconv`` (``SAMPLE_POOL``), its range of log MACs at 32x32
    cut into 20 equal strata, the pool arch nearest each stratum's centre (the pool: 2.6-11.1 MMACs, the
    sample: 2.6-10.7; the old sample: 3.9-7.9);
  * ground truth: recipe "32k", training seeds 0 then 1 (one job, 1 thread), rows appended to
    ``standalone_fashion_mnist.csv``; the ground truth is the mean of the two seeds;
  * scores: the cached default supernet (not retrained) with the evaluator's default settings, the three
    proxies, MACs and params as baselines;
  * figures: Kendall's tau and Spearman's rho of each score against the 2-seed mean on the new 20, the old
    20 (``uniform``, seed 0) and the union of the 40, and the seed-to-seed tau of each; all reported,
    met or not (goal: supernet tau >= 0.6), tag ``s4``::

    python benchmarks/evaluators_ranking.py --sample stratified-macs --part standalone --train-seeds 0,1
    python benchmarks/evaluators_ranking.py --sample uniform,stratified-macs --part supernet --tag s4
    python benchmarks/evaluators_ranking.py --sample uniform,stratified-macs --part report --tag s4
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from search_space.profile import profile  # noqa: E402
from search_space.space import load_space  # noqa: E402
from searchers.data import load_dataset  # noqa: E402
from searchers.training import Recipe, train_arch  # noqa: E402

DATA_DIR = ROOT / "benchmarks" / "data"
FIELDS = ["arch", "space", "dataset", "seed", "accuracy_test", "accuracy_val", "train_seconds", "steps",
          "macs", "params", "recipe", "device"]   # device: where it trained, cpu or "cuda (<GPU>)"; rows before
                                                   # session 9 (all cpu) gained the column later


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# Arch samplers (``--sample``).  "uniform": ``n`` distinct draws of the scope (sessions 1-3: sample seed 0).
# "stratified-macs" (session 4): draw a pool of SAMPLE_POOL scope archs, split the pool's range of log MACs
# (at the data resolution) into ``n`` equal strata and take, stratum by stratum, the pool arch nearest to
# the stratum's centre (not taken yet).  Why not the pool's MAC quantiles: 20 quantiles (i + 0.5) / 20 span
# the 2.5th-97.5th percentiles, hardly more than 20 uniform draws (whose extremes fall near the 5th / 95th).
SAMPLERS = ("uniform", "stratified-macs")
SAMPLE_POOL = 2000
DEFAULT_SAMPLE_SEED = {"stratified-macs": 1}     # uniform: --seed (0), the sessions 1-3 sample


def sample_source(space):
    """The Space the benchmark samples: the supernet's scope (``searchers.supernet.SCOPES``) for a
    space that has one, else the space itself."""
    from searchers.supernet import default_recipe, scope_space

    recipe = default_recipe(space)
    return scope_space(recipe.scope) if recipe.scope else space


def sample_archs(space, n: int, seed: int, data=None, method: str = "uniform", pool: int = SAMPLE_POOL,
                 resolution=None, num_classes: int | None = None):
    """``n`` distinct archs that the space's supernet can score (for mobile-unified, archs of its scope
    ``mobile-unified/mbconv``, drawn stage by stage by the scope space; otherwise of the space), with
    ``method`` (``SAMPLERS``): "uniform" draws; "stratified-macs" spread over the range of MACs at
    ``resolution`` (default: the data's, else 32x32) of ``pool`` draws (see ``SAMPLERS``), in ascending
    MACs.  Deterministic given ``seed``."""
    if method not in SAMPLERS:
        raise ValueError(f"sample: got {method!r}; allowed: {', '.join(SAMPLERS)}")
    src = sample_source(space)
    rng = random.Random(seed)
    if method == "uniform":
        out, seen = [], set()
        while len(out) < n:
            a = src.sample(rng)
            if a.to_string() not in seen:
                seen.add(a.to_string())
                out.append(a)
        return out
    res = resolution or (data.resolution if data is not None else 32)
    ncls = num_classes or (data.num_classes if data is not None else 10)
    cand: dict[str, object] = {}
    for _ in range(pool):
        a = src.sample(rng)
        cand.setdefault(a.to_string(), a)
    if len(cand) < n:
        raise ValueError(f"sample: a pool of {pool} draws holds only {len(cand)} distinct archs; need n={n}")
    items = sorted((math.log(profile(a, res, ncls)["macs"]), s) for s, a in cand.items())
    lo, hi = items[0][0], items[-1][0]
    free = list(range(len(items)))
    out = []
    for i in range(n):
        centre = lo + (i + 0.5) / n * (hi - lo)
        j = min(free, key=lambda k: (abs(items[k][0] - centre), k))
        free.remove(j)
        out.append(j)
    return [cand[items[j][1]] for j in sorted(out)]


# Stand-alone recipes of the ranking benchmark (``--gt-recipe``); rows of every recipe stay in the CSV.
# "5k" (sessions 1-2): 1 epoch of 5,120 training images in batches of 32 (160 SGD steps), scored on
#   2,000 test / 2,000 validation images.  Its seed-to-seed tau was only 0.34 over the 20 archs: the
#   accuracies (77-82%) were mostly noise (binomial s.e. of a 2,000-image score alone is 0.9 points).
# "32k" (session 3, the default): 1 epoch of 32,000 images in batches of 64 (500 steps, 6x the images),
#   label smoothing 0.1, precise BN on 4 x 256 images, scored on the whole test (10,000) and validation
#   (5,000) splits (s.e. 0.4 points); ~2-4 minutes per arch of the supernet's scope in NHWC at 1 thread
#   on this 2-core VM, so 20 archs x 2 seeds fit in about 45 minutes on two cores.
GT_RECIPES = {
    "5k": Recipe(epochs=1, images_per_epoch=5120, batch_size=32, eval_images=2000, precise_bn=2),
    "32k": Recipe(epochs=1, images_per_epoch=32000, batch_size=64, label_smoothing=0.1, eval_images=10000,
                  precise_bn=4),
}
RANKING_RECIPE = GT_RECIPES["32k"]


def standalone_path(dataset: str) -> Path:
    return DATA_DIR / f"standalone_{dataset.replace('-', '_')}.csv"


def read_standalone(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def ground_truth(path: Path, recipe: Recipe, seeds, archs=None) -> tuple[dict, dict]:
    """(mean, per_seed): the stand-alone test accuracy of each arch, mean over the training ``seeds``
    (only archs trained with all of them), and ``{seed: {arch: accuracy}}``.  ``archs`` (strings)
    restricts both to those archs."""
    rj = json.dumps(recipe.to_dict(), sort_keys=True)
    per_seed = {int(s): {} for s in seeds}
    for r in read_standalone(path):
        if r["recipe"] == rj and int(r["seed"]) in per_seed and (archs is None or r["arch"] in archs):
            per_seed[int(r["seed"])][r["arch"]] = float(r["accuracy_test"])
    common = set.intersection(*(set(d) for d in per_seed.values())) if per_seed else set()
    mean = {a: sum(d[a] for d in per_seed.values()) / len(per_seed) for a in common}
    return mean, per_seed


def seed_to_seed(per_seed: dict) -> dict:
    """Kendall's tau between every two training seeds on the archs both trained."""
    from itertools import combinations

    from scipy.stats import kendalltau

    out = {}
    for s1, s2 in combinations(sorted(per_seed), 2):
        both = sorted(set(per_seed[s1]) & set(per_seed[s2]))
        if len(both) >= 3:
            t = kendalltau([per_seed[s1][a] for a in both], [per_seed[s2][a] for a in both])[0]
            out[f"{s1}-{s2}"] = {"tau": round(float(t), 3), "n": len(both)}
    return out


def claim(s: str, rjson: str, seed: int) -> bool:
    """Workers share the arch list: the first to create the claim file trains the arch."""
    import hashlib
    import tempfile

    d = Path(tempfile.gettempdir()) / "edgenas_ranking_claims"
    d.mkdir(exist_ok=True)
    key = hashlib.sha256(f"{s}|{rjson}|{seed}".encode()).hexdigest()[:20]
    path = d / key
    try:                                   # a claim whose worker is gone (killed) is stale: take it over
        pid = int(path.read_text() or 0)
        os.kill(pid, 0)
        return pid == os.getpid()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        path.unlink(missing_ok=True)
    except PermissionError:
        return False
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def device_label(device) -> str:
    """How a row names where it trained: ``cpu``, or ``cuda (<GPU name>)``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return dev.type


def migrate_standalone(path: Path) -> None:
    """Rows written before the ``device`` column (session 9) all trained on a CPU: add it as ``cpu``."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], list(reader)
    if header == FIELDS:
        return
    if header != FIELDS[:-1]:
        raise SystemExit(f"error: {path}: header {header}; allowed: {FIELDS} (or the same without device)")
    for r in rows:
        r["device"] = "cpu"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def run_standalone(space, archs, data, seed: int, log, recipe: Recipe, device: str = "cpu") -> None:
    """Train every arch stand-alone with ``recipe`` and training seed ``seed`` on ``device``; one CSV row
    each.  A row done on either device counts as done (a seed is one draw of the recipe wherever it ran)."""
    path = standalone_path(data.name)
    migrate_standalone(path)
    rjson = json.dumps(recipe.to_dict(), sort_keys=True)
    label = device_label(device)
    for i, arch in enumerate(archs):
        s = arch.to_string()
        done = {(r["arch"], r["recipe"], r["seed"]) for r in read_standalone(path)}   # other workers' rows too
        if (s, rjson, str(seed)) in done or not claim(s, rjson, seed):
            continue
        model, stats = train_arch(arch, data, recipe, seed=seed, split="test", device=device)
        from searchers.training import accuracy

        val = accuracy(model, data.val, limit=recipe.eval_images)
        prof = profile(arch, data.resolution, data.num_classes)
        row = {"arch": s, "space": space.name, "dataset": data.name, "seed": seed,
               "accuracy_test": f"{stats['accuracy']:.4f}", "accuracy_val": f"{val:.4f}",
               "train_seconds": f"{stats['seconds']:.1f}", "steps": stats["steps"], "macs": prof["macs"],
               "params": prof["params"], "recipe": rjson, "device": label}
        new = not path.is_file()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
        log(f"[standalone seed {seed} {i + 1}/{len(archs)}] test {stats['accuracy']:.4f} val {val:.4f} "
            f"{stats['seconds']:.0f}s macs {prof['macs'] / 1e6:.1f}M")


def tagged(stem: str, space, tag: str = "") -> Path:
    """``benchmarks/data/<stem>_<space>[_<tag>].json``: a tag keeps another supernet's files apart."""
    return DATA_DIR / f"{stem}_{space.name}{'_' + tag if tag else ''}.json"


def run_supernet(space, archs, data, seed: int, log, checkpoint: str | None = None, tag: str = "",
                 device: str = "cpu") -> dict:
    """Score the archs with the (cached, else trained) supernet, or with a training checkpoint."""
    from searchers.evaluators import get_evaluator

    ev = get_evaluator("supernet", space=space, dataset=data, seed=seed, progress=False, log=log,
                       supernet_path=checkpoint, device=device)
    ev.prepare()
    step, recipe, seconds = None, ev.recipe.__dict__, getattr(ev.supernet, "train_seconds", ev.prepare_cost_s)
    if checkpoint:  # a checkpoint's own recipe and training time, not the evaluator's default recipe
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        step, recipe = state.get("step"), state.get("recipe", recipe)
        seconds = state.get("train_seconds", state.get("seconds", seconds))
    info = {"checkpoint": checkpoint, "checkpoint_step": step,
            "trained_now": ev.trained_now, "prepare_seconds": round(ev.prepare_cost_s, 1),
            "train_seconds": round(seconds, 1),
            "params": ev.supernet.num_params(), "recipe": recipe, "eval_recipe": ev.recipe.__dict__,
            "device": device_label(device), "scores": {}, "eval_seconds": {}}  # eval_recipe: the evaluation settings scored with (BN, images)
    for i, a in enumerate(archs):
        acc = ev.evaluate(a)
        info["scores"][a.to_string()] = acc
        info["eval_seconds"][a.to_string()] = round(ev.last_cost_s, 3)
        log(f"[supernet {i + 1}/{len(archs)}] {acc:.4f} in {ev.last_cost_s:.2f}s")
    tagged("supernet_scores", space, tag).write_text(json.dumps(info, indent=1))
    return info


def _log_probs(model, calib: list, xv: torch.Tensor) -> torch.Tensor:
    """``model``'s log-probabilities on ``xv`` (batches of 500) after its BatchNorm statistics are reset and
    re-estimated (cumulative average) on the ``calib`` batches."""
    with torch.inference_mode():
        for b in model.modules():
            if isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
                b.reset_running_stats()
                b.momentum = None
        model.train()
        for x in calib:
            model(x)
        model.eval()
        return torch.cat([model(xv[j:j + 500]) for j in range(0, len(xv), 500)]).log_softmax(1)


def run_variants(space, archs, data, seed: int, log, recipe: Recipe, train_seeds=(0,),
                 checkpoint: str | None = None, tag: str = "") -> dict:
    """How the supernet's ranking depends on the evaluation settings (not its training): for 1, 2 and 4
    BN-calibration batches of 128 and the first 300 / 600 / 1,000 / 2,000 / 5,000 (all) scored validation images,
    Kendall's tau against the stand-alone accuracy of top-1, of the mean probability of the true class
    and of the mean log-likelihood.  Written to ``supernet_eval_variants_<space>[_<tag>].json``."""
    from scipy.stats import kendalltau

    from searchers.evaluators import get_evaluator

    mean, _ = ground_truth(standalone_path(data.name), recipe, train_seeds)
    keep = [a for a in archs if a.to_string() in mean]
    truth = [mean[a.to_string()] for a in keep]
    ev = get_evaluator("supernet", space=space, dataset=data, seed=seed, progress=False, log=log,
                       supernet_path=checkpoint)
    ev.prepare()
    net = ev.supernet
    g = torch.Generator().manual_seed(int(seed))
    calib = [x for x, _ in data.train.batches(128, shuffle=True, generator=g, limit=4 * 128)]
    xv, yv = data.val.batch(torch.arange(min(5000, len(data.val))))
    out = {"space": space.name, "n_archs": len(keep), "machine": machine(), "tau": {}, "checkpoint": checkpoint,
           "ground_truth": {"recipe": recipe.to_dict(), "train_seeds": list(train_seeds), "accuracy": truth},
           "archs": [a.to_string() for a in keep], "scores": {}}     # scores: per setting, per arch (archs' order)
    for ncal in (1, 2, 4):
        logp = []
        for a in keep:
            logp.append(_log_probs(net.extract(a), calib[:ncal], xv))
        for n in (300, 600, 1000, 2000, 5000):
            top1 = [float((lp[:n].argmax(1) == yv[:n]).float().mean()) for lp in logp]
            ll = [lp[:n].gather(1, yv[:n, None]) for lp in logp]
            sc = {"top1": top1, "p_true": [float(v.exp().mean()) for v in ll], "loglik": [float(v.mean()) for v in ll]}
            t = {k: kendalltau(v, truth)[0] for k, v in sc.items()}
            out["scores"][f"calib{ncal}x128_scored{n}"] = {k: [round(x, 5) for x in v] for k, v in sc.items()}
            out["tau"][f"calib{ncal}x128_scored{n}"] = {k: round(float(v), 3) for k, v in t.items()}
            log(f"[variants] calib {ncal}x128, {n} scored: {out['tau'][f'calib{ncal}x128_scored{n}']}")
    tagged("supernet_eval_variants", space, tag).write_text(json.dumps(out, indent=1))
    return out


AGREE_CALIB = (2, 4, 8)          # BN re-estimation batches of 128 training images (the default: 2)
AGREE_IMAGES = (2000, 5000)      # scored validation images (the default: 2,000; the split has 5,000)
AGREE_METRICS = ("top1", "loglik")
AGREE_DEFAULT = "calib2x128_scored2000"


def _agree_settings() -> list[str]:
    return [f"calib{c}x128_scored{n}" for c in AGREE_CALIB for n in AGREE_IMAGES]


def score_run_settings(space, archs, data, seed: int, log, checkpoint: str) -> dict:
    """One supernet's scores of ``archs`` under every setting of ``AGREE_CALIB`` x ``AGREE_IMAGES``:
    top-1 and the mean log-likelihood of the true class (``loglik``), each arch inheriting its weights,
    its BatchNorm statistics re-estimated (reset, cumulative average) on the first ``c`` of 8 seeded
    batches of 128 training images (the evaluator's own draw: its 2 are the first 2), the first ``n``
    validation images scored.  Returns ``{setting: {metric: [score per arch]}}``."""
    from searchers.evaluators import get_evaluator
    from searchers.training import use_small_map_convs

    ev = get_evaluator("supernet", space=space, dataset=data, seed=seed, progress=False, log=log,
                       supernet_path=checkpoint)
    ev.prepare()
    if ev.recipe.calib_batch_size != 128:         # the settings' names and the evaluator's draw assume it
        raise SystemExit(f"agreement: the evaluator's calib_batch_size is {ev.recipe.calib_batch_size}, not 128")
    cl = torch.channels_last
    g = torch.Generator().manual_seed(int(seed))
    calib = [x.contiguous(memory_format=cl) for x, _ in
             data.train.batches(128, shuffle=True, generator=g, limit=max(AGREE_CALIB) * 128)]
    xv, yv = data.val.batch(torch.arange(min(max(AGREE_IMAGES), len(data.val))))
    xv = xv.contiguous(memory_format=cl)
    out = {s: {m: [] for m in AGREE_METRICS} for s in _agree_settings()}
    for i, a in enumerate(archs):
        for c in AGREE_CALIB:
            lp = _log_probs(use_small_map_convs(ev.supernet.extract(a)), calib[:c], xv)
            right = (lp.argmax(1) == yv).float()
            ll = lp.gather(1, yv[:, None]).squeeze(1)
            for n in AGREE_IMAGES:
                out[f"calib{c}x128_scored{n}"]["top1"].append(round(float(right[:n].mean()), 5))
                out[f"calib{c}x128_scored{n}"]["loglik"].append(round(float(ll[:n].mean()), 5))
        log(f"[agreement {i + 1}/{len(archs)}] scored under {len(out)} settings")
    return out


def time_settings(space, archs, data, seed: int, checkpoint: str) -> dict:
    """Seconds per arch of the evaluator's own path (``evaluate_subnet``: extract, BN re-estimation,
    BN folded, scoring) under each top-1 setting, and its scores (a check of ``score_run_settings``)."""
    from searchers.evaluators import get_evaluator
    from searchers.supernet import evaluate_subnet

    ev = get_evaluator("supernet", space=space, dataset=data, seed=seed, progress=False, supernet_path=checkpoint)
    ev.prepare()
    out = {}
    for c in AGREE_CALIB:
        for n in AGREE_IMAGES:
            r = replace(ev.recipe, calib_batches=c, eval_images=n)
            evaluate_subnet(ev.supernet, archs[0], data, r, seed)          # images prepared, caches warm
            secs, scores = [], []
            for a in archs:
                t0 = time.perf_counter()
                scores.append(evaluate_subnet(ev.supernet, a, data, r, seed))
                secs.append(time.perf_counter() - t0)
            out[f"calib{c}x128_scored{n}"] = {"mean_s": round(sum(secs) / len(secs), 3), "max_s": round(max(secs), 3),
                                               "top1": scores}
    return out


def agreement(runs: dict, truth: list, timing: dict | None = None) -> dict:
    """From ``{run: {setting: {metric: [score per arch]}}}``: per setting and metric, Kendall's tau between
    every two runs (mean, min, max), each run's tau against ``truth`` (the stand-alone mean accuracy, same
    arch order), their mean, and the tau of the runs' mean score.  The setting chosen (declared in
    docs/evaluators.md, session 12, before any score): the top-1 setting with the highest mean run-to-run
    tau, unrounded (a tie: the default, then fewer images, then fewer calibration batches) -- chosen
    without the ground truth.  ``decision`` applies the protocol's rule: the default changes to the
    chosen setting iff its mean run-to-run tau is >= 0.10 above the default's and ``timing`` (seconds per
    arch of the evaluator's own path, ``time_settings``) gives it a mean of at most 2 s."""
    from itertools import combinations

    import numpy as np

    names = sorted(runs)
    res = {"runs": names, "settings": {}}
    agree = {}                                   # setting -> unrounded mean run-to-run tau of top-1
    for s in _agree_settings():
        for metric in AGREE_METRICS:
            sc = {r: runs[r][s][metric] for r in names}
            pairs = [kendalltau_(sc[a], sc[b]) for a, b in combinations(names, 2)]
            if metric == "top1" and pairs:
                agree[s] = float(np.mean(pairs))
            vs = {r: round(kendalltau_(sc[r], truth), 3) for r in names}
            mean_score = np.mean([sc[r] for r in names], axis=0).tolist()
            res["settings"][f"{s}:{metric}"] = {
                "run_to_run_tau_mean": round(float(np.mean(pairs)), 3) if pairs else None,
                "run_to_run_tau_min": round(float(min(pairs)), 3) if pairs else None,
                "run_to_run_tau_max": round(float(max(pairs)), 3) if pairs else None,
                "tau_vs_truth": vs, "tau_vs_truth_mean": round(float(np.mean(list(vs.values()))), 3),
                "tau_of_mean_score_vs_truth": round(kendalltau_(mean_score, truth), 3)}
    order = {s: (s != AGREE_DEFAULT, int(s.split("scored")[1]), int(s[5:].split("x")[0])) for s in _agree_settings()}
    if len(names) >= 2:
        best = max(_agree_settings(), key=lambda s: (agree[s], tuple(-v for v in order[s])))
        res["chosen"] = best
        gain = agree[best] - agree[AGREE_DEFAULT]
        secs = (timing or {}).get(best, {}).get("mean_s")
        change = best != AGREE_DEFAULT and gain >= 0.10 and secs is not None and secs <= 2.0
        res["decision"] = {"chosen": best, "gain_over_default": round(gain, 3), "chosen_mean_eval_s": secs,
                           "change_default": bool(change)}
    return res


def plot_agreement(res: dict, png: Path, n_seeds: int) -> None:
    """Per evaluation setting and metric: how far the runs' rankings agree with each other (x) against how far
    they agree with the ground truth (y: each run, and the runs' mean score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for metric, marker in (("top1", "o"), ("loglik", "s")):
        items = [(k, v) for k, v in res["settings"].items() if k.endswith(":" + metric)]
        x = [v["run_to_run_tau_mean"] for _, v in items]
        ax.scatter(x, [v["tau_vs_truth_mean"] for _, v in items], marker=marker, label=f"{metric}: runs' mean tau")
        ax.scatter(x, [v["tau_of_mean_score_vs_truth"] for _, v in items], marker=marker, facecolors="none",
                   edgecolors="k", label=f"{metric}: the runs' mean score")
        for (k, v), xi in zip(items, x):
            ax.annotate(k.split(":")[0].replace("calib", "").replace("x128_scored", "x"), (xi, v["tau_vs_truth_mean"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.6, color="r", ls="--", lw=1, label="goal (tau 0.6)")
    ax.set_xlabel(f"run-to-run Kendall tau (mean over {len(res['runs']) * (len(res['runs']) - 1) // 2} pairs of runs)")
    ax.set_ylabel(f"Kendall tau vs stand-alone accuracy ({n_seeds}-seed mean)")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.2, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("supernet scores: agreement between runs vs with stand-alone training", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def run_agreement(space, archs, data, seed: int, log, recipe: Recipe, train_seeds, checkpoints: dict,
                  tag: str = "") -> dict:
    """How far the supernet's ranking repeats across training runs of one recipe, per evaluation setting
    (``score_run_settings``), and how each setting ranks against the ground truth (``agreement``).  Scores
    are kept per run in ``supernet_run_agreement_<space>[_<tag>].json`` and not recomputed for a run
    already there with the same checkpoint file."""
    path = tagged("supernet_run_agreement", space, tag)
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = old.get("scores", {})
    ckpts = old.get("checkpoints", {})
    mean, per_seed = ground_truth(standalone_path(data.name), recipe, train_seeds, {a.to_string() for a in archs})
    if len(mean) != len(archs):          # the archs scored must not depend on which seeds are complete
        raise SystemExit(f"error: --train-seeds: got {','.join(map(str, train_seeds))}, trained on {len(mean)} of "
                         f"the {len(archs)} archs; allowed: seeds trained on all of them (complete seeds)")
    names = [a.to_string() for a in archs]
    if old and old.get("archs") != names:
        raise SystemExit(f"error: --tag: {path.name} was scored on other archs; allowed: another tag")
    if not checkpoints and not runs:
        raise SystemExit(f"error: --checkpoints: got ''; allowed: NAME=PATH pairs, comma-separated (required "
                         f"while {path.name} holds no runs)")
    for name, ck in checkpoints.items():
        if name in runs and ckpts.get(name) == ck:
            continue
        log(f"[agreement] scoring run {name}: {ck}")
        runs[name], ckpts[name] = score_run_settings(space, archs, data, seed, log, ck), ck
        path.write_text(json.dumps({"archs": names, "scores": runs, "checkpoints": ckpts,
                                    **({"timing": old["timing"]} if "timing" in old else {})}, indent=1))
    timing = old.get("timing")
    if checkpoints:                      # timed on the first run given; redone if that is another run now
        first = next(iter(checkpoints))
        if timing is None or timing.get("run") != first or timing.get("checkpoint", checkpoints[first]) != checkpoints[first]:
            log(f"[agreement] timing the evaluator's path under each top-1 setting on run {first}")
            timing = {"run": first, "checkpoint": checkpoints[first],
                      **time_settings(space, archs, data, seed, checkpoints[first])}
    truth = [mean[a] for a in names]
    res = agreement(runs, truth, timing)      # every run in the file
    if timing and timing.get("run") in runs:       # the evaluator's own path against this part's scores
        res["evaluator_path_check"] = {
            s: sum(abs(a - b) > 1e-9 for a, b in zip(timing[s]["top1"], runs[timing["run"]][s]["top1"]))
            for s in _agree_settings()}            # archs whose top-1 differs (BN folding: arg-max ties only)
    out = {"space": space.name, "machine": machine(), "archs": names, "checkpoints": ckpts, "scores": runs,
           "timing": timing, "ground_truth": {"recipe": recipe.to_dict(), "train_seeds": list(train_seeds),
                                              "accuracy": truth, "seed_to_seed": seed_to_seed(per_seed)},
           "result": res}
    path.write_text(json.dumps(out, indent=1))
    plot_agreement(res, path.with_suffix(".png"), len(train_seeds))
    log(f"[agreement] wrote {path.with_suffix('.png')}")
    for k, v in res["settings"].items():
        log(f"[agreement] {k}: run-to-run tau {v['run_to_run_tau_mean']} (min {v['run_to_run_tau_min']}, "
            f"max {v['run_to_run_tau_max']}); vs truth: runs' mean {v['tau_vs_truth_mean']}, "
            f"mean score {v['tau_of_mean_score_vs_truth']}")
    if "chosen" in res:
        log(f"[agreement] chosen by run-to-run agreement (top-1): {res['chosen']}; {res['decision']}")
    if "evaluator_path_check" in res:
        log(f"[agreement] archs whose top-1 differs from the evaluator's own path: {res['evaluator_path_check']}")
    return out


def run_proxies(archs, data, seed: int) -> dict:
    from searchers.evaluators import get_evaluator

    out = {}
    for proxy in ("naswot", "synflow", "gradnorm"):
        ev = get_evaluator("proxy", dataset=data, seed=seed, proxy=proxy)
        scores, costs = {}, []
        for a in archs:
            scores[a.to_string()] = ev.evaluate(a)
            costs.append(ev.last_cost_s)
        out[proxy] = {"scores": scores, "mean_eval_seconds": round(sum(costs) / len(costs), 3)}
    return out


def rank_corr(scores, truth) -> dict:
    """Kendall's tau and Spearman's rho of two equal-length lists, rounded to 3 places."""
    from scipy.stats import kendalltau, spearmanr

    return {"tau": round(float(kendalltau(scores, truth)[0]), 3),
            "spearman": round(float(spearmanr(scores, truth)[0]), 3)}


def report(space, archs, data, seed: int, log, recipe: Recipe, train_seeds=(0,), gt_name: str = "",
           tag: str = "", groups: dict | None = None, sample: dict | None = None) -> dict:
    """Kendall's tau (``tau``) and Spearman's rho (``spearman``) of every score (MACs, params, the
    supernet's from ``supernet_scores_<space>[_<tag>].json``, each proxy) against the stand-alone mean
    accuracy, on all ``archs`` trained with every training seed; with ``groups`` (name -> arch strings,
    e.g. one per sampler), the same per group under ``groups`` (with each group's ground-truth range
    and seed-to-seed tau).  Written to ``evaluators_ranking_<space>[_<tag>].json``."""
    path = standalone_path(data.name)
    strings = {a.to_string() for a in archs}
    mean, per_seed = ground_truth(path, recipe, train_seeds, strings)
    keep = [a for a in archs if a.to_string() in mean]
    if len(keep) < 3:
        raise SystemExit(f"only {len(keep)} archs trained stand-alone with recipe {gt_name or recipe} and "
                         f"every training seed {list(train_seeds)}; run --part standalone first")
    names = [a.to_string() for a in keep]
    rj = json.dumps(recipe.to_dict(), sort_keys=True)
    truth_rows = {}                      # arch -> its rows of these seeds (MACs, params, val, seconds)
    for r in read_standalone(path):
        if r["recipe"] == rj and int(r["seed"]) in per_seed and r["arch"] in mean:
            truth_rows.setdefault(r["arch"], []).append(r)
    truth = [mean[a] for a in names]
    truth_val = [sum(float(r["accuracy_val"]) for r in truth_rows[a]) / len(truth_rows[a]) for a in names]
    secs = [float(r["train_seconds"]) for a in names for r in truth_rows[a]]
    res = {"space": space.name, "dataset": data.name, "n_archs": len(keep), "seed": seed, "machine": machine(),
           "sample": sample or {},
           "ground_truth": {"name": gt_name, "recipe": recipe.to_dict(), "train_seeds": list(train_seeds),
                            "file": str(path.relative_to(ROOT)),
                            "accuracy": "accuracy_test, mean over the training seeds",
                            "mean_train_seconds": round(sum(secs) / len(secs), 1),
                            "mean_train_seconds_by_device": by_device(truth_rows),
                            "accuracy_test_range": [round(min(truth), 4), round(max(truth), 4)],
                            "tau_seed_to_seed": seed_to_seed(per_seed),
                            "tau_val_vs_test": round(kendalltau_(truth_val, truth), 3)},
           "tau": {}, "spearman": {}, "cost": {}}
    first = {a: rows[0] for a, rows in truth_rows.items()}
    scores = {k: {a: float(first[a][k]) for a in names} for k in ("macs", "params")}   # name -> arch -> score
    sn_file = tagged("supernet_scores", space, tag)
    if sn_file.is_file():
        sn = json.loads(sn_file.read_text())
        got = {a: sn["scores"][a] for a in names if a in sn["scores"]}
        if len(got) >= 3:
            scores["supernet"] = got
            res["supernet_n_archs"] = len(got)
            res["supernet_checkpoint"] = sn.get("checkpoint")
            res["supernet_checkpoint_step"] = sn.get("checkpoint_step")
            res["cost"]["supernet"] = {"train_seconds": sn["train_seconds"],
                                       "mean_eval_seconds": round(sum(sn["eval_seconds"].values()) / len(sn["eval_seconds"]), 3),
                                       "max_eval_seconds": max(sn["eval_seconds"].values()),
                                       "params": sn["params"], "recipe": sn["recipe"]}
            res["supernet_scores"] = {a: sn["scores"].get(a) for a in names}
            # against each training seed alone (every arch that seed trained): how much one seed's noise costs
            res["supernet_tau_per_seed"] = {}
            for ts, accs in per_seed.items():
                both = [a for a in accs if a in sn["scores"]]
                if len(both) >= 3:
                    t = kendalltau_([sn["scores"][a] for a in both], [accs[a] for a in both])
                    res["supernet_tau_per_seed"][str(ts)] = {"tau": round(t, 3), "n": len(both)}
    px = run_proxies(keep, data, seed)
    for proxy, d in px.items():
        scores[f"proxy:{proxy}"] = d["scores"]
        res["cost"][f"proxy:{proxy}"] = {"mean_eval_seconds": d["mean_eval_seconds"]}

    def table(members: list[str]) -> tuple[dict, dict]:
        tau, rho = {}, {}
        for k, sc in scores.items():
            both = [a for a in members if a in sc]
            if len(both) >= 3:
                c = rank_corr([sc[a] for a in both], [mean[a] for a in both])
                tau[k], rho[k] = c["tau"], c["spearman"]
        return tau, rho

    res["tau"], res["spearman"] = table(names)
    if groups:
        res["groups"] = {}
        for g, members in groups.items():
            mem = [a for a in members if a in mean]
            if len(mem) < 3:
                res["groups"][g] = {"n_archs": len(mem)}
                continue
            tau, rho = table(mem)
            acc = [mean[a] for a in mem]
            macs = [scores["macs"][a] for a in mem]
            res["groups"][g] = {
                "n_archs": len(mem), "accuracy_test_range": [round(min(acc), 4), round(max(acc), 4)],
                "macs_range_M": [round(min(macs) / 1e6, 2), round(max(macs) / 1e6, 2)],
                "tau_seed_to_seed": seed_to_seed({s: {a: v for a, v in d.items() if a in set(mem)}
                                                  for s, d in per_seed.items()}),
                "tau": tau, "spearman": rho}
    res["scores"] = {k: {a: sc.get(a) for a in names} for k, sc in scores.items()}
    res["ground_truth"]["accuracy_by_arch"] = {a: round(mean[a], 5) for a in names}
    out = tagged("evaluators_ranking", space, tag)
    out.write_text(json.dumps(res, indent=1))
    log(json.dumps({"tau": res["tau"], "spearman": res["spearman"], "cost": res["cost"],
                    **({"groups": {g: {k: v for k, v in d.items() if k in ("n_archs", "tau", "spearman",
                                                                            "tau_seed_to_seed")}
                                   for g, d in res["groups"].items()}} if groups else {})}, indent=1))
    return res


def by_device(truth_rows: dict) -> dict:
    """{device: {"rows": n, "mean_train_seconds": s}} over the ground truth's rows (they may have trained on
    different machines: ``machine`` in a report is the one that wrote the report)."""
    acc = {}
    for rows in truth_rows.values():
        for r in rows:
            d = acc.setdefault(r.get("device") or "cpu", [])
            d.append(float(r["train_seconds"]))
    return {k: {"rows": len(v), "mean_train_seconds": round(sum(v) / len(v), 1)} for k, v in sorted(acc.items())}


def kendalltau_(x, y) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(x, y)[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="mobile-unified")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--part", choices=("all", "standalone", "supernet", "report", "variants", "agreement"),
                   default="all", help="variants: the supernet's tau under other evaluation settings; agreement: "
                   "how far several training runs' rankings repeat per evaluation setting (neither is part of all)")
    p.add_argument("--from-csv", action="store_true", help="supernet/report parts: use the archs of the "
                   "stand-alone file (this recipe and seed) instead of sampling them")
    p.add_argument("--checkpoint", help="supernet / variants parts: score with this checkpoint.pt / supernet.pt "
                   "instead of the cached default supernet")
    p.add_argument("--checkpoints", default="", help="agreement part: NAME=PATH pairs, comma-separated: "
                   "supernet checkpoints of one recipe's training runs (none: rescore the runs already in the file)")
    p.add_argument("--tag", default="", help="suffix of the supernet_scores / evaluators_ranking / "
                   "supernet_eval_variants / supernet_run_agreement files (another supernet's results kept apart)")
    p.add_argument("--gt-recipe", default="32k", help=f"stand-alone (ground-truth) recipe: one of "
                   f"{', '.join(GT_RECIPES)} (default 32k)")
    p.add_argument("--train-seeds", default="0,1", help="stand-alone training seeds, comma-separated: the "
                   "standalone part trains each in turn, the ground truth is their mean (default 0,1)")
    p.add_argument("--epochs", type=int, help="stand-alone recipe epochs (default: the --gt-recipe's)")
    p.add_argument("--sample", default="uniform", help=f"arch sampler(s), comma-separated: {', '.join(SAMPLERS)} "
                   "(see SAMPLERS); with several, the archs are their union and the report gives each sample "
                   "and the union (default uniform)")
    p.add_argument("--sample-seed", type=int, help="seed of the sampler(s) (default: --seed for uniform, "
                   f"{DEFAULT_SAMPLE_SEED['stratified-macs']} for stratified-macs)")
    p.add_argument("--pool", type=int, default=SAMPLE_POOL, help="stratified-macs: archs drawn before the "
                   f"strata are filled (default {SAMPLE_POOL})")
    p.add_argument("--worker", default="0/1", help="stand-alone worker k/n: starts at arch k*N/n (rows done "
                   "or claimed by other workers are skipped)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the standalone part trains "
                   "and the supernet part evaluates (default cpu; rows record it)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.exit(2, "error: --device: got cuda but no CUDA device is visible; allowed: cpu\n")
    torch.set_num_threads(args.threads)
    DATA_DIR.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    if args.gt_recipe not in GT_RECIPES:
        p.exit(2, f"error: --gt-recipe: got {args.gt_recipe!r}; allowed: {', '.join(GT_RECIPES)}\n")
    try:
        train_seeds = [int(v) for v in args.train_seeds.split(",")]
        if not train_seeds or len(set(train_seeds)) != len(train_seeds) or min(train_seeds) < 0:
            raise ValueError
    except ValueError:
        p.exit(2, f"error: --train-seeds: got {args.train_seeds!r}; allowed: distinct non-negative integers "
                  "separated by commas, e.g. 0,1\n")
    checkpoints = {}
    for item in filter(None, (v.strip() for v in args.checkpoints.split(","))):
        name, sep, path = item.partition("=")
        path = str(Path(path).expanduser()) if path else path
        if not sep or not name or not Path(path).is_file() or name in checkpoints:
            p.exit(2, f"error: --checkpoints: got {item!r}; allowed: NAME=PATH of an existing checkpoint file, "
                      "names distinct, comma-separated\n")
        checkpoints[name] = path
    samplers = [v.strip() for v in args.sample.split(",")]
    if not samplers or any(v not in SAMPLERS for v in samplers) or len(set(samplers)) != len(samplers):
        p.exit(2, f"error: --sample: got {args.sample!r}; allowed: distinct names among {', '.join(SAMPLERS)} "
                  "separated by commas\n")
    if args.pool < args.n:
        p.exit(2, f"error: --pool: got {args.pool}; allowed: at least --n ({args.n})\n")
    space = load_space(args.space)
    data = load_dataset(args.dataset, seed=args.seed)
    base = GT_RECIPES[args.gt_recipe]
    recipe = base if args.epochs is None else replace(base, epochs=args.epochs)
    groups, sample_info = None, {}
    if args.from_csv:
        # the archs already trained stand-alone with this recipe and seed (the space file may have
        # changed since they were sampled; their strings are what the ground truth is about)
        from search_space.arch import Arch

        rjson = json.dumps(recipe.to_dict(), sort_keys=True)
        rows = [r for r in read_standalone(standalone_path(data.name))
                if r["recipe"] == rjson and int(r["seed"]) in train_seeds and r["space"] == space.name]
        archs = list({r["arch"]: Arch.from_string(r["arch"]) for r in rows}.values())
    else:
        archs, groups = [], {}
        for m in samplers:
            sseed = args.sample_seed if args.sample_seed is not None else DEFAULT_SAMPLE_SEED.get(m, args.seed)
            got = sample_archs(space, args.n, sseed, data, method=m, pool=args.pool)
            groups[f"{m}:seed{sseed}"] = [a.to_string() for a in got]
            sample_info[f"{m}:seed{sseed}"] = {"method": m, "sample_seed": sseed, "n": args.n,
                                               **({"pool": args.pool} if m == "stratified-macs" else {})}
            archs += [a for a in got if a.to_string() not in {b.to_string() for b in archs}]
        if len(groups) > 1:
            groups["union"] = [a.to_string() for a in archs]
        else:
            groups = None
    log(f"{len(archs)} archs from {space.name}; {data!r}; {machine()}")
    if args.part in ("all", "standalone"):
        k, n = (int(v) for v in args.worker.split("/"))
        start = k * len(archs) // n
        for ts in train_seeds:
            run_standalone(space, archs[start:] + archs[:start], data, ts, log, recipe, args.device)
    if args.part in ("all", "supernet"):
        run_supernet(space, archs, data, args.seed, log, args.checkpoint, args.tag, args.device)
    if args.part in ("all", "report"):
        report(space, archs, data, args.seed, log, recipe, train_seeds, args.gt_recipe, args.tag,
               groups=groups, sample=sample_info)
    if args.part == "variants":
        run_variants(space, archs, data, args.seed, log, recipe, train_seeds, args.checkpoint, args.tag)
    if args.part == "agreement":
        run_agreement(space, archs, data, args.seed, log, recipe, train_seeds, checkpoints, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
