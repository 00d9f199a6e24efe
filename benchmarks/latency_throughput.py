"""predict_many throughput: archs/s on one core (goal: >= 20,000/s once the layers are cached).
Rates are per second of this thread's CPU time (``time.thread_time``), so that other users of a
shared machine do not count; the wall-clock rate is printed beside the first call's.

    .venv/bin/python benchmarks/latency_throughput.py [--n 20000] [--space mobile-unified] [--target pixel-cpu]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from latency_common import header  # noqa: E402

import latency_models  # noqa: E402
from search_space.space import load_space  # noqa: E402

GOAL = 20000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--space", default="mobile-unified")
    ap.add_argument("--target", default=None, help="default: every shipped target")
    args = ap.parse_args()
    header("latency predict_many throughput")
    space = load_space(args.space)
    rng = random.Random(0)
    t = time.perf_counter()
    archs = [space.sample(rng) for _ in range(args.n)]
    print(f"   sampled {args.n} archs of {space.name} in {time.perf_counter() - t:.1f} s")
    mrng = random.Random(1)
    mutants = [space.mutate(archs[mrng.randrange(args.n)], mrng) for _ in range(args.n)]
    print("   first call = every layer new to the model (features + one vectorized regressor call); repeated = "
          "the same archs again;\n   one-mutation children = an evolution step: children of the priced archs, "
          "most layers cached")
    ok = True
    for name in ([args.target] if args.target else latency_models.targets()):
        model = latency_models.load(name)
        t, w = time.thread_time(), time.perf_counter()
        model.predict_many(archs)
        cold, cold_wall = args.n / (time.thread_time() - t), args.n / (time.perf_counter() - w)
        t = time.thread_time()
        model.predict_many(archs)
        warm = args.n / (time.thread_time() - t)
        t = time.thread_time()
        model.predict_many(mutants)
        mut = args.n / (time.thread_time() - t)
        ok &= warm >= GOAL
        print(f"   {name:12s} first call {cold:8.0f}/s (wall {cold_wall:6.0f}/s)   repeated {warm:8.0f}/s   "
              f"one-mutation children {mut:8.0f}/s   goal {GOAL}/s on repeated: {'PASS' if warm >= GOAL else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
