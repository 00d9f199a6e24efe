"""Whole-network latency on the phone runtimes vs the desktop ones, one thread, batch 1, 224x224:
LiteRT (XNNPACK), ExecuTorch (XNNPACK delegate), ONNX Runtime and eager torch.

Each network is timed interleaved with the fixed reference block on the same backend (relative
cost x the reference's median), in ``--passes`` fresh processes, minimum over passes
(``latency_models.profile`` / ``latency_models.mobile_backends``).  With ``--layers`` it also sums
each network's separately measured layers on LiteRT and prints sum / whole network (how additive
latency is on that runtime: the premise of a lookup table).

    .venv/bin/python benchmarks/mobile_runtimes.py [--nets mobilenet_v2,mobilenet_v3_large]
        [--backends tflite,executorch,onnxruntime,torch] [--passes 3] [--rounds 7] [--layers]
        [--csv benchmarks/data/mobile_runtimes.csv]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_common import header  # noqa: E402

from latency_models import mobile_backends as MB  # noqa: E402
from latency_models import profile as P  # noqa: E402
from search_space import zoo  # noqa: E402
from search_space.arch import signatures  # noqa: E402

DEFAULT_NETS = "mobilenet_v2,mobilenet_v3_large,mobilenet_v3_small,shufflenet_v2,mobilenext"
DESKTOP = P.DESKTOP_BACKENDS


def measure(items, backend: str, passes: int, rounds: int) -> dict[str, dict]:
    return P.measure_passes(items, backend, 1, rounds, passes, log=None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=DEFAULT_NETS)
    ap.add_argument("--backends", default="tflite,executorch,onnxruntime,torch")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--layers", action="store_true", help="also sum per-layer LiteRT costs per network")
    ap.add_argument("--csv", default="", help="write the table here")
    args = ap.parse_args(argv)
    header("whole-network latency on the phone runtimes, 1 thread, batch 1")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in MB.BACKENDS + DESKTOP:
            print(f"error: backend: got {b!r}; allowed: {', '.join(MB.BACKENDS + DESKTOP)}", file=sys.stderr)
            return 2
    for b in backends:
        if b in MB.BACKENDS:
            print(f"   {b}: " + ", ".join(f"{k} {v}" for k, v in MB.versions(b).items()))
    nets = []
    for n in args.nets.split(","):
        name, _, w = n.strip().partition("@")
        nets.append((n.strip(), zoo.get(name, float(w) if w else 1.0)))
    items = [("net", (a, args.resolution)) for _, a in nets]
    res: dict[str, dict[str, dict]] = {}
    for b in backends:
        res[b] = measure(items, b, args.passes, args.rounds)
        print(f"   measured {b}", flush=True)
    layer_sums = {}
    if args.layers:
        seen, layer_items = set(), []
        for _, a in nets:
            for s in signatures(a, args.resolution):
                if s.key not in seen:
                    seen.add(s.key)
                    layer_items.append(("layer", s))
        lay = measure(layer_items, "tflite", args.passes, args.rounds)
        for label, a in nets:
            layer_sums[label] = sum(lay[s.key]["rel"] * lay[s.key]["ref_ms"]
                                    for s in signatures(a, args.resolution))
    cols = ["network"] + [f"{b} ms" for b in backends] + (["tflite layer sum / net"] if args.layers else [])
    print("   " + " | ".join(f"{c:>18s}" for c in cols))
    rows = []
    for label, a in nets:
        key = f"{a.to_string()}@{args.resolution}"
        row = [label] + [f"{res[b][key]['ms']:.2f}" for b in backends]
        if args.layers:
            row.append(f"{layer_sums[label] / res['tflite'][key]['ms']:.3f}" if "tflite" in res else "")
        rows.append(row)
        print("   " + " | ".join(f"{c:>18s}" for c in row))
        notes = {b: res[b][key].get("undelegated") for b in backends if res[b][key].get("undelegated")}
        for b, ops in notes.items():
            print(f"      {b}: ops outside XNNPACK: {', '.join(ops)}")
    print("   reference block ms per backend: " + ", ".join(
        f"{b} {min(r['ref_ms'] for r in res[b].values()):.3f}" for b in backends))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(rows)
        print(f"   wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
