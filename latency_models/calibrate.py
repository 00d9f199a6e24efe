"""Calibrate a measured latency target to this machine as it runs now.

    python -m latency_models.calibrate --target local-cpu --out my-local-cpu.json [--networks 10]
        [--rounds 10] [--passes 2]

A shared VM's speed for whole networks moves from day to day by more than the one reference block the
profiler normalises by (docs/latency.md, session 12: on one day networks ran 10% faster than the Xeon
target priced them while the reference block ran at its build's speed).  This measures the target's
calibration networks (``validate.calibration_archs``: fixed random archs of its space, never a validated
arch) end to end on its backend and threads, exactly as ``validate`` does (min over ``--passes`` fresh
processes), and writes a copy of the target whose every prediction is multiplied by their median measured /
predicted (``meta.calibration.scale``), measured in the time the target predicts in: each network's own
time for a target whose network term was fitted on own times (session 9's Xeon target,
``candidates/local-cpu-xeon-s9.json``), else relative to the reference block in the build's time scale (the
shipped ``local-cpu-xeon.json`` since session 13).  Give the copy to any searcher or to ``validate`` as
``--target my-local-cpu.json`` (it keeps the target's name: a search resumed under another calibration
mixes two scales).  ``validate --calibrate N`` reports what such a calibration does on fresh archs measured
in the same run; a copy made by this command was checked on fresh seed 1019 (docs/latency.md, session 13).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path

import numpy as np

import latency_models
from latency_models.profile import BACKENDS, check_at_least
from search_space.errors import OneLineParser, TargetError, cli_entry, field_error


def calibrate(model, n: int = 10, rounds: int = 10, passes: int = 2, space_name: str | None = None,
              how: str = "") -> dict:
    """Measure ``model``'s ``n`` calibration networks and return ``meta.calibration`` for it: ``scale`` (median
    over them of measured / predicted, measured as ``validate`` scores it: min over passes of the cost relative
    to the reference block x the target's reference ms), ``scale_own_time`` (the same on their own times), the
    networks and the machine."""
    from latency_models import validate

    backend = model.meta.get("runtime", "onnxruntime")
    threads = int(model.meta.get("threads") or 1)
    if backend not in BACKENDS:
        raise field_error(TargetError, f"target {model.name}: meta.runtime", backend, BACKENDS)
    ref_build = validate._reference_ms(model)
    space_name = space_name or (model.meta.get("made_from") or {}).get("space") or "mobile-unified"
    res = int(max(model.meta.get("resolutions") or [224]))
    rec = validate.measure_networks(backend, threads, space_name, 0, 0, passes, rounds, zoo_nets=False, res=res,
                                    targets=(model,), calibrate=n)
    from search_space.arch import Arch

    nets = rec["networks"]
    base = model.predict_many([Arch.from_string(x["arch"]) for x in nets], res) / model.calibration
    true, own = validate.measured_ms(nets, ref_build)
    own_time = validate.own_time_target(model)
    scale_build, scale_own = float(np.median(true / base)), float(np.median(own / base))
    return {"scale": round(scale_own if own_time else scale_build, 4), "applied": "own_time" if own_time else "build_scale",
            "scale_build_scale": round(scale_build, 4), "scale_own_time": round(scale_own, 4), "n": len(nets),
            "seed": validate.CALIBRATION_SEED, "space": rec["space"], "resolution": res, "passes": passes,
            "rounds": rounds, "machine": rec["machine"], "runtime": rec["runtime"],
            "reference_ms_now": rec["reference_alone_ms"], "reference_ms_build": ref_build,
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "networks": [{"label": x["label"], "predicted_ms": round(float(p), 4), "measured_ms": round(float(t), 4),
                          "measured_own_ms": round(float(o), 4)} for x, p, t, o in zip(nets, base, true, own)],
            "how": how or "latency_models.calibrate.calibrate()"}


@cli_entry
def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m latency_models.calibrate", description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--target", default="local-cpu", help="a measured target (name or file; default local-cpu)")
    ap.add_argument("--out", required=True, help="the calibrated copy of the target (a .json file)")
    ap.add_argument("--networks", type=int, default=10, help="calibration networks measured (default 10)")
    ap.add_argument("--rounds", type=int, default=10, help="timing rounds per network (default 10)")
    ap.add_argument("--passes", type=int, default=2, help="fresh processes measuring them (min over them; default 2, "
                    "as validate's fresh sets)")
    args = ap.parse_args(argv)
    for opt, v in (("--networks", args.networks), ("--rounds", args.rounds), ("--passes", args.passes)):
        check_at_least(opt, v, 1)
    out = Path(args.out).expanduser()
    allowed = "a writable path ending in .json outside latency_models/targets/ (a shipped target's folder)"
    if out.suffix != ".json" or out.is_dir():
        raise field_error(TargetError, "--out", str(out), allowed)
    if latency_models.TARGET_DIR.resolve() in out.resolve().parents:
        raise field_error(TargetError, "--out", str(out), allowed)
    try:                                             # before anything is measured
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
            raise PermissionError
    except OSError as exc:
        raise TargetError(f"--out: got {str(out)!r} ({type(exc).__name__}); allowed: {allowed}") from None
    model = latency_models.load(args.target)
    if model.name in ("pixel-cpu", "note10-cpu") or model.meta.get("reference") is None:
        raise TargetError(f"--target: got {args.target!r}; allowed: a target measured on this machine's backend "
                          "(local-cpu or a file of one): published targets cannot be re-measured here")
    cal = calibrate(model, args.networks, args.rounds, args.passes,
                    how="python -m latency_models.calibrate " + " ".join(sys.argv[1:] if argv is None else argv))
    d = json.loads(Path(model.path).read_text())     # the target file as it is, plus its calibration
    d["meta"] = {**d["meta"], "calibration": cal}
    try:
        out.write_text(json.dumps(d, indent=1) + "\n")
    except OSError as exc:
        raise TargetError(f"--out: got {str(out)!r} ({type(exc).__name__}); allowed: {allowed}") from None
    print(f"calibration of {model.name} ({model.path}) on {cal['machine']['cpu']}: x{cal['scale']} ({cal['applied']}) "
          f"over {cal['n']} networks (build scale: x{cal['scale_build_scale']}, own time: x{cal['scale_own_time']}; "
          f"reference block {cal['reference_ms_now']:.3f} ms now, {cal['reference_ms_build']:.3f} ms at build)")
    print(f"wrote {out}: use it as --target {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
