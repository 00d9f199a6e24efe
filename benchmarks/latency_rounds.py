"""How many timing rounds a whole-network measurement needs on this machine.

Measures ``--archs`` random archs of a space end-to-end with the profiler's interleaved protocol
(relative to the reference block, thread CPU time, one thread; without its re-measurement of outlier
rounds) in two fresh processes; each process times every network in two back-to-back blocks of ``--rounds`` rounds.  Prints, per estimator,
how far one block moves between the two blocks of one process and between the two processes, and
how far the whole process (both blocks: 2 x rounds rounds) moves between processes.  If the
between-process figure at 2 x rounds is much smaller than at rounds, the noise is round-to-round and
more rounds help; if not, it is per process and more passes (fresh processes) help.  With
``--fresh-session`` the second block runs on a newly built session in the same process, so "within a
process" becomes session to session: if it is as large as between processes, the noise is per session
(where its buffers land), and timing several sessions per process would average it.  Run it pinned
to one core with the other idle (``taskset -c 1``; session 9: load on one vCPU slows the other).

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/latency_rounds.py [--archs 10] [--rounds 5] [--seed 7500] [--fresh-session]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_common import header  # noqa: E402


def _blocks(run, ref, rounds: int, reps: int, ref_reps: int) -> list[tuple[list[float], list[float]]]:
    """``rounds`` rounds of (ref_reps reference runs, reps network runs), each run's thread CPU time."""
    out = []
    for _ in range(rounds):
        a, b = [], []
        for _ in range(ref_reps):
            t0 = time.thread_time()
            ref()
            a.append(time.thread_time() - t0)
        for _ in range(reps):
            t0 = time.thread_time()
            run()
            b.append(time.thread_time() - t0)
        out.append((a, b))
    return out


def worker(arch_strings: list[str], rounds: int, fresh_session: bool = False) -> list[dict]:
    """One fresh process: every network timed in two blocks of ``rounds`` rounds (``fresh_session``: the
    second block on a newly built ONNX Runtime session of the same network, its buffers allocated anew)."""
    import torch

    from latency_models import profile
    from search_space.arch import Arch

    torch.set_num_threads(1)
    profile.use_clock(1)
    ref = profile.layer_runner(profile.REFERENCE, "onnxruntime", 1)
    rows = []
    for s in arch_strings:
        r = profile.net_runner(Arch.from_string(s), 224, "onnxruntime", 1)
        for _ in range(3):
            ref.run()
            r.run()
        reps = profile.reps_for(profile._time(r.run, 3))
        ref_reps = profile.reps_for(profile._time(ref.run, 3))
        a = _blocks(r.run, ref.run, rounds, reps, ref_reps)
        if fresh_session:
            del r
            r = profile.net_runner(Arch.from_string(s), 224, "onnxruntime", 1)
            for _ in range(3):
                ref.run()
                r.run()
        rows.append({"A": a, "B": _blocks(r.run, ref.run, rounds, reps, ref_reps)})
        del r
    return rows


ESTIMATORS = {
    "median of round ratios (the profiler's)": lambda rr: statistics.median(
        np.median(b) / np.median(a) for a, b in rr),
    "min network / min reference": lambda rr: min(min(b) for _, b in rr) / min(min(a) for a, _ in rr),
    "10th percentiles": lambda rr: (np.percentile(np.concatenate([b for _, b in rr]), 10)
                                   / np.percentile(np.concatenate([a for a, _ in rr]), 10)),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--space", default="mobile-unified")
    ap.add_argument("--seed", type=int, default=7500, help="sampling seed (keep away from validate's 1000-2999)")
    ap.add_argument("--fresh-session", action="store_true", help="time each network's second block on a newly "
                    "built session: 'within a process' is then session to session (is the noise per session?)")
    args = ap.parse_args()
    from search_space.space import load_space

    header(f"whole-network timing noise: {args.archs} archs, blocks of {args.rounds} rounds, 2 fresh processes"
           + (", each block on its own session" if args.fresh_session else ""))
    space = load_space(args.space)
    rng = random.Random(args.seed)
    archs = [space.sample(rng).to_string() for _ in range(args.archs)]
    procs = []
    for _ in range(2):
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            procs.append(ex.submit(worker, archs, args.rounds, args.fresh_session).result())
    r = args.rounds
    print(f"   mean |relative change| over {args.archs} networks (max in brackets):")
    print(f"   {'estimator':42s} {'within a process':>18s} {'between processes':>18s} "
          f"{f'between, {2 * r} rounds':>22s}")
    for name, est in ESTIMATORS.items():
        within, between, between2 = [], [], []
        for i in range(args.archs):
            v = [(est(p[i]["A"]), est(p[i]["B"])) for p in procs]
            within += [abs(a / b - 1) for a, b in v]
            between += [abs(v[0][k] / v[1][k] - 1) for k in (0, 1)]
            both = [est(p[i]["A"] + p[i]["B"]) for p in procs]
            between2.append(abs(both[0] / both[1] - 1))
        print(f"   {name:42s} {100 * np.mean(within):8.2f}% ({100 * max(within):4.1f}) "
              f"{100 * np.mean(between):8.2f}% ({100 * max(between):4.1f}) "
              f"{100 * np.mean(between2):12.2f}% ({100 * max(between2):4.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
