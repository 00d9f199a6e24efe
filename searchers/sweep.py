"""Budget sweeps: the best network for every (target, budget) pair at once (Once-for-All's
"specialized" networks), in seconds with the ``predictor`` evaluator.

    python -m searchers.evolve --target pixel-cpu,note10-cpu,local-cpu --budget 20ms,30ms,45ms,60ms \\
        --evaluator predictor

A ``--target`` or ``--budget`` holding a comma list makes ``searchers.evolve`` a sweep: one search per
(target, budget) pair, each in its own folder ``<out>/<target>-<budget>ms/`` (best/, pareto.csv,
pareto.png, zoo.csv, summary.json, study.db), plus ``<out>/sweep.csv``, ``<out>/sweep.png``
(accuracy against budget, one line per target) and ``<out>/sweep.json``.  With the predictor the
evaluator is prepared once for all pairs (other evaluators: each pair's ordinary search prepares
its own), and at the end each pair's winner is re-scored with the supernet (the
predictor's ground truth; with ``--evaluator supernet`` the search's accuracy already is).

With an evaluator that scores many archs at once (``predict_many``: the predictor) each pair runs
:func:`fast_search`, aging evolution in batches on the space's integer encoding: ``--trials``
candidates (default 10,000), population ``--population``, tournaments of ``--sample-size``; each
generation mutates ``--population`` tournament winners (1-3 decisions, as ``Space.mutate``), decodes
them, and prices and scores the batch in one call each.  Its study holds the final population and
the Pareto front (not all 10,000 candidates: writing them would take longer than the search);
``candidates.csv`` holds them all.  With any other evaluator each pair is an ordinary
``searchers.evolve`` search (every candidate an Optuna trial).

A sweep's reward is MnasNet's *hard* constraint unless ``--reward soft`` is given: the best network
for each budget is the most accurate one under it (Once-for-All's specialization).  Under the soft
reward, accuracy differences of a point or two (the supernet's range) are worth less than a 4x
faster net, so one fast net wins every budget.

A pair whose budget no arch of the space meets is reported as such in sweep.csv (the other pairs
go on).
"""
from __future__ import annotations

import csv
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from search_space.errors import SpaceError
from searchers.cli_common import OptionError, format_budget, parse_budget, resolve
from searchers.records import TrialRecord

SWEEP_TRIALS = 10_000
MUTATION_TRIES = 20


def is_sweep(given: dict) -> bool:
    return any((isinstance(given.get(k), (list, tuple)) and len(given[k]) > 1) or "," in str(given.get(k) or "")
               for k in ("target", "budget"))


def split_list(name: str, value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):               # a YAML recipe's list
        items = [str(x).strip() for x in value]
    else:
        items = [x.strip() for x in str(value).split(",")]
    if not value or any(not x for x in items):
        raise OptionError(f"--{name}: got {value!r}; allowed: a comma-separated list without empty items")
    if len(set(items)) != len(items):
        raise OptionError(f"--{name}: got {value!r}; allowed: a list without repeats")
    return items


# ---------------------------------------------------------------------------------------------
# Fast batched evolution (for evaluators with predict_many)
# ---------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    number: int
    arch: Any
    text: str
    codes: tuple
    accuracy: float
    latency_ms: float
    reward: float

    def record(self) -> TrialRecord:
        return TrialRecord(self.number, self.text, self.codes, self.accuracy, self.latency_ms, self.reward, 0)


@dataclass
class Pool:
    """Archs sampled once for a sweep: their codes, and their latency per target (the probe)."""

    archs: list
    codes: list
    lat: dict  # target -> list of ms


def sample_pool(space, n: int, seed: int, admissible=None, max_s: float = 20.0) -> Pool:
    rng = random.Random(f"sweep-pool:{seed}")
    archs, codes, seen = [], [], set()
    t0 = time.perf_counter()
    draws, max_draws = 0, 50 * n                        # a tiny space or filter must not loop forever
    while len(archs) < n and draws < max_draws and (time.perf_counter() - t0 < max_s or len(archs) < 10):
        draws += 1
        a = space.sample(rng)
        t = a.to_string()
        if t in seen or (admissible is not None and not admissible(a)):
            continue
        seen.add(t)
        archs.append(a)
        codes.append(tuple(space.encode(a)))
    if not archs:
        raise SpaceError(f"space: {getattr(space, 'name', space)}: got no architecture the evaluator can score "
                         f"in {draws} draws; allowed: a space (or supernet scope) with scorable archs")
    return Pool(archs, codes, {})


class FastSearch:
    """Aging evolution in batches over the space's codes; accuracy from ``ev.predict_many``."""

    def __init__(self, space, model, ev, reward, resolution: int = 224, population: int = 50,
                 sample_size: int = 10, seed: int = 0, admissible=None, init: str = "auto", verify=None):
        self.space, self.model, self.ev, self.reward = space, model, ev, reward
        self.res, self.P, self.S = resolution, population, min(sample_size, population)
        self.rng = random.Random(f"fast:{seed}")
        self.cards = list(space.cardinalities())
        self.admissible = admissible
        self.init = init
        self.verify = verify  # a costlier test (the supernet covers the arch): only for the winner (``winner``)
        self.rejected: list[Candidate] = []
        self.history: list[Candidate] = []
        self.seen: set[str] = set()
        self.timing = {"decode_s": 0.0, "latency_s": 0.0, "accuracy_s": 0.0, "mutate_s": 0.0}

    def _score(self, batch: list[tuple[Any, str, tuple]]) -> None:
        t = time.perf_counter()
        lats = self.model.predict_many([a for a, _, _ in batch], resolution=self.res)
        self.timing["latency_s"] += time.perf_counter() - t
        t = time.perf_counter()
        accs = self.ev.predict_many([a for a, _, _ in batch])
        self.timing["accuracy_s"] += time.perf_counter() - t
        for (a, text, codes), acc, lat in zip(batch, accs, lats):
            acc, lat = float(acc), float(lat)
            self.history.append(Candidate(len(self.history), a, text, codes, acc, lat, self.reward(acc, lat)))

    def _child(self, parent: Candidate):
        t = time.perf_counter()
        try:
            for _ in range(MUTATION_TRIES):
                new = list(parent.codes)
                k = self.rng.choice((1, 1, 1, 2, 3))
                for i in self.rng.sample(range(len(self.cards)), min(k, len(self.cards))):
                    if self.cards[i] > 1:
                        new[i] = self.rng.choice([c for c in range(self.cards[i]) if c != new[i]])
                try:
                    a = self.space.decode(new)
                except SpaceError:
                    continue
                text = a.to_string()
                if text in self.seen or not self.space.fits_input(a):
                    continue
                if self.admissible is not None and not self.admissible(a):
                    continue
                return a, text, tuple(new)
            return None
        finally:
            self.timing["mutate_s"] += time.perf_counter() - t

    def run(self, candidates: int, pool: Pool, lat: list[float], budget_ms: float, bar=None) -> list[Candidate]:
        """``candidates`` scored archs; the first population from ``pool`` (uniform under the soft
        reward; under the hard one, the pool's archs within the budget first)."""
        first = list(range(len(pool.archs)))
        self.rng.shuffle(first)
        if self.init == "feasible" or (self.init == "auto" and self.reward.mode == "hard"):
            first.sort(key=lambda i: lat[i] > budget_ms)  # stable: the feasible ones first, shuffled
        batch = []
        for i in first[:min(self.P, candidates)]:
            text = pool.archs[i].to_string()
            self.seen.add(text)
            batch.append((pool.archs[i], text, pool.codes[i]))
        self._score(batch)
        stale = 0
        while len(self.history) < candidates:
            popu = self.history[-self.P:]
            batch = []
            want = min(self.P, candidates - len(self.history))
            for _ in range(want):
                parent = max(self.rng.sample(popu, min(self.S, len(popu))), key=lambda c: (c.reward, -c.number))
                child = self._child(parent)
                if child is not None:
                    self.seen.add(child[1])
                    batch.append(child)
            if not batch:
                stale += 1
                if stale >= 5:  # the neighbourhood is exhausted: a small space, fully searched
                    break
                continue
            stale = 0
            self._score(batch)
            if bar is not None:
                bar.update(len(batch))
        return self.history


    def winner(self, budget_ms: float) -> Candidate | None:
        """The best candidate (``best_of``) that ``verify`` accepts; the ones it refuses are moved from
        the history to ``rejected`` (a reduced-scale supernet's envelope can miss a rare layer shape:
        the predictor scores such an arch, the supernet could not)."""
        while True:
            b = best_of(self.history, budget_ms)
            if b is None or self.verify is None or self.verify(b.arch):
                return b
            self.rejected.append(b)
            self.history = [c for c in self.history if c.number != b.number]


    def top(self, budget_ms: float, k: int) -> list[Candidate]:
        """The ``k`` best candidates (``best_of``'s order: within the budget first) that ``verify``
        accepts, best first."""
        order = sorted(self.history, key=lambda c: (c.latency_ms <= budget_ms, c.reward, c.accuracy, -c.number),
                       reverse=True)
        out = []
        for c in order:
            if len(out) >= k:
                break
            if self.verify is None or self.verify(c.arch):
                out.append(c)
        return out


def pick_by_rescore(cands: list[Candidate], rescore, reward, budget_ms: float) -> tuple[Candidate, list[float]]:
    """The candidate whose *re-scored* accuracy (``rescore(arch)``: the supernet's) gives the best
    reward, within the budget first; returns it (with that accuracy and reward) and all the re-scores."""
    if not cands:
        raise ValueError("pick_by_rescore: no candidates to re-score")
    scores = [float(rescore(c.arch)) for c in cands]
    scored = [replace(c, accuracy=a, reward=reward(a, c.latency_ms)) for c, a in zip(cands, scores)]
    best = max(scored, key=lambda c: (c.latency_ms <= budget_ms, c.reward, c.accuracy, -c.number))
    return best, scores


def best_of(history: list[Candidate], budget_ms: float) -> Candidate | None:
    if not history:
        return None
    ok = [c for c in history if c.latency_ms <= budget_ms]
    return max(ok or history, key=lambda c: (c.reward, c.accuracy, -c.number))


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------
def pair_name(target: str, budget_ms: float) -> str:
    t = Path(target).stem if target.endswith(".json") else target
    return f"{t}-{budget_ms:g}ms"


def run_sweep(given: dict, progress: bool = True, zoo: bool = True) -> dict:
    """Every (target, budget) pair of ``given`` (comma lists); returns the sweep summary."""
    import latency_models
    from search_space.space import load_space
    from searchers.cli_common import check_names
    from searchers.evolve import Context, SearchError, _greedy_fastest
    from searchers.reward import Reward

    targets = split_list("target", given.get("target") or "")
    budgets = [parse_budget(b) for b in split_list("budget", given.get("budget") or "")]
    explicit_trials = given.get("trials") is not None
    # the best network *for each budget*: accuracy under the budget (MnasNet's hard constraint) unless
    # --reward says otherwise -- under the soft one a flat accuracy model lets one fast net win every budget
    reward_mode = given.get("reward") or "hard"
    base = resolve({**given, "reward": reward_mode, "target": targets[0], "budget": format_budget(budgets[0])})
    if base.resume:
        raise OptionError("--resume: not for sweeps; rerun the sweep (finished pairs are searched again in seconds)")
    if base.workers != 1:
        raise OptionError(f"--workers: got {base.workers}; allowed: 1 for sweeps")
    for t in targets:
        check_names(replace(base, target=t))
    space = load_space(base.space)
    models = {t: latency_models.load(t) for t in targets}
    out = Path(base.out) if base.out else Path("runs") / (base.study or
                                                          f"sweep-{Path(base.space).stem}-{base.evaluator}-s{base.seed}")
    from searchers.evaluators import get_evaluator, with_progress
    from searchers.records import check_out_dir, make_dir

    # what the user gave, read before anything is made (a bad one leaves no folder): --out, the
    # evaluator's options (--no-progress hides a supernet's training bar), the data set, its files
    check_out_dir(out)
    ev = get_evaluator(base.evaluator, space=space, dataset=base.dataset, seed=base.seed,
                       **with_progress(base.evaluator, base.eval_opts, progress))
    ev.check_inputs()
    make_dir(out)
    t_start = time.perf_counter()
    if progress:
        print(f"sweep: {len(targets)} targets x {len(budgets)} budgets, space {space.name}, evaluator "
              f"{base.evaluator} on {base.dataset}, {base.reward} reward, seed {base.seed}; {out}/", file=sys.stderr)
    # the evaluator, once
    t = time.perf_counter()
    ev.prepare()
    prepare_s = time.perf_counter() - t
    fast = callable(getattr(ev, "predict_many", None))
    if fast and callable(getattr(ev, "search_space", None)):
        space = ev.search_space() or space  # a supernet's scope: the part of the space it (and so the predictor) covers
    trials = base.trials if explicit_trials else (SWEEP_TRIALS if fast else base.trials)
    admissible = _admissible(ev)
    t = time.perf_counter()
    pool = sample_pool(space, max(base.population, 200), base.seed, admissible)
    for tg in targets:
        pool.lat[tg] = [float(x) for x in models[tg].predict_many(pool.archs, resolution=base.resolution)]
    pool_s = time.perf_counter() - t
    rows = []
    for tg in targets:
        for b in budgets:
            s = replace(base, target=tg, budget_ms=b, trials=trials,
                        out=str(out / pair_name(tg, b)), study=f"{out.name}-{pair_name(tg, b)}", storage=None)
            reward = Reward.make(b, s.reward, s.w)
            from searchers.evolve import run_paths

            study, pout, storage = run_paths(s)
            ctx = Context(s, space, models[tg], reward, study, pout, storage, evaluator=ev)
            lat = pool.lat[tg]
            fastest = min(range(len(lat)), key=lat.__getitem__)
            row = {"target": tg, "budget_ms": b, "folder": str(pout)}
            if lat[fastest] > b:
                arch, ms = _greedy_fastest(ctx, pool.archs[fastest], lat[fastest], time.perf_counter() + 10)
                if ms > b:
                    row["error"] = (f"no architecture of space {space.name} reaches {b:g} ms on {tg}; "
                                    f"the fastest seen is {ms:.1f} ms")
                    print(f"sweep: {row['error']}", file=sys.stderr)
                    rows.append(row)
                    continue
                pool.archs.append(arch)
                pool.codes.append(tuple(space.encode(arch)))
                for t2 in targets:
                    pool.lat[t2].append(float(models[t2].predict(arch, resolution=base.resolution)))
            t = time.perf_counter()
            if fast:
                summary = _fast_pair(ctx, ev, pool, trials, admissible, progress, zoo)
            else:
                from searchers.evolve import search

                summary = search(s, progress=progress, zoo=zoo)
            row["search_s"] = round(time.perf_counter() - t, 2)
            best = summary["best"]
            row.update(arch=best["arch"], latency_ms=best["latency_ms"], accuracy=best["accuracy"],
                       reward=best["reward"], within_budget=best["within_budget"], candidates=summary["trials"])
            if "rescore_top_s" in summary.get("timing", {}):   # picked by the supernet's score already
                row["supernet_accuracy"] = best["accuracy"]
            rows.append(row)
            if progress:
                print(f"sweep: {tg} {b:g} ms: accuracy {best['accuracy']:.4f} at {best['latency_ms']:.1f} ms "
                      f"({summary['trials']} candidates, {row['search_s']:.1f} s)", file=sys.stderr)
    # re-score the winners with the supernet
    rescore = getattr(ev, "rescore", None)
    t = time.perf_counter()
    for row in rows:
        if "arch" not in row or "supernet_accuracy" in row:
            continue
        from search_space.arch import Arch

        if callable(rescore):
            try:
                row["supernet_accuracy"] = float(rescore(Arch.from_string(row["arch"])))
            except Exception as exc:  # noqa: BLE001 -- one pair's re-score failing keeps the others
                row["supernet_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        elif base.evaluator == "supernet":
            row["supernet_accuracy"] = row["accuracy"]
    rescore_s = time.perf_counter() - t
    write_sweep_csv(out / "sweep.csv", rows)
    sweep_figure(rows, targets, out / "sweep.png", f"{space.name}, {base.evaluator} on {base.dataset}, "
                 f"{base.reward} reward, {trials} candidates per pair")
    summary = {"out": str(out), "pairs": rows, "targets": targets, "budgets_ms": budgets, "space": space.name,
               "evaluator": base.evaluator, "dataset": base.dataset, "candidates_per_pair": trials,
               "fast": fast, "seed": base.seed, "prepare_s": round(prepare_s, 2), "pool_s": round(pool_s, 2),
               "rescore_s": round(rescore_s, 2), "wall_s": round(time.perf_counter() - t_start, 2),
               "predictor": getattr(ev, "report", None),
               "files": {"sweep.csv": str(out / "sweep.csv"), "sweep.png": str(out / "sweep.png")}}
    (out / "sweep.json").write_text(json.dumps(summary, indent=1, default=str))
    if all("error" in r for r in rows):
        raise SearchError(f"no (target, budget) pair is feasible: {rows[0]['error']}")
    return summary


def _admissible(ev):
    """A cheap test that the evaluator can score an arch: a reduced-scale supernet's caps."""
    net = getattr(ev, "supernet", None)
    if net is None:
        return None
    caps = (getattr(net, "max_channels", 0), getattr(net, "max_macs", 0))
    if not any(caps):
        return None
    from searchers.supernet import within_caps

    return lambda a: within_caps(a, *caps)


def _verifier(ev):
    """The supernet's full check (its envelope covers every layer of the arch), for would-be winners."""
    net = getattr(ev, "supernet", None)
    fits = getattr(net, "fits", None)
    return fits if callable(fits) else None


def _fast_pair(ctx, ev, pool: Pool, trials: int, admissible, progress: bool, zoo: bool) -> dict:
    from searchers import outputs
    from searchers.records import Records, pareto_front

    s = ctx.settings
    t0 = time.perf_counter()
    search = FastSearch(ctx.space, ctx.model, ev, ctx.reward, s.resolution, s.population, s.sample_size, s.seed,
                        admissible, verify=_verifier(ev))
    from tqdm import tqdm

    with tqdm(total=trials, desc=pair_name(s.target, s.budget_ms), unit="arch", dynamic_ncols=True,
              disable=not progress, file=sys.stderr, leave=False) as bar:
        hist = search.run(trials, pool, pool.lat[s.target], s.budget_ms, bar)
    search.winner(s.budget_ms)
    hist = search.history
    search_s = time.perf_counter() - t0
    ctx.out.mkdir(parents=True, exist_ok=True)
    with open(ctx.out / "candidates.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "accuracy", "latency_ms", "reward", "arch"])
        for c in hist:
            w.writerow([c.number, f"{c.accuracy:.6f}", f"{c.latency_ms:.4f}", f"{c.reward:.6f}", c.text])
    # the study: the final population, the Pareto front and the best (a dashboard's view of the search)
    from searchers.evolve import SEARCHER

    records, _ = Records.open(ctx.study_name, ctx.storage, ctx.space, {**s.identity(), "trials": trials, "mode": "sweep"},
                              resume=False, searcher=SEARCHER)
    by_number = {c.number: c for c in hist}
    keep = {c.number: c for c in hist[-s.population:]}
    recs = [c.record() for c in hist]
    for r in pareto_front(recs):
        keep[r.number] = by_number[r.number]
    b = best_of(hist, s.budget_ms)
    timing = {"search_s": search_s, **search.timing, "rejected_by_supernet": len(search.rejected)}
    k, picked = int(getattr(ev, "rescore_top", 0) or 0), None
    if k and callable(getattr(ev, "rescore", None)):
        # the predictor's top k re-scored by the supernet, the best by that score wins (its record holds
        # the supernet's accuracy): at 10 more supernet evaluations, +0.2 instead of -0.5 points in
        # benchmarks/predictor.py against a supernet-evaluated search of 300
        t = time.perf_counter()
        cands = search.top(s.budget_ms, k)
        if cands:
            b, scores = pick_by_rescore(cands, ev.rescore, ctx.reward, s.budget_ms)
            picked = b
            timing["rescore_top_s"] = time.perf_counter() - t
            (ctx.out / "rescore_top.json").write_text(json.dumps(
                {"k": len(cands), "candidates": [c.number for c in cands], "predicted": [c.accuracy for c in cands],
                 "supernet_accuracy": scores, "picked": b.number}, indent=1))
    keep[b.number] = b
    if records.n_complete() == 0:
        for n in sorted(keep):
            c = keep[n]
            records.add(c.arch, c.codes, c.accuracy, c.latency_ms, c.reward,
                        ctx.model.breakdown(c.arch, resolution=s.resolution), 0, 0.0, extra={"candidate": n})
    summary = outputs.write_outputs(ctx, records, wall_s=time.perf_counter() - t0, progress=progress,
                                    timing=timing, zoo=zoo, recs=recs,
                                    best=picked.record() if picked is not None else None)
    return summary


def write_sweep_csv(path: Path, rows: list[dict]) -> None:
    cols = ["target", "budget_ms", "accuracy", "supernet_accuracy", "latency_ms", "reward", "within_budget",
            "candidates", "search_s", "arch", "folder", "error"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6f}" if isinstance(r.get(k), float) and k != "budget_ms" else r.get(k, ""))
                        for k in cols})


def sweep_figure(rows: list[dict], targets: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    for tg in targets:
        pts = sorted((r["budget_ms"], r) for r in rows if r["target"] == tg and "arch" in r)
        if not pts:
            continue
        xs = [b for b, _ in pts]
        line, = ax.plot(xs, [r["accuracy"] for _, r in pts], "o-", label=f"{tg} (search's accuracy)")
        sup = [(b, r["supernet_accuracy"]) for b, r in pts if r.get("supernet_accuracy") is not None]
        if sup and any(r.get("supernet_accuracy") != r["accuracy"] for _, r in pts):
            ax.plot([b for b, _ in sup], [a for _, a in sup], "s--", c=line.get_color(), ms=4,
                    label=f"{tg} (winner re-scored by the supernet)")
    ax.set_xlabel("latency budget (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_sweep(summary: dict, file=None) -> None:
    file = file or sys.stdout
    print(f"sweep of {len(summary['pairs'])} (target, budget) pairs, {summary['candidates_per_pair']} candidates "
          f"each, {summary['wall_s']:.0f} s:", file=file)
    print(f"  {'target':12s} {'budget':>8s} {'accuracy':>9s} {'supernet':>9s} {'latency':>9s}  folder", file=file)
    for r in summary["pairs"]:
        if "arch" not in r:
            print(f"  {r['target']:12s} {r['budget_ms']:6g}ms  infeasible: {r['error']}", file=file)
            continue
        sup = r.get("supernet_accuracy")
        print(f"  {r['target']:12s} {r['budget_ms']:6g}ms {r['accuracy']:9.4f} "
              f"{'' if sup is None else f'{sup:.4f}':>9s} {r['latency_ms']:7.1f}ms  {r['folder']}", file=file)
    print(f"  files: {summary['files']['sweep.csv']}, {summary['files']['sweep.png']}", file=file)


__all__ = ["FastSearch", "is_sweep", "run_sweep", "print_sweep", "best_of"]
