"""local-cpu accuracy: measures random archs of a space and the zoo networks end-to-end here and
compares with the local-cpu target (goal: >= 95% of random archs within +/-10%, Spearman >= 0.95).
Run it on a quiet machine (check `uptime`): it measures, and other load distorts whole-network times.

    .venv/bin/python benchmarks/latency_local.py [--archs 50] [--space mobile-unified] [--png latency_local.png]
        [--passes 2] [--saved | --measured FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_common import header  # noqa: E402

import latency_models  # noqa: E402
from latency_models.validate import validate_measured  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", type=int, default=50)
    ap.add_argument("--space", default="mobile-unified")
    ap.add_argument("--seed", type=int, default=1002)
    ap.add_argument("--png", default="latency_local.png")
    ap.add_argument("--passes", type=int, default=1, help="measure each network in this many fresh processes")
    ap.add_argument("--measured", default=None, help="score saved measurements (latency_models.validate --save); "
                    "default: latency_models/targets/measurements/local-cpu.validation-s3-seed1002.json with --saved")
    ap.add_argument("--saved", action="store_true", help="score the committed validation measurements, measure nothing")
    args = ap.parse_args()
    header("local-cpu accuracy (measured here vs predicted)")
    model = latency_models.load("local-cpu")
    print(f"   target built {model.meta.get('date')} on {model.meta.get('device')}; drift seen at build: "
          f"{model.meta.get('drift')}")
    record = None
    if args.measured or args.saved:
        import json

        path = Path(args.measured) if args.measured else \
            Path(__file__).resolve().parents[1] / "latency_models" / "targets" / "measurements" / "local-cpu.validation-s3-seed1002.json"
        record = json.loads(path.read_text())
        print(f"   scoring saved measurements {path} (measured {record.get('load_average')} load, {record.get('machine')})")
    r = validate_measured(model, args.space, args.archs, args.seed, Path(args.png), passes=args.passes, record=record)
    # the primary figures: the networks' own times where the target's network term was fitted on those
    key = "random_archs_own_time" if r.get("primary") == "own_time" else "random_archs"
    rnd = r.get(key, r["all"])
    ok = rnd["within_10pct"] >= 0.95 and rnd["spearman"] >= 0.95
    print(f"   goal >= 95% within +/-10% and Spearman >= 0.95 on random archs ({key}): {'PASS' if ok else 'FAIL'} "
          f"({rnd['within_10pct']:.0%}, {rnd['spearman']:.3f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
