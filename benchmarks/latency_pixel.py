"""pixel-cpu held-out error: refits the target from ../shared/data with the script's fixed split and
prints the held-out MAPE next to the MAdds-line baseline (goal: <= 7%).

    .venv/bin/python benchmarks/latency_pixel.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_common import header  # noqa: E402

from latency_models import fit_pixel  # noqa: E402

GOAL = 7.0


def main() -> int:
    header("pixel-cpu held-out error (Pixel 1 big core, TFLite fp32)")
    _, error = fit_pixel.build(fit_pixel.DATA, log=lambda m: print("   " + m))
    print(f"   split: {error['split']}; held out: {', '.join(error['held_out_groups'])}")
    for k in ("train", "held_out", "baseline_macs_linear_held_out", "leave_one_group_out",
              "baseline_macs_linear_leave_one_group_out"):
        e = error[k]
        print(f"   {k:42s} MAPE {e['mape_pct']:5.2f}%  within 10% {e['within_10pct']:.0%}  max {e['max_err_pct']:.1f}% (n={e['n']})")
    ok = error["held_out"]["mape_pct"] <= GOAL
    print(f"   goal held-out MAPE <= {GOAL}%: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
