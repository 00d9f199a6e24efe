"""How channel alignment changes ONNX Runtime's conv speed on this CPU (why ``latency_models.features``
marks depthwise MACs on channel counts that are not a multiple of 4, ``dwu4_macs``).

    python benchmarks/ort_alignment.py [--threads 1] [--hw 14] [--rounds 7]

Times single convolutions (each exported once, ONNX Runtime, batch 1, the project's profiler:
thread CPU time at one thread, median of rounds) at channel counts around 640 -- a multiple of 16,
of 8, of 4, and of 2 only -- and prints each one's time per MAC relative to the 640-channel conv of
the same kind.  A depthwise conv whose channels are not a multiple of 4 leaves ONNX Runtime's NCHWc
kernels for a per-channel path (several times slower per MAC, more for larger kernels); pointwise
convs hardly care; dense convs are slower on input channels that are not a multiple of 8.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.latency_common import header  # noqa: E402

CHANNELS = (640, 648, 644, 646, 650)
DENSE_IN = (32, 40, 36, 34)  # dense 3x3 convs: input channels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hw", type=int, default=14, help="input height = width")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)

    import torch

    from latency_models.profile import Runner, measure_absolute, use_clock

    torch.manual_seed(0)
    header("ONNX Runtime conv time per MAC vs channel alignment")
    print(f"   clock: {use_clock(args.threads)}, {args.threads} thread(s), input {args.hw}x{args.hw}")
    hw = args.hw
    rows = []
    for kind, k in (("depthwise", 3), ("depthwise", 5), ("depthwise", 7), ("pointwise", 1), ("dense", 3)):
        base = None
        for c in (DENSE_IN if kind == "dense" else CHANNELS):
            if kind == "depthwise":
                m = torch.nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False)
                macs = c * k * k * hw * hw
            elif kind == "pointwise":
                m = torch.nn.Conv2d(c, 160, 1, bias=False)
                macs = c * 160 * hw * hw
            else:  # a full 3x3 conv, 64 outputs, its input channels varied
                m = torch.nn.Conv2d(c, 64, k, padding=1, bias=False)
                macs = c * 64 * k * k * hw * hw
            r = Runner(m, (1, c, hw, hw), "onnxruntime", args.threads, key=f"ort_alignment|{kind}|{c}|{k}|{hw}")
            ms, spread = measure_absolute(r.run, rounds=args.rounds)
            per = ms / macs
            base = base or per
            rows.append((kind, k, c, ms, per / base))
            aligned = ", ".join(f"%{a}" for a in (16, 8, 4) if c % a == 0) or "%2 only"
            print(f"   {kind:9s} k{k}  {c:4d} ch ({aligned:14s}) {ms:8.3f} ms  per MAC x{per / base:5.2f} "
                  f"(spread {100 * spread:.1f}%)")
    slow = [r[4] for r in rows if r[0] == "depthwise" and r[2] % 4]
    fast = [r[4] for r in rows if r[0] == "depthwise" and r[2] % 4 == 0]
    print(f"   depthwise, channels not a multiple of 4: {min(slow):.1f}-{max(slow):.1f}x the 640-channel time per MAC; "
          f"multiples of 4: {min(fast):.2f}-{max(fast):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
