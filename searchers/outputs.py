"""A finished search's files: ``best/`` (arch.yaml, model.py, model.onnx), ``pareto.csv``,
``pareto.png``, ``zoo.csv``, ``summary.json``, and the TensorBoard Pareto image and hparams."""
from __future__ import annotations

import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from searchers.records import Board, Records, TrialRecord, best_record, pareto_front, safe_url


def target_file(target: str) -> str:
    """The target file a name resolved to on this machine (``local-cpu`` is the file of this CPU), as
    ``name.json (device)``, so results priced by different CPUs' files say so."""
    try:
        import latency_models

        model = latency_models.load(target)
        return f"{latency_models.target_path(target).name} ({model.meta.get('device', '?')})"
    except Exception:  # noqa: BLE001 - a summary line, never a failure
        return str(target)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("edgenas", "torch", "optuna", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


ZOO_ATTR = "edgenas_zoo_accuracy"
ZOO_EVAL_S = [0.0]  # evaluator seconds spent on the zoo points (for the overhead benchmark)


def zoo_points(ctx, records: Records | None = None, evaluate: bool = True) -> list[dict[str, Any]]:
    """The space's zoo networks: predicted latency and, when asked, the evaluator's accuracy
    (kept in the study, so a resumed or re-run search does not evaluate them again)."""
    from search_space import zoo

    out = []
    entries = list(ctx.space.zoo_entries())
    cached = dict(records.study.user_attrs.get(ZOO_ATTR, {})) if records is not None else {}
    new = False
    for name, width in entries:
        arch = zoo.get(name, width)
        key = f"{name}@{width:g}"
        row: dict[str, Any] = {"name": name, "width": width,
                               "latency_ms": float(ctx.model.predict(arch, resolution=ctx.settings.resolution)),
                               "accuracy": cached.get(key)}
        if evaluate and row["accuracy"] is None:
            try:
                t0 = time.perf_counter()
                row["accuracy"] = cached[key] = float(ctx.get_evaluator(False).evaluate(arch))
                ZOO_EVAL_S[0] += time.perf_counter() - t0
                new = True
            except Exception as exc:  # a reference point only: keep going without it
                row["error"] = f"{type(exc).__name__}: {exc}"
        out.append(row)
    if new and records is not None:
        records.study.set_user_attr(ZOO_ATTR, cached)
    return out


def pareto_figure(records: list[TrialRecord], front: list[TrialRecord], best: TrialRecord | None,
                  budget_ms: float, zoo: list[dict[str, Any]], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    ax.scatter([r.latency_ms for r in records], [r.accuracy for r in records], s=8, c="0.7", label="trials")
    ax.plot([r.latency_ms for r in front], [r.accuracy for r in front], "o-", c="tab:blue", ms=4,
            drawstyle="steps-post", label="Pareto front")
    if best is not None:
        ax.scatter([best.latency_ms], [best.accuracy], marker="*", s=200, c="tab:red", zorder=5,
                   label=f"best: {best.accuracy:.3f} @ {best.latency_ms:.1f} ms")
    ax.axvline(budget_ms, ls="--", c="tab:red", lw=1, label=f"budget {budget_ms:g} ms")
    zp = [z for z in zoo if z.get("accuracy") is not None]
    lat_only = [z for z in zoo if z.get("accuracy") is None]
    # the axis spans the trials, the budget and the evaluated zoo points; zoo networks known by their
    # latency only (not evaluated, or outside what the evaluator scores) are ticks, and those far beyond
    # the searched range are counted rather than squeezing the front against the axis
    span = [r.latency_ms for r in records] + [budget_ms] + [z["latency_ms"] for z in zp]
    x_max = 1.15 * max(span)
    if lat_only:
        shown = [z for z in lat_only if z["latency_ms"] <= x_max]
        beyond = len(lat_only) - len(shown)
        label = "zoo networks (latency only" + (f"; {beyond} beyond {x_max:.0f} ms)" if beyond else ")")
        ax.plot([z["latency_ms"] for z in shown], [0.0] * len(shown), "|", c="tab:green", ms=12,
                transform=ax.get_xaxis_transform(), label=label)
    ax.set_xlim(0, x_max)
    if zp:
        ax.scatter([z["latency_ms"] for z in zp], [z["accuracy"] for z in zp], marker="s", s=30, c="tab:green",
                   zorder=4, label="zoo networks")
        for z in zp:
            ax.annotate(f"{z['name']} {z['width']:g}", (z["latency_ms"], z["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def write_pareto_csv(path: Path, front: list[TrialRecord]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "accuracy", "latency_ms", "reward", "arch"])
        for r in front:
            w.writerow([r.number, f"{r.accuracy:.6f}", f"{r.latency_ms:.4f}", f"{r.reward:.6f}", r.arch])


def write_outputs(ctx, records: Records, probe=None, wall_s: float = 0.0, progress: bool = True,
                  zoo: bool = True, timing: dict | None = None, recs: list[TrialRecord] | None = None,
                  best: TrialRecord | None = None) -> dict[str, Any]:
    """Write the run's files and return the summary (also written as summary.json).  ``recs``: the
    search's evaluated archs when the study holds only some of them (a sweep's fast search); ``best``:
    the run's pick when it is not ``best_record`` of them (a sweep's top-k re-scored by the supernet)."""

    s = ctx.settings
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    recs = records.complete() if recs is None else list(recs)
    best = best if best is not None else best_record(recs, s.budget_ms)
    front = pareto_front(recs)
    write_pareto_csv(out / "pareto.csv", front)
    ZOO_EVAL_S[0] = 0.0
    zoo_rows = zoo_points(ctx, records, evaluate=zoo)
    if timing is not None:
        timing["zoo_eval_s"] = ZOO_EVAL_S[0]
    if zoo_rows:
        with open(out / "zoo.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "width", "latency_ms", "accuracy"])
            for z in zoo_rows:
                w.writerow([z["name"], z["width"], f"{z['latency_ms']:.4f}",
                            "" if z["accuracy"] is None else f"{z['accuracy']:.6f}"])
    title = f"{ctx.study_name}\n{len(recs)} trials, {s.target} at {s.resolution}, {s.evaluator} on {s.dataset}"
    fig = pareto_figure(recs, front, best, s.budget_ms, zoo_rows, title)
    fig.savefig(out / "pareto.png")
    files: dict[str, str] = {"pareto.csv": str(out / "pareto.csv"), "pareto.png": str(out / "pareto.png")}
    best_dict = None
    export_errors: dict[str, str] = {}
    if best is not None:
        arch = ctx.arch(best.arch)
        num_classes = _num_classes(ctx)
        state_dict = None
        extract = getattr(ctx.get_evaluator(False), "extract", None)  # the supernet's inherited weights, when it has them
        if callable(extract):
            try:
                state_dict = extract(arch).state_dict()
            except Exception:
                state_dict = None
        exported, export_errors = export_best(arch, out / "best", getattr(s, "formats", "py,onnx,yaml"),
                                              num_classes, s.resolution, state_dict)
        files.update({f"best/{Path(p).name}": str(p) for p in exported.values()})
        best_dict = {"trial": best.number, "arch": best.arch, "latency_ms": best.latency_ms,
                     "accuracy": best.accuracy, "reward": best.reward,
                     "within_budget": best.latency_ms <= s.budget_ms, "num_classes": num_classes,
                     "weights": "inherited from the supernet" if state_dict is not None else "random init"}
    board = Board(out / "tensorboard", 0)
    try:
        metrics = {"hparam/best_reward": best.reward if best else 0.0,
                   "hparam/best_accuracy": best.accuracy if best else 0.0,
                   "hparam/best_latency_ms": best.latency_ms if best else 0.0}
        hp = {k: v for k, v in s.to_dict().items() if k not in ("eval_opts", "config", "out", "storage", "resume")}
        hp = {k: ("" if v is None else v) for k, v in hp.items()}
        board.finish(fig, hp, metrics)
    finally:
        board.close()
    import matplotlib.pyplot as plt

    plt.close(fig)
    summary = {
        "best": best_dict,
        "trials": len(recs),
        "failed_trials": records.n_failed(),
        "pareto_size": len(front),
        "budget_ms": s.budget_ms,
        "target": s.target,
        "target_file": target_file(s.target),
        "resolution": s.resolution,
        "space": ctx.space.name,
        "evaluator": s.evaluator,
        "dataset": s.dataset,
        "reward": {"mode": ctx.reward.mode, "alpha": ctx.reward.alpha, "beta": ctx.reward.beta},
        "seed": s.seed,
        "settings": {k: v for k, v in s.to_dict().items()},
        "study": ctx.study_name,
        "storage": safe_url(ctx.storage),
        "out": str(out),
        "files": files,
        "export_errors": export_errors,
        "zoo": zoo_rows,
        "probe": None if probe is None else {"fastest_ms": probe.fastest_ms, "fastest_arch": probe.fastest_arch,
                                             "feasible_fraction": probe.feasible_fraction, "samples": probe.samples},
        "wall_s": round(wall_s, 2),
        "timing": {k: round(v, 4) for k, v in (timing or {}).items()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "machine": machine(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def export_best(arch, out: Path, formats: str, num_classes: int, resolution: int, state_dict=None):
    """The best arch in ``formats`` through ``search_space.export.export``: the base formats together,
    each mobile one (tflite, pte) on its own, so that a converter failing on one network leaves the
    others and the search's records intact.  Returns ({format: path}, {format: one-line error})."""
    from search_space import export as E

    wanted = [f.strip() for f in str(formats).split(",") if f.strip()]
    base = tuple(f for f in wanted if f not in E.MOBILE_FORMATS)
    written, errors = {}, {}
    groups = ([base] if base else []) + [(f,) for f in wanted if f in E.MOBILE_FORMATS]
    for group in groups:
        try:
            written.update(E.export(arch, out, formats=group, num_classes=num_classes, resolution=resolution,
                                    state_dict=state_dict))
        except Exception as exc:  # noqa: BLE001 -- reported, the other files still written
            if group == base:
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors[group[0]] = f"{type(exc).__name__}: {msg}"[:500]
            print(f"warning: best/{E.FILE_NAMES[group[0]]} not written: {errors[group[0]]}", file=sys.stderr)
    return written, errors


def _num_classes(ctx) -> int:
    ev = ctx.evaluator
    for attr in ("num_classes",):
        v = getattr(ev, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    try:
        from searchers.data import load_dataset

        splits = load_dataset(ctx.settings.dataset, seed=ctx.settings.seed)
        n = getattr(splits, "num_classes", None)
        if isinstance(n, int) and n > 0:
            return n
    except Exception:
        pass
    return 10


def print_summary(summary: dict[str, Any], file=None) -> None:
    file = file or sys.stdout
    b = summary["best"]
    out = summary["out"]
    if b is None:
        print(f"no finished trial in study {summary['study']}; files in {out}/", file=file)
        return
    over = "" if b["within_budget"] else "  (OVER the budget: no trial was within it)"
    print(f"best architecture (trial {b['trial']} of {summary['trials']}):", file=file)
    print(f"  {b['arch']}", file=file)
    print(f"  predicted latency: {b['latency_ms']:.2f} ms on {summary['target']} at {summary['resolution']}x"
          f"{summary['resolution']} (budget {summary['budget_ms']:g} ms){over}", file=file)
    print(f"  accuracy: {b['accuracy']:.4f} ({summary['evaluator']} evaluator on {summary['dataset']}); "
          f"reward {b['reward']:.4f}", file=file)
    best_files = ", ".join(Path(k).name for k in summary.get("files", {}) if k.startswith("best/"))
    print(f"  files: {out}/best/ ({best_files}), {out}/pareto.csv, {out}/pareto.png, "
          f"{out}/summary.json, {out}/tensorboard/", file=file)
    for fmt, err in (summary.get("export_errors") or {}).items():
        print(f"  not exported: {fmt}: {err}", file=file)
    print(f"  study: {summary['study']} in {summary['storage']}  (optuna-dashboard {summary['storage']})", file=file)
