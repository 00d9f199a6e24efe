"""Check a latency target against measurements it was not fitted on.

    python -m latency_models.validate --target local-cpu --archs 50 [--space mobile-unified] [--png out.png]
        [--passes 2] [--also other-target.json] [--save measured.json | --measured measured.json]
    python -m latency_models.validate --target pixel-cpu

``local-cpu`` (any target measured here): re-measures the reference block first and reports the
drift since the build, then measures ``--archs`` random archs of the space
(``load_space(S).sample(random.Random(seed))``) and every zoo network end-to-end on the target's
backend and thread count, each relative to the reference (so the comparison is in the build's
time scale).  Prints MAPE, the share within +/-10%, Spearman's rho, and writes a scatter plot of
predicted vs measured (PNG).

``pixel-cpu``: compares the target with the held-out published rows of its fit (see
``latency_models.fit_pixel``).  ``note10-cpu``: random OFA-space networks at a resolution without
a table (200) priced by the regressor vs the exact table sums at the two nearest tables' mean.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path

import numpy as np

import latency_models
from latency_models.fitting import error_stats
from latency_models.profile import (BACKENDS, REFERENCE, check_at_least, layer_runner, machine_info, noise_line,
                                    measure_absolute, measure_items, runtime_version)
from search_space.errors import OneLineParser, TargetError, cli_entry, field_error


def stats(pred, true) -> dict:
    s = error_stats(pred, true)
    if s["spearman"] is None:
        s["spearman"] = float("nan")
    return s


def scatter(path: Path, groups: dict[str, tuple[list, list]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    lo, hi = float("inf"), 0.0
    for (label, (pred, true)), marker in zip(groups.items(), "o^sD"):
        if len(true):
            ax.scatter(true, pred, s=18, marker=marker, label=f"{label} ({len(true)})", alpha=0.8)
            lo, hi = min(lo, min(true), min(pred)), max(hi, max(true), max(pred))
    if hi > 0:
        xs = np.array([lo * 0.9, hi * 1.1])
        ax.plot(xs, xs, "k-", lw=0.8)
        ax.fill_between(xs, xs * 0.9, xs * 1.1, color="grey", alpha=0.15, label="+/-10%")
        if lo > 0 and hi / lo > 20:  # 2 ms and 500 ms networks: the +/-10% band is readable on log axes
            ax.set_xscale("log")
            ax.set_yscale("log")
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print(label: str, s: dict) -> None:
    print(f"{label:28s} MAPE {s['mape_pct']:6.2f}%  within +/-10% {s['within_10pct']:6.1%}  "
          f"Spearman {s['spearman']:.3f}  max {s['max_err_pct']:.1f}%  (n={s['n']})")


def _reference_ms(model) -> float:
    ref_build = float(model.meta.get("reference", {}).get("ms") or 0.0)
    if ref_build <= 0:
        raise TargetError(f"target {model.name}: meta.reference.ms missing; rebuild it with latency_models.build")
    return ref_build


def other_cpu(model, cpu: str) -> str | None:
    """A line saying that ``model``'s measurements were made on another CPU than ``cpu`` (its
    ``meta.device``, e.g. 'AMD EPYC (2 cores, shared VM)', against the profiler's name of this one),
    else None.  A measured target describes the machine it was measured on: on another CPU its
    errors are those of a transfer (session 9: built on AMD EPYC, validated on an Intel Xeon, 35% of
    random archs within 10%), not of the model."""
    device = latency_models.device_cpu(model.meta.get("device"))
    if not device or not cpu or device == str(cpu).strip():
        return None
    return (f"target {model.name} was measured on {device}, these networks on {cpu}: "
            "another CPU; rebuild the target on this machine before reading its error from them")


CALIBRATION_SEED = 9000      # the calibration networks' sampling seed (validate samples with 1000-2999)


def calibration_archs(space, n: int) -> list:
    """The ``n`` calibration networks of a space: its first ``n`` draws from ``random.Random(CALIBRATION_SEED)``,
    the same on every machine and day, never among the validated archs."""
    rng = random.Random(CALIBRATION_SEED)
    return [space.sample(rng) for _ in range(n)]


CALIBRATION_LABEL = "calibration#"


def network_group(label: str) -> str:
    """What a ``measure_networks`` row is, by its label: 'calibration' (``calibration#i``), 'random' (``<space>#i``)
    or 'zoo' (a zoo network's name)."""
    return "calibration" if label.startswith(CALIBRATION_LABEL) else "random" if "#" in label else "zoo"


def measured_ms(nets: list, ref_build: float) -> tuple[np.ndarray, np.ndarray]:
    """Per measured network (``measure_networks`` rows): (min over passes of its cost relative to the reference
    block x the target's reference ms at build, the same x the reference ms measured beside it: its own time)."""
    true = np.array([min(n["rel"]) * ref_build for n in nets])
    raw = np.array([min(n["rel"]) * float(np.median(n["ref_ms"])) for n in nets])
    return true, raw


def own_time_target(model) -> bool:
    """True for a target whose network term was fitted on the networks' own times (its primary figures, and
    the time basis a calibration of it is applied in)."""
    return model.term is not None and model.term.fitted_on.get("time") == "own"


def measure_networks(backend: str, threads: int, space_name: str, n_archs: int, seed: int, passes: int = 1,
                     rounds: int = 5, zoo_nets: bool = True, chunk: int = 5, res: int = 224, targets=(),
                     calibrate: int = 0) -> dict:
    """Measure ``n_archs`` random archs of the space and the zoo networks end-to-end, each relative to
    the reference block, in ``passes`` fresh processes; with ``calibrate``, that many calibration networks
    (``calibration_archs``, labelled ``calibration#i``) spread evenly among them in every pass.  Returns a JSON-able record: per network its
    arch string, label, per-pass relative costs and reference ms; the reference measured alone first;
    the machine and its load.  ``targets``: a warning for each whose measurements ran on another CPU
    (``other_cpu``), before anything is measured."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm import tqdm

    from latency_models.profile import use_clock
    from search_space import zoo
    from search_space.space import load_space

    if backend not in BACKENDS:
        raise field_error(TargetError, "meta.runtime", backend, BACKENDS)
    space = load_space(space_name)  # a bad name fails before anything is measured
    info = machine_info(backend, threads)
    for m in targets:
        if line := other_cpu(m, info["cpu"]):
            print(f"warning: {line}")
    load0 = os.getloadavg()
    print(f"machine: {info['cpu']}, {info['cores']} cores (load average {', '.join(f'{x:.2f}' for x in load0)}); "
          f"{backend} {runtime_version(info)}, {threads} thread(s)")
    clock = use_clock(threads)
    ref_now, ref_spread = measure_absolute(layer_runner(REFERENCE, backend, threads).run, rounds=9)
    rng = random.Random(seed)
    items = [(space.sample(rng), f"{space.name}#{i}") for i in range(n_archs)]
    if zoo_nets:
        items += [(zoo.get(n), n) for n in zoo.names()]
    if calibrate:                        # spread evenly, so that they see the whole pass's drift
        step = len(items) / calibrate
        for i, a in reversed(list(enumerate(calibration_archs(space, calibrate)))):
            items.insert(math.ceil(i * step + step / 2), (a, f"{CALIBRATION_LABEL}{i}"))
    work = [("net", (a, res)) for a, _ in items]
    rels = [[] for _ in items]
    refs = [[] for _ in items]
    spreads = [[] for _ in items]
    with tqdm(total=len(work) * passes, desc="measuring networks", unit="net", file=sys.stderr) as bar:
        for _ in range(passes):
            with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:  # a fresh process per pass
                for i in range(0, len(work), chunk):
                    out = ex.submit(measure_items, work[i:i + chunk], backend, threads, rounds).result()
                    for j, m in enumerate(out, start=i):
                        rels[j].append(m["rel"])
                        refs[j].append(m["ref_ms"])
                        spreads[j].append(round(m["spread"], 6))
                    bar.update(len(out))
    print(noise_line([x for sp in spreads for x in sp], "network timings"))
    return {"backend": backend, "threads": threads, "clock": clock, "resolution": res, "space": space.name,
            "seed": seed, "passes": passes, "rounds": rounds,
            **({"calibration": {"seed": CALIBRATION_SEED, "n": calibrate}} if calibrate else {}),
            "machine": {k: info[k] for k in ("cpu", "cores")}, "runtime": runtime_version(info),
            "load_average": [round(x, 2) for x in load0] + [round(x, 2) for x in os.getloadavg()],
            "reference_alone_ms": round(ref_now, 4), "reference_alone_spread": round(ref_spread, 4),
            "networks": [{"label": label, "arch": a.to_string(), "rel": r, "ref_ms": f, "spread": sp}
                         for (a, label), r, f, sp in zip(items, rels, refs, spreads)]}


def score_networks(model, record: dict, png: Path | None = None, quiet: bool = False) -> dict:
    """Compare ``model`` with a ``measure_networks`` record: measured = min over passes of the relative
    cost x the model's own reference ms (the build's time scale, so drift since the build cancels).
    Also reports the measurement's own pass-to-pass spread, the floor under any model's error."""
    from search_space.arch import Arch

    say = (lambda *a: None) if quiet else print
    ref_build = _reference_ms(model)
    drift = record["reference_alone_ms"] / ref_build - 1.0
    nets = record["networks"]
    archs = [Arch.from_string(n["arch"]) for n in nets]
    labels = [n["label"] for n in nets]
    true, raw = measured_ms(nets, ref_build)
    pred = model.predict_many(archs, record["resolution"])
    is_cal = np.array([network_group(label) == "calibration" for label in labels])
    if is_cal.any():                     # the calibration networks are scored nowhere: they only set the scale
        cal = {"n": int(is_cal.sum()), "seed": (record.get("calibration") or {}).get("seed"),
               "scale": round(float(np.median(true[is_cal] / pred[is_cal])), 4),
               "scale_own_time": round(float(np.median(raw[is_cal] / pred[is_cal])), 4)}
        keep = ~is_cal
        archs = [a for a, k in zip(archs, keep) if k]
        labels = [lb for lb, k in zip(labels, keep) if k]
        true, raw, pred = true[keep], raw[keep], pred[keep]
        nets = [n for n, k in zip(nets, keep) if k]
    is_zoo = np.array(["#" not in label for label in labels])
    say(f"{model.name} ({model.path}): reference block now {record['reference_alone_ms']:.3f} ms, at build "
        f"{ref_build:.3f} ms: drift {100 * drift:+.1f}%")
    result = {"drift_pct": round(100 * drift, 1), "reference_ms_now": record["reference_alone_ms"],
              "load_average": record.get("load_average")}
    cpu = (record.get("machine") or {}).get("cpu")
    if line := other_cpu(model, cpu):
        result["other_cpu"] = {"target": str(model.meta.get("device")), "measured": cpu}
        say(f"warning: {line}")
    if record["passes"] > 1:
        rel = np.array([n["rel"] for n in nets])
        rep = np.abs(rel.max(1) - rel.min(1)) / rel.min(1)
        result["measurement_pass_to_pass"] = {"passes": record["passes"],
                                              "mean_spread_pct": round(100 * float(rep.mean()), 2),
                                              "p90_spread_pct": round(100 * float(np.percentile(rep, 90)), 2),
                                              "share_over_10pct": round(float((rep > 0.10).mean()), 3)}
        say(f"{'measurement itself':28s} pass-to-pass spread mean {result['measurement_pass_to_pass']['mean_spread_pct']}%"
            f", p90 {result['measurement_pass_to_pass']['p90_spread_pct']}%, over 10%: "
            f"{result['measurement_pass_to_pass']['share_over_10pct']:.1%}")
    # a network term fitted on the networks' own times is scored on those (see build.read_networks)
    own = own_time_target(model)
    result["primary"] = "own_time" if own else "build_scale"
    say(f"primary figures: {'each network own median time (raw ms)' if own else 'relative to the reference block x its ms at build'}")
    if (~is_zoo).any():
        result["random_archs"] = stats(pred[~is_zoo], true[~is_zoo])
        result["random_archs_own_time"] = stats(pred[~is_zoo], raw[~is_zoo])
        if not quiet:
            _print(f"random {record['space']} archs", result["random_archs"])
            _print("  same, own time (raw ms)", result["random_archs_own_time"])
    if is_cal.any():
        result["calibration"] = cal
        say(f"calibrated: every prediction x the median measured / predicted of the {cal['n']} calibration "
            f"networks measured in the same passes: x{cal['scale']} (own time: x{cal['scale_own_time']})")
        for key, y, sc in (("", true, cal["scale"]), ("_own_time", raw, cal["scale_own_time"])):
            if (~is_zoo).any():
                result[f"random_archs{key}_calibrated"] = stats(pred[~is_zoo] * sc, y[~is_zoo])
            if is_zoo.any():
                result[f"zoo{key}_calibrated"] = stats(pred[is_zoo] * sc, y[is_zoo])
        if not quiet:
            for k in ("random_archs_calibrated", "random_archs_own_time_calibrated", "zoo_calibrated",
                      "zoo_own_time_calibrated"):
                if k in result:
                    _print({"random_archs_calibrated": f"random {record['space']} archs, calibrated",
                            "random_archs_own_time_calibrated": "  same, own time (raw ms)",
                            "zoo_calibrated": "zoo networks, calibrated",
                            "zoo_own_time_calibrated": "  same, own time (raw ms)"}[k], result[k])
    if is_zoo.any():
        result["zoo"] = stats(pred[is_zoo], true[is_zoo])
        result["zoo_own_time"] = stats(pred[is_zoo], raw[is_zoo])
        if not quiet:
            _print("zoo networks", result["zoo"])
            _print("  same, own time (raw ms)", result["zoo_own_time"])
            for label, p, t in zip(labels, pred, true):
                if "#" not in label:
                    print(f"    {label:22s} measured {t:8.2f} ms  predicted {p:8.2f} ms  ({100 * (p / t - 1):+.1f}%)")
    result["all"] = stats(pred, true)
    result["all_raw_ms_no_drift_correction"] = stats(pred, raw)
    if not quiet:
        _print("all", result["all"])
        _print("all, raw ms (no drift corr.)", result["all_raw_ms_no_drift_correction"])
    result["per_network"] = [{"label": l, "measured_ms": round(float(t), 4), "measured_own_ms": round(float(r), 4),
                              "predicted_ms": round(float(p), 4)} for l, t, r, p in zip(labels, true, raw, pred)]
    if png is not None:
        y = raw if own else true
        scatter(png, {f"random {record['space']}": (list(pred[~is_zoo]), list(y[~is_zoo])),
                      "zoo": (list(pred[is_zoo]), list(y[is_zoo]))},
                f"{model.name}: predicted vs measured at {record['resolution']} ({record['machine']['cpu']}, "
                f"drift {100 * drift:+.1f}%)")
        say(f"wrote {png}")
    return result


def validate_measured(model, space_name: str, n_archs: int, seed: int, png: Path, chunk: int = 5,
                      rounds: int = 5, zoo_nets: bool = True, passes: int = 1, also=(), save: Path | None = None,
                      record: dict | None = None, calibrate: int = 0) -> dict:
    """Measure (or take ``record``) and score ``model`` and every model in ``also`` on the same
    measurements; ``save`` writes the measurements (JSON) for re-scoring without re-measuring."""
    backend = model.meta.get("runtime", "onnxruntime")
    threads = int(model.meta.get("threads") or 1)
    if backend not in BACKENDS:
        raise field_error(TargetError, f"target {model.name}: meta.runtime", backend, BACKENDS)
    _reference_ms(model)
    for m in also:
        if (m.meta.get("runtime", "onnxruntime"), int(m.meta.get("threads") or 1)) != (backend, threads):
            raise TargetError(f"target {m.name} ({m.path}): measured with {m.meta.get('runtime')}, "
                              f"{m.meta.get('threads')} thread(s); allowed: targets of {backend}, {threads} thread(s)")
        _reference_ms(m)
    if record is None:
        record = measure_networks(backend, threads, space_name, n_archs, seed, passes, rounds, zoo_nets, chunk,
                                  res=int(max(model.meta.get("resolutions") or [224])), targets=(model, *also),
                                  calibrate=calibrate)
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(record) + "\n")
            print(f"wrote {save}")
    result = score_networks(model, record, png)
    if also:
        result["also"] = {}
        for m in also:
            print()
            result["also"][str(m.path)] = score_networks(m, record, None)
    return result


def record_validation(path: Path, result: dict, record: dict | None, argv=None) -> None:
    """Store a validation's scores in the target file (``error.validation``)."""
    import datetime as _dt

    d = json.loads(path.read_text())
    v = {k: result[k] for k in ("primary", "random_archs", "random_archs_own_time", "zoo", "zoo_own_time", "all",
                                "drift_pct", "measurement_pass_to_pass", "calibration", "random_archs_calibrated",
                                "random_archs_own_time_calibrated", "zoo_calibrated", "zoo_own_time_calibrated")
         if k in result}
    v["how"] = ("python -m latency_models.validate " + " ".join(argv if argv is not None else sys.argv[1:]) +
                ": random archs of the space never fitted on (sampling seed differs from the build's) and every "
                "zoo network, measured end-to-end here; primary figures: " +
                ("each network's own time" if result.get("primary") == "own_time" else
                 "relative to the reference block, in the build's time scale"))
    if record is not None:
        v["measured"] = {k: record.get(k) for k in ("space", "seed", "passes", "rounds", "machine", "runtime",
                                                    "load_average", "reference_alone_ms")}
    v["date"] = _dt.datetime.now().isoformat(timespec="seconds")
    d.setdefault("error", {})["validation"] = v
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(d, indent=1) + "\n")
    tmp.replace(path)
    print(f"recorded the scores in {path} (error.validation)")


def validate_pixel(model, png: Path) -> dict:
    from latency_models import fit_pixel
    from search_space import zoo

    rows = fit_pixel.published_rows(fit_pixel.DATA)
    train, held = fit_pixel.split(rows)
    pred = [model.predict(zoo.get(r.zoo, r.width), r.resolution)
            * (model.predictor.fitted_on.get("old_tflite_scale", 1.0) if r.old_tflite else 1.0) for r in held]
    true = [r.ms for r in held]
    s = stats(pred, true)
    print("held-out published rows (pixel1-cpu-1bigcore-tflite-fp32); note: the shipped model was refitted on "
          "all rows, the target file's 'error' holds the strictly held-out fit's numbers")
    for r, p in zip(held, pred):
        print(f"    {r.network:24s} x{r.width:<5} published {r.ms:7.1f} ms  predicted {p:7.1f} ms")
    _print("held-out rows", s)
    e = model.error.get("held_out")
    if e:
        print(f"{'target file (held-out fit)':28s} MAPE {e['mape_pct']:6.2f}%  within +/-10% {e['within_10pct']:6.1%}  "
              f"(baseline MAdds line {model.error['baseline_macs_linear_held_out']['mape_pct']}%)")
    scatter(png, {"held-out published": (pred, true)}, "pixel-cpu vs published Pixel 1 rows")
    print(f"wrote {png}")
    return {"held_out": s}


def validate_note10(model, png: Path, n: int = 100, seed: int = 0) -> dict:
    from latency_models.fit_note10 import random_ofa_arch

    rng = random.Random(seed)
    archs = [random_ofa_arch(rng) for _ in range(n)]
    lo, hi = model.predict_many(archs, 192), model.predict_many(archs, 208)
    mid = model.predict_many(archs, 200)
    ok = (mid > lo) & (mid < hi)
    print(f"OFA archs at 200 (no table, regressor only) lie between their exact 192 and 208 table sums: "
          f"{ok.mean():.0%} of {n}")
    for k, v in model.error.items():
        print(f"  target file {k}: {v}")
    scatter(png, {"200 vs mean of 192/208": (list(mid), list((lo + hi) / 2))}, "note10-cpu: regressor vs tables")
    return {"between_tables": float(ok.mean())}


# the options that measure (their defaults when not given) and those that only a target measured here takes
MEASURING = {"archs": 50, "space": "mobile-unified", "seed": 1, "rounds": 5, "no_zoo": False, "passes": 1,
             "save": None, "calibrate": 0}
LOCAL_ONLY = {**MEASURING, "also": [], "measured": None, "record": False}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_options(args, model) -> None:
    """Refuse, before anything is measured, an option that does not apply to ``model`` (a published
    target: pixel-cpu, note10-cpu; or, with --measured, a measuring option) and a bad value."""
    given = [d for d in LOCAL_ONLY if getattr(args, d) is not None]
    if model.name in ("pixel-cpu", "note10-cpu"):
        if given:
            raise TargetError(f"{_option(given[0])}: does not apply to target {model.name} (published "
                              f"measurements, nothing is measured here); allowed with it: --png, --json")
        return
    if args.measured is not None:
        measuring = [d for d in MEASURING if getattr(args, d) is not None]
        if measuring:
            raise TargetError(f"{_option(measuring[0])}: does not apply with --measured (nothing is measured); "
                              "allowed with it: --also, --json, --png, --record")
        return
    for dest, lo in (("archs", 0), ("passes", 1), ("rounds", 1), ("calibrate", 0)):
        if getattr(args, dest) is not None:
            check_at_least(_option(dest), getattr(args, dest), lo)
    if args.calibrate and args.seed is not None and args.seed + 1000 == CALIBRATION_SEED:
        raise field_error(TargetError, "--seed", args.seed, f"any seed but {CALIBRATION_SEED - 1000} with --calibrate "
                          "(it samples the calibration networks themselves)")
    if args.archs == 0 and args.no_zoo:
        raise field_error(TargetError, "--archs", 0, "an integer >= 1 with --no-zoo (else nothing is measured)")


@cli_entry
def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m latency_models.validate",
                       description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--target", default="local-cpu")
    # the measuring options default to None (not given): a target that measures nothing refuses them
    ap.add_argument("--archs", type=int, default=None, help="random archs of the space to measure (default 50)")
    ap.add_argument("--space", default=None, help="the space they are sampled from (default mobile-unified)")
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (default 1; the build samples with 0 and 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds per network (default 5)")
    ap.add_argument("--no-zoo", action="store_true", default=None, help="skip the zoo networks")
    ap.add_argument("--png", default=None, help="scatter plot path (default validate-<target>.png)")
    ap.add_argument("--passes", type=int, default=None, help="measure every network in this many fresh processes "
                    "(min over them; their spread is the measurement's own noise; default 1)")
    ap.add_argument("--also", action="append", default=None, help="another target (name or file) of the same "
                    "backend scored on the same measurements (repeatable)")
    ap.add_argument("--calibrate", type=int, default=None, help="also measure this many calibration networks "
                    f"(random archs of seed {CALIBRATION_SEED}, spread among the others in every pass) and report "
                    "the figures with every prediction scaled by their median measured / predicted (default 0)")
    ap.add_argument("--save", default=None, help="write the measurements here (JSON)")
    ap.add_argument("--measured", default=None, help="score against these saved measurements, measure nothing")
    ap.add_argument("--json", default=None, help="write the scores here (JSON)")
    ap.add_argument("--record", action="store_true", default=None, help="write the scores into the target file's "
                    "error.validation (how they were measured included)")
    args = ap.parse_args(argv)
    model = latency_models.load(args.target)
    check_options(args, model)
    for dest, default in LOCAL_ONLY.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    png = Path(args.png or f"validate-{model.name}.png")
    if model.name == "pixel-cpu":
        result = validate_pixel(model, png)
    elif model.name == "note10-cpu":
        result = validate_note10(model, png)
    else:
        record = None
        if args.measured:
            path = Path(args.measured)
            try:
                record = json.loads(path.read_text())
                record["networks"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise TargetError(f"--measured {path}: not a measurements file of latency_models.validate "
                                  f"({type(exc).__name__})") from None
        result = validate_measured(model, args.space, args.archs, args.seed + 1000, png, rounds=args.rounds,
                                   zoo_nets=not args.no_zoo, passes=args.passes,
                                   also=[latency_models.load(t) for t in args.also],
                                   save=Path(args.save) if args.save else None, record=record,
                                   calibrate=args.calibrate)
        if args.record:
            record_validation(Path(model.path), result, record or json.loads(Path(args.save).read_text())
                              if (record or args.save) else None, argv)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
