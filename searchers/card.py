"""The model card of a trained network: ``card.json`` (every number, machine-readable) and
``card.md`` (the same for people), plus the checks and measurements that fill it.

* ``predicted_latency(arch, resolution)``: every shipped latency target's prediction (ms).
* ``measure_latency(model, resolution)``: this machine's runtimes, batch 1, one thread: ONNX Runtime
  (the model exported to ONNX opset 17) and eager torch, timed as ``latency_models.profile`` times
  everything (interleaved with its fixed reference block, thread CPU time, median of rounds).
* ``check_exports(written, model, x)``: each exported file run on the same inputs as the torch model
  (max abs difference of the logits; the arch file must round-trip to the same Arch).
"""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search_space.arch import Arch
from search_space.errors import EdgenasError

TOLERANCE = 1e-3          # accepted max abs logit difference, per unit of the largest |logit| (at least 1)


def predicted_latency(arch: Arch, resolution: int = 224) -> dict[str, dict]:
    """{target: {"ms": float} or {"ms": None, "error": message}} for every shipped target."""
    import latency_models

    out: dict[str, dict] = {}
    for t in latency_models.targets():
        try:
            out[t] = {"ms": round(float(latency_models.load(t).predict(arch, resolution)), 4)}
        except EdgenasError as exc:
            out[t] = {"ms": None, "error": str(exc)}
    return out


def measure_latency(model: torch.nn.Module, resolution: int, in_ch: int = 3, rounds: int = 5,
                    backends=("onnxruntime", "torch")) -> dict[str, dict]:
    """Batch-1, one-thread latency of ``model`` at ``resolution`` on this machine's runtimes."""
    from latency_models import profile as P

    model = model.eval()
    threads = torch.get_num_threads()
    P.use_clock(1)
    out: dict[str, dict] = {}
    try:
        for backend in backends:
            ref = P.layer_runner(P.REFERENCE, backend, 1)
            runner = _NetRunner(model, (1, in_ch, resolution, resolution), backend)
            m = P.measure_relative(runner.run, ref.run, rounds=rounds)
            out[backend] = {"ms": round(m.ms, 4), "reference_ms": round(m.ref_ms, 4), "relative": round(m.rel, 4),
                            "spread": round(m.spread, 4), "runs": m.n, "threads": 1}
    finally:
        torch.set_num_threads(threads)
    return out


class _NetRunner:
    """``latency_models.profile.Runner`` for an already-built module with its own weights (no BN
    randomisation, no on-disk cache of the ONNX bytes)."""

    def __init__(self, module, shape, backend: str) -> None:
        x = torch.randn(*shape)
        if backend == "torch":
            torch.set_num_threads(1)

            def run():
                with torch.inference_mode():
                    module(x)
        else:
            import onnxruntime as ort

            from latency_models.profile import onnx_bytes

            sess = ort_session(onnx_bytes(module, x), ort)
            feed = {sess.get_inputs()[0].name: x.numpy()}

            def run():
                sess.run(None, feed)
        self.run = run


def ort_session(model_bytes_or_path, ort=None):
    if ort is None:
        import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    src = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(model_bytes_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# Export checks
# --------------------------------------------------------------------------------------------
def _run_py(path: Path, x: torch.Tensor, state: dict, num_classes: int) -> np.ndarray:
    from search_space.export import load_generated

    net = load_generated(path.read_text(), "edgenas_card_check").build(num_classes=num_classes)
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        return net.eval()(x).numpy()


def _run_pt(path: Path, x: torch.Tensor, arch: Arch, num_classes: int) -> np.ndarray:
    net = arch.build(num_classes=num_classes)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    with torch.no_grad():
        return net.eval()(x).numpy()


def _run_file(path: Path, x: torch.Tensor) -> np.ndarray:
    """An exported model file run by its own runtime (``search_space.export.run_exported``), one
    image at a time for the batch-1 mobile formats."""
    from search_space.export import run_exported

    if path.suffix == ".onnx":
        return run_exported(path, x)
    return np.concatenate([np.asarray(run_exported(path, x[i:i + 1])).reshape(1, -1) for i in range(x.shape[0])])


def measure_file(path: Path, shape: tuple[int, ...], rounds: int = 5) -> dict:
    """Batch-1, one-thread latency of an exported ``.pte`` / ``.tflite`` file with its runtime, timed
    against the ONNX Runtime reference block like everything else."""
    from latency_models import profile as P
    from search_space import export as E

    x = torch.randn(*shape)
    if path.suffix == ".pte":
        method = E.pte_method(path, 1)

        def run():
            method.execute([x])
    else:
        it = E.tflite_interpreter(path, 1)
        inp = it.get_input_details()[0]
        xn = x.numpy()
        if tuple(inp["shape"]) != xn.shape:
            xn = np.ascontiguousarray(xn.transpose(0, 2, 3, 1))

        def run():
            it.set_tensor(inp["index"], xn)
            it.invoke()
    P.use_clock(1)
    ref = P.layer_runner(P.REFERENCE, "onnxruntime", 1)
    m = P.measure_relative(run, ref.run, rounds=rounds)
    return {"ms": round(m.ms, 4), "reference_ms": round(m.ref_ms, 4), "relative": round(m.rel, 4),
            "spread": round(m.spread, 4), "runs": m.n, "threads": 1, "file": path.name}


def check_exports(written: dict[str, Path], model: torch.nn.Module, arch: Arch, x: torch.Tensor,
                  num_classes: int) -> dict[str, dict]:
    """Run every exported file on ``x`` and compare with ``model`` (the torch reference): passed when
    the max abs logit difference is at most ``TOLERANCE`` x max(1, largest |logit|) (float32 rounding
    grows with the logits' scale)."""
    model = model.eval()
    with torch.no_grad():
        ref = model(x).numpy()
    state = model.state_dict()
    out: dict[str, dict] = {}
    for fmt, path in written.items():
        path = Path(path)
        row: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size if path.is_file() else 0}
        try:
            if fmt == "yaml":
                same = Arch.load(path) == arch
                row.update(check="arch round trip", max_abs_diff=0.0 if same else None, passed=same)
                out[fmt] = row
                continue
            if fmt == "onnx":
                got, how = _run_file(path, x), "onnxruntime vs torch"
            elif fmt == "py":
                got, how = _run_py(path, x, state, num_classes), "standalone model.py + weights vs torch"
            elif fmt == "pt":
                got, how = _run_pt(path, x, arch, num_classes), "weights.pt in arch.build() vs torch"
            elif fmt == "tflite":
                got, how = _run_file(path, x), "LiteRT interpreter vs torch"
            elif fmt == "pte":
                got, how = _run_file(path, x), "ExecuTorch runtime (XNNPACK) vs torch"
            else:
                row.update(check=f"no checker for format {fmt!r}", max_abs_diff=None, passed=None)
                out[fmt] = row
                continue
            diff = float(np.max(np.abs(np.asarray(got, dtype=np.float64).reshape(ref.shape) - ref)))
            tol = TOLERANCE * max(1.0, float(np.max(np.abs(ref))))
            row.update(check=how, max_abs_diff=diff, tolerance=tol, passed=bool(diff <= tol),
                       same_top1=bool((np.asarray(got).reshape(ref.shape).argmax(1) == ref.argmax(1)).all()))
        except Exception as exc:  # noqa: BLE001 -- a failed check is a result for the card, not a crash
            row.update(check="failed to run", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                       max_abs_diff=None, passed=False)
        out[fmt] = row
    return out


# --------------------------------------------------------------------------------------------
# Card
# --------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    from latency_models.profile import machine_info

    info = machine_info("onnxruntime", 1)
    info.pop("backend", None)
    info.pop("threads", None)
    info["platform"] = platform.platform()
    return info


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def write_card(out_dir: Path, card: dict) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pj, pm = out_dir / "card.json", out_dir / "card.md"
    pj.write_text(json.dumps(card, indent=1) + "\n")
    pm.write_text(render_md(card))
    return pm, pj


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def render_md(c: dict) -> str:
    acc, lat, tr, ds = c["accuracy"], c["latency"], c["training"], c["dataset"]
    L = [f"# Model card: {c['name']}", "",
         f"Trained by `{c['command']}` on {c['created']}.", "",
         "## Architecture", "",
         f"- arch string: `{c['arch']}`",
         f"- parameters: {c['params']:,} ({ds['num_classes']} classes)",
         f"- MACs: {c['macs']:,} at {lat['resolution']}x{lat['resolution']}, "
         f"{c['macs_at_data_resolution']:,} at the data resolution {ds['resolution']}",
         "", "## Accuracy", "",
         f"{acc['split']} split ({acc['images']:,} images, {acc['weights']} weights):", "",
         "| metric | EMA (shipped) | raw weights |", "|---|---|---|",
         f"| top-1 | {_pct(acc['top1'])} | {_pct(acc.get('top1_raw'))} |"]
    if "top5" in acc:
        L.append(f"| top-5 | {_pct(acc['top5'])} | {_pct(acc.get('top5_raw'))} |")
    L += ["", f"Best validation top-1 during training: {_pct(acc.get('best_val_top1'))}.", "",
          "## Latency (batch 1)", "",
          f"Predicted at {lat['resolution']}x{lat['resolution']} by the shipped latency targets:", "",
          "| target | predicted |", "|---|---|"]
    for t, v in lat["predicted"].items():
        L.append(f"| {t} | {_ms(v.get('ms'))}{'' if v.get('ms') is not None else ' (' + v.get('error', '') + ')'} |")
    L += ["", f"Measured on this machine ({lat['machine'].get('cpu', '?')}, {lat['machine'].get('cores', '?')} cores), "
          "one thread, interleaved with latency_models.profile's reference block (thread CPU time):", "",
          "| runtime | resolution | measured | spread |", "|---|---|---|---|"]
    for res_key, rows in lat["measured"].items():
        for b, v in rows.items():
            L.append(f"| {b} | {res_key} | {_ms(v.get('ms'))} | {100 * v.get('spread', 0):.1f}% |")
    L += ["", "## Exported files", "", "| format | file | check | max abs diff | passed |", "|---|---|---|---|---|"]
    for f, v in c["exports"].items():
        if v.get("file") is None:
            L.append(f"| {f} | - | {v.get('check', '')} | n/a | n/a |")
            continue
        d = v.get("max_abs_diff")
        L.append(f"| {f} | {v['file']} | {v.get('check', '')}{' (' + v['error'] + ')' if v.get('error') else ''} | "
                 f"{'n/a' if d is None else f'{d:.2e}'} | {v.get('passed')} |")
    r = tr["recipe"]
    L += ["", "## Training", "",
          f"- init: {tr['init']}" + (f" (supernet {tr['supernet']['path']}, space {tr['supernet']['space']})"
                                      if tr.get("supernet") else "")
          + "".join(f"; {'BN-followed' if k == 'bn' else 'squeeze-excite'} conv weights rescaled to a fresh "
                    f"init's norm ({v['convs']} convs, scale {v['scale_min']:g}..{v['scale_max']:g}, median "
                    f"{v['scale_median']:g})"
                    for k, v in ((tr.get("supernet") or {}).get("renorm") or {}).items() if k in ("bn", "se"))
          + (f"; shrink and perturb: conv / linear weights = {1 - pt['p']:g} x inherited + {pt['p']:g} x fresh init"
             if (pt := (tr.get("supernet") or {}).get("perturb")) else ""),
          f"- {r['epochs']} epochs, batch {r['batch_size']}, {r['optimizer']}"
          f"{' (Nesterov)' if r['optimizer'] == 'sgd' else ''}, peak lr {r['peak_lr']:g}, "
          f"warm-up {r['warmup_epochs']:g} epoch(s) then cosine to 0, momentum {r['momentum']}, "
          f"weight decay {r['weight_decay']:g} (none on BN and biases), label smoothing {r['label_smoothing']}, "
          f"EMA decay {r['ema_decay']}, random crop (padding {r['crop_padding']})"
          f"{' + horizontal flip' if r['hflip'] else ''}",
          f"- training time: {tr['seconds']:.0f} s ({tr['threads']} torch thread(s)), seed {tr['seed']}", "",
          "| epoch | train loss | val top-1 | val top-1 (EMA) | s |", "|---|---|---|---|---|"]
    for h in tr["history"]:
        loss = "" if h["train_loss"] is None else f"{h['train_loss']:.4f}"
        L.append(f"| {h['epoch']} | {loss} | {_pct(h['val_top1'])} | {_pct(h['val_top1_ema'])} | {h['seconds']} |")
    L += ["", "## Data", "",
          f"- data set: {ds['name']} ({ds['source']})",
          f"- split: {ds['train_images']:,} training images used (of {ds['train_split']:,}), "
          f"{ds['val_images']:,} validation, {ds['test_images']:,} test; {ds['split']}",
          f"- resolution {ds['resolution']}; classes: {', '.join(map(str, ds['classes'])) or ds['num_classes']}", ""]
    return "\n".join(L)


__all__ = ["TOLERANCE", "check_exports", "machine", "measure_file", "measure_latency", "predicted_latency", "render_md",
           "write_card"]
