"""edgenas: latency_models -- how long an Arch takes on a target device.

    latency_models.targets() -> ["local-cpu", "local-tflite", "note10-cpu", "pixel-cpu"]
    model = latency_models.load("pixel-cpu")        # LatencyModel
    model.predict(arch, resolution=224) -> ms;  model.predict_many(archs) -> np.ndarray
    model.breakdown(arch) -> [(signature key, ms), ...]

A target is a file in ``latency_models/targets/`` (or any path to such a file): a lookup table of
measured layers plus a learned predictor for the layers the table lacks, recording how it was
made, from what, and its held-out error.  ``python -m latency_models.build`` measures the
``local-cpu`` (ONNX Runtime) and ``local-tflite`` (LiteRT/XNNPACK) targets, ``python -m latency_models.fit_pixel`` / ``fit_note10`` fit the phone
targets from published data, ``python -m latency_models.validate`` checks a target.
"""
from __future__ import annotations

from pathlib import Path

from search_space.errors import TargetError

TARGET_DIR = Path(__file__).resolve().parent / "targets"
_LOADED: dict[str, "LatencyModel"] = {}  # noqa: F821


def targets() -> list[str]:
    """Names of the shipped targets."""
    return sorted(p.stem for p in TARGET_DIR.glob("*.json"))


def target_path(target: str) -> Path:
    if not isinstance(target, str) or not target:
        raise TargetError(f"target: got {target!r}; allowed: {', '.join(targets())}")
    if target.endswith(".json") or "/" in target:
        return Path(target)
    path = TARGET_DIR / f"{target}.json"
    if not path.is_file():
        raise TargetError(f"target: got {target!r}; allowed: {', '.join(targets())} (or a path to a target .json)")
    return path


def load(target: str):
    """The ``LatencyModel`` of a shipped target name or a target file path (loaded once)."""
    from latency_models.model import LatencyModel

    path = target_path(target)
    key = f"{path.resolve()}:{path.stat().st_mtime_ns if path.is_file() else 0}"
    if key not in _LOADED:
        _LOADED[key] = LatencyModel.from_file(path)
    return _LOADED[key]


def __getattr__(name: str):
    if name == "LatencyModel":
        from latency_models.model import LatencyModel

        return LatencyModel
    raise AttributeError(f"module 'latency_models' has no attribute {name!r}")


__all__ = ["LatencyModel", "TARGET_DIR", "load", "target_path", "targets"]
