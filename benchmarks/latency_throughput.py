"""predict_many throughput: archs/s on one core (goal: >= 20,000/s for fresh archs, the ones a
search proposes, never seen by the model).  Rates are per second of this thread's CPU time
(``time.thread_time``), so that other users of a shared machine do not count; the first fresh
call's wall-clock rate is printed beside it.

    .venv/bin/python benchmarks/latency_throughput.py [--n 20000] [--space mobile-unified] [--target local-cpu]
        [--repeats 3]

fresh: a newly loaded model prices ``--n`` archs sampled (outside the timed region) from the space:
every layer is new to it, priced in one vectorized batch (features, regressor, trees, network term);
the median over ``--repeats`` fresh models (the first one's rate printed beside it: it also pays the
process's first-time work, e.g. deciding each block structure's decomposition once).  The block
specs' intern ids (``search_space.arch``) are assigned when the archs are created, i.e. while
sampling, which Space.sample's rate includes.  repeated: the same Arch objects again (cached layers).
one-mutation children: an evolution step, children of the priced archs, most layers cached.
Space.sample's own rate is printed too: a search cannot propose fresh archs faster than that.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from latency_common import header  # noqa: E402

import latency_models  # noqa: E402
from latency_models.model import LatencyModel  # noqa: E402
from search_space.space import load_space  # noqa: E402

GOAL = 20000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--space", default="mobile-unified")
    ap.add_argument("--target", default=None, help="default: every shipped target")
    ap.add_argument("--repeats", type=int, default=3, help="fresh models per target (median)")
    args = ap.parse_args()
    header("latency predict_many throughput")
    space = load_space(args.space)
    rng = random.Random(0)
    t = time.thread_time()
    archs = [space.sample(rng) for _ in range(args.n)]
    sample_rate = args.n / (time.thread_time() - t)
    print(f"   sampled {args.n} archs of {space.name}: Space.sample runs at {sample_rate:.0f} archs/s "
          f"({sum(len(a.blocks) + 2 for a in archs) / args.n:.1f} layers per arch): a search cannot propose fresh "
          "archs faster than this")
    mrng = random.Random(1)
    mutants = [space.mutate(archs[mrng.randrange(args.n)], mrng) for _ in range(args.n)]
    ok = True
    for name in ([args.target] if args.target else latency_models.targets()):
        path = latency_models.target_path(name)
        fresh, wall = [], []
        for _ in range(args.repeats):
            model = LatencyModel.from_file(path)  # nothing cached: every arch and layer is new to it
            t, w = time.thread_time(), time.perf_counter()
            model.predict_many(archs)
            fresh.append(args.n / (time.thread_time() - t))
            wall.append(args.n / (time.perf_counter() - w))
            layers = model._n  # distinct layers the fresh call priced
        t = time.thread_time()
        model.predict_many(archs)
        warm = args.n / (time.thread_time() - t)
        t = time.thread_time()
        model.predict_many(mutants)
        mut = args.n / (time.thread_time() - t)
        cold = statistics.median(fresh)
        ok &= cold >= GOAL
        print(f"   {name:12s} fresh {cold:7.0f}/s (first of {args.repeats} {fresh[0]:6.0f}/s; wall "
              f"{statistics.median(wall):6.0f}/s; {layers} new layers)   repeated {warm:7.0f}/s   one-mutation children "
              f"{mut:7.0f}/s   goal {GOAL}/s on fresh: {'PASS' if cold >= GOAL else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
