"""Searchers side by side: aging evolution, RL (MnasNet controller), random search, Optuna NSGA-II and
TPE, and NNI's RegularizedEvolution, on the same space, latency model, reward and fixed evaluator.

    python benchmarks/searchers.py [--space mobile-unified] [--target pixel-cpu] [--budget 60ms]
                                   [--evals 300] [--seeds 5] [--evaluator surrogate|proxy] [--png PATH]

Scores against the number of evaluations n (median over seeds, min..max in the table):
* best reward: the highest MnasNet reward ACC * (LAT/T)^-0.07 among the first n evaluated archs;
* hypervolume: the area the first n archs dominate in (latency, accuracy), with latency in
  [0, 2T] and accuracy in [0, 1], as a fraction of that box (higher is better).
The goal: our searchers (evolution, RL) at least as good as the best peer at ``--evals``; the script
says where that is not so.  The evaluator is the fixed ridge surrogate of benchmarks/search_quality.py
(fitted once to ``--fit`` proxy evaluations; its held-out R^2 is printed) or the proxy itself; the
method runners for evolution, random search and Optuna are that script's (imported, not copied;
Optuna's tells invalid code lists to Optuna as FAIL trials and does not count them).
NNI's strategy needs NNI 3.0 in this interpreter (``pip install 'edgenas[nni]'``); without it that
row says "not run" and why.
"""
from __future__ import annotations

import importlib.util
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _search_quality():
    """benchmarks/search_quality.py by path (putting benchmarks/ on sys.path would make this file
    shadow the ``searchers`` package)."""
    import importlib.util

    name = "edgenas_bench_search_quality"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "search_quality.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


sq = _search_quality()

CHECKPOINTS = (25, 50, 100, 200, 300)


def run_rl(space, model, ev, reward, args, seed, algo="ppo", batch=None):
    from searchers.cli_common import SearchSettings
    from searchers.controller import PGConfig, PolicyGradient
    from searchers.evolve import Context
    from searchers.records import Records
    from searchers.rl import RLSearch, identity

    s = SearchSettings(target=args.target, budget_ms=reward.budget_ms, space=args.space, evaluator="bench",
                       trials=args.evals, seed=seed)
    cfg = PGConfig(algo=algo, batch=batch or args.rl_batch)
    ctx = Context(s, space, model, reward, f"bench-rl-{seed}", Path("/nonexistent"), ":memory:", evaluator=ev)
    records, _ = Records.open(ctx.study_name, ":memory:", space, identity(s, cfg), resume=False, searcher="rl")
    with tempfile.TemporaryDirectory() as tmp:
        rl = RLSearch(ctx, records, PolicyGradient(space.cardinalities(), cfg, seed=seed), Path(tmp) / "c.pt",
                      board=None, progress=False)
        rl.run()
    return [(r.reward, r.accuracy, r.latency_ms) for r in records.complete()]


def run_nni(space, model, ev, reward, args, seed):
    from searchers import nni_bridge as nb

    trials = nb.run_strategy("regularized-evolution", space, model, ev.evaluate, reward, trials=args.evals,
                             seed=seed, resolution=args.resolution, population=args.population,
                             sample_size=args.sample_size)
    return [(t.reward, t.accuracy, t.latency_ms) for t in trials if t.arch is not None]


METHODS = {
    "evolution (ours)": sq.METHODS["evolution"],
    "evolution within-budget init (ours)": sq.METHODS["evolution (within-budget init)"],
    "RL PPO (ours)": lambda *a: run_rl(*a, algo="ppo"),
    "RL PPO batch 1 (ours)": lambda *a: run_rl(*a, algo="ppo", batch=1),
    "RL REINFORCE (ours)": lambda *a: run_rl(*a, algo="reinforce"),
    "random": sq.METHODS["random"],
    "optuna NSGA-II": sq.METHODS["optuna NSGA-II"],
    "optuna TPE": sq.METHODS["optuna TPE"],
    "NNI RegularizedEvolution": run_nni,
}
OURS = ("evolution (ours)", "evolution within-budget init (ours)", "RL PPO (ours)", "RL PPO batch 1 (ours)", "RL REINFORCE (ours)")


def best_curve(hist, points):
    out, best = [], -math.inf
    for i, (r, _, _) in enumerate(hist, 1):
        best = max(best, r)
        if i in points:
            out.append(best)
    return out


def hypervolume(hist, lat_ref: float) -> float:
    """Dominated area in [0, lat_ref] x [0, 1] (latency minimized, accuracy maximized), normalized."""
    pts = sorted((lat, acc) for _, acc, lat in hist if lat < lat_ref)
    hv, top = 0.0, 0.0
    for lat, acc in pts:  # by increasing latency: each new accuracy record adds a rectangle to lat_ref
        if acc > top:
            hv += (lat_ref - lat) * (acc - top)
            top = acc
    return hv / lat_ref


def hv_curve(hist, points, lat_ref):
    return [hypervolume(hist[:n], lat_ref) for n in points]


def plot(path: Path, points, curves: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    for ax, key, ylabel in ((axes[0], "reward", "best reward so far"), (axes[1], "hv", "Pareto hypervolume")):
        for m, c in curves.items():
            runs = c[key]
            med = [statistics.median(col) for col in zip(*runs)]
            lo = [min(col) for col in zip(*runs)]
            hi = [max(col) for col in zip(*runs)]
            style = "-" if m in OURS else "--"
            line, = ax.plot(points, med, style, marker="o", ms=3, label=m)
            ax.fill_between(points, lo, hi, color=line.get_color(), alpha=0.12)
        ax.set_xlabel("evaluations")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    import latency_models
    from search_space.space import load_space
    from searchers.cli_common import parse_budget
    from searchers.outputs import machine, versions
    from searchers.reward import Reward

    p = sq.bench_parser(__doc__, METHODS)
    p.add_argument("--rl-batch", dest="rl_batch", type=int, default=2)
    p.add_argument("--png", default="runs/bench-searchers/searchers.png")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M %Z')}; {versions()}", flush=True)
    space, model = load_space(args.space), latency_models.load(args.target)
    reward = Reward.make(parse_budget(args.budget), "soft")
    ev = sq.bench_evaluator(space, args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {unknown[0]!r}; allowed: {', '.join(METHODS)}")
    skipped = {}
    if "NNI RegularizedEvolution" in methods and importlib.util.find_spec("nni") is None:
        skipped["NNI RegularizedEvolution"] = "NNI is not installed in this interpreter (pip install 'edgenas[nni]')"
        methods.remove("NNI RegularizedEvolution")
    points = [n for n in CHECKPOINTS if n < args.evals] + [args.evals]
    lat_ref = 2 * reward.budget_ms
    curves = {m: {"reward": [], "hv": [], "s": [], "best_ms": []} for m in methods}
    for seed in range(args.seeds):
        for m in methods:
            t = time.perf_counter()
            hist = METHODS[m](space, model, ev, reward, args, seed)
            assert len(hist) == args.evals, (m, len(hist))
            curves[m]["reward"].append(best_curve(hist, points))
            curves[m]["hv"].append(hv_curve(hist, points, lat_ref))
            curves[m]["s"].append(time.perf_counter() - t)
            curves[m]["best_ms"].append(max(hist)[2])
            print(f"  seed {seed} {m:26s} best reward {curves[m]['reward'][-1][-1]:.4f}  "
                  f"hypervolume {curves[m]['hv'][-1][-1]:.4f}  [{curves[m]['s'][-1]:.0f} s]", flush=True)

    print()
    print(f"space {args.space} ({len(space.cardinalities())} decisions), target {args.target} at {args.resolution}, "
          f"budget {reward.budget_ms:g} ms, soft reward w=-0.07, evaluator {args.evaluator}, {args.seeds} seeds; "
          f"hypervolume box: latency [0, {lat_ref:g}] ms x accuracy [0, 1]")
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M %Z')}; {time.perf_counter() - t0:.0f} s in all")
    head = "| method | " + " | ".join(f"best reward @{n}" for n in points) + f" | min..max @{points[-1]} | " \
        f"hypervolume @{points[-1]} | min..max | ms of the best | s/run |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    med_r, med_hv = {}, {}
    for m in methods:
        rs, hv = curves[m]["reward"], curves[m]["hv"]
        cols = [statistics.median(c) for c in zip(*rs)]
        last = [r[-1] for r in rs]
        hvl = [h[-1] for h in hv]
        med_r[m], med_hv[m] = cols[-1], statistics.median(hvl)
        print(f"| {m} | " + " | ".join(f"{c:.4f}" for c in cols) + f" | {min(last):.4f}..{max(last):.4f} | "
              f"{med_hv[m]:.4f} | {min(hvl):.4f}..{max(hvl):.4f} | {statistics.median(curves[m]['best_ms']):.1f} | "
              f"{statistics.median(curves[m]['s']):.0f} |")
    for m, why in skipped.items():
        print(f"| {m} | not run: {why} |")
    ours = [m for m in methods if m in OURS]
    peers = [m for m in methods if m not in OURS]
    if ours and peers:
        best_peer_r = max(peers, key=med_r.get)
        best_peer_hv = max(peers, key=med_hv.get)
        for m in ours:
            for what, med, peer in (("best reward", med_r, best_peer_r), ("hypervolume", med_hv, best_peer_hv)):
                met = med[m] >= med[peer]
                print(f"goal: {m} {what} at {points[-1]} evaluations ({med[m]:.4f}) >= best peer {peer} "
                      f"({med[peer]:.4f}): {'MET' if met else 'NOT MET'}")
    title = (f"{args.space}, {args.target} @ {args.resolution}, budget {reward.budget_ms:g} ms, evaluator "
             f"{args.evaluator}; median of {args.seeds} seeds (band: min..max)\n{machine()}, "
             f"{time.strftime('%Y-%m-%d')}")
    plot(Path(args.png), points, {m: curves[m] for m in methods}, title)
    print(f"plot: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
