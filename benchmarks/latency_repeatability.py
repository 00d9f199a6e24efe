"""How well this machine's end-to-end measurement reproduces itself, and what that allows a latency model.

    python benchmarks/latency_repeatability.py FIRST.json SECOND.json [--target local-cpu-xeon]

FIRST and SECOND are two ``validate --save`` files of the same archs (the same ``--seed``, ``--archs`` and protocol,
measured one after the other).  For the random archs (and the zoo, and any calibration networks) it prints how often
the two measurements -- each validate's figure, the min over its passes -- agree within +/-10%, on the build's time
scale (relative to the reference block) and on own times, as measured and after one common scale.  If each measurement
is the truth times an independent log-normal error of s.d. ``sigma``, the two differ with s.d. ``sigma * sqrt(2)``;
from their mean absolute difference it reads ``sigma`` and prints the share within +/-10% expected for a model of
error s.d. ``e`` scored against one measurement: ``P(|N(0, sigma^2 + e^2)| <= log 1.1)`` -- for a perfect model
(e = 0) and for one as good as nn-Meter's reported 99% within +/-10% (e = 3.7%, its noise included), and the
largest ``e`` that still gives 95%.  With
``--target`` it also scores that target against the first, the second and the min over all passes of both.

Session 13 (Intel Xeon VM, seed 1019 measured twice, 07:14-07:34 and 07:46-08:07 UTC; docs/latency.md) is the
example: the two agree within +/-10% for 88% of the random archs on the build scale, 65% on own times.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_common import header  # noqa: E402

NN_METER_SD = math.log1p(0.10) / 2.5758   # 99% within +/-10% (nn-Meter, mobile CPUs) <=> a normal log error of s.d. 3.7%


def share_within(sd: float, tol: float = 0.10) -> float:
    """P(|N(0, sd^2)| <= log(1 + tol)) -- the share of a log-normal error within +/-tol."""
    return math.erf(math.log1p(tol) / (sd * math.sqrt(2))) if sd > 0 else 1.0


def paired(first: dict, second: dict) -> list[tuple[dict, dict]]:
    """The networks measured in both records, matched by label and arch string."""
    a = {(n["label"], n["arch"]): n for n in first["networks"]}
    return [(a[(n["label"], n["arch"])], n) for n in second["networks"] if (n["label"], n["arch"]) in a]


def agreement(x: np.ndarray, y: np.ndarray) -> dict:
    """Within +/-10% (of y), mean |log ratio|, and the per-measurement noise s.d. it implies (normal, two alike)."""
    d = np.log(x / y)
    mad = float(np.mean(np.abs(d)))
    sigma = mad * math.sqrt(math.pi / 2) / math.sqrt(2)      # E|N(0, 2 sigma^2)| = 2 sigma / sqrt(pi)
    need = math.log1p(0.10) / 1.959964           # the total s.d. at which 95% fall within +/-10%
    return {"n": len(d), "within_10pct": float(np.mean(np.abs(x / y - 1) <= 0.10)), "mean_abs_diff_pct": 100 * mad,
            "noise_sd_pct": 100 * sigma, "pairs_expected_within_10pct": share_within(sigma * math.sqrt(2)),
            "perfect_model_within_10pct": share_within(sigma),
            "nn_meter_class_within_10pct": share_within(math.hypot(sigma, NN_METER_SD)),
            "model_sd_for_95pct": 100 * math.sqrt(need ** 2 - sigma ** 2) if sigma < need else 0.0}


def times(pairs, ref_ms: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(first, second) per time basis: the build scale (min relative cost x ref_ms) and own times
    (``validate.measured_ms``, validate's own figures)."""
    from latency_models.validate import measured_ms

    (b1, o1), (b2, o2) = (measured_ms([pq[i] for pq in pairs], ref_ms) for i in (0, 1))
    return {"build scale": (b1, b2), "own time": (o1, o2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--target", default=None, help="also score this target against both and their min")
    args = ap.parse_args(argv)
    recs = [json.loads(Path(p).read_text()) for p in (args.first, args.second)]
    header("latency measurement repeatability")
    for p, r in zip((args.first, args.second), recs):
        print(f"   {p}: {r['machine']['cpu']}, {r['runtime']} {r['threads']} thread(s), seed {r['seed']}, "
              f"{r['passes']} passes x {r['rounds']} rounds, load average {r.get('load_average')}")
    from latency_models.validate import network_group

    pairs = paired(*recs)
    model = None
    ref_ms = 1.0       # without a target: relative costs (a common factor changes no agreement figure)
    if args.target:
        import latency_models
        from latency_models import validate

        model = latency_models.load(args.target)
        ref_ms = validate._reference_ms(model)
    print(f"   build scale: relative cost x {ref_ms:.4f}{' ms (the target reference block at build)' if model else ''};"
          " one measurement = min over its passes")
    for g in ("random", "zoo", "calibration"):
        sel = [(p, q) for p, q in pairs if network_group(p["label"]) == g]
        if not sel:
            continue
        for basis, (x, y) in times(sel, ref_ms).items():
            raw, scaled = agreement(x, y), agreement(x / np.median(x / y), y)
            print(f"{g:11s} {basis:11s} n {raw['n']:3d}: the two within +/-10% {raw['within_10pct']:6.1%} "
                  f"(one scale removed {scaled['within_10pct']:6.1%}, the normal model expects "
                  f"{scaled['pairs_expected_within_10pct']:.1%}); mean |diff| {raw['mean_abs_diff_pct']:.2f}% -> "
                  f"noise s.d. per measurement {scaled['noise_sd_pct']:.2f}%: a perfect model within 10% of one "
                  f"measurement {scaled['perfect_model_within_10pct']:.1%}, an nn-Meter-class one "
                  f"{scaled['nn_meter_class_within_10pct']:.1%}; 95% needs a model error s.d. <= "
                  f"{scaled['model_sd_for_95pct']:.2f}%" + (" (none can)" if not scaled["model_sd_for_95pct"] else ""))
        if model is not None and g == "random":
            from search_space.arch import Arch

            pred = model.predict_many([Arch.from_string(p["arch"]) for p, _ in sel], recs[0]["resolution"])
            for basis, (x, y) in times(sel, ref_ms).items():
                both = np.minimum(x, y)
                line = ", ".join(f"{name} {np.mean(np.abs(pred / t - 1) <= 0.10):.1%}"
                                 for name, t in (("first", x), ("second", y), ("min of both", both)))
                print(f"   {model.name} ({Path(str(model.path)).name}), {basis}: within +/-10% of {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
