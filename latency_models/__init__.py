"""edgenas: latency_models -- how long an Arch takes on a target device.

    latency_models.targets() -> ["local-cpu", "local-cpu-xeon", "local-tflite", "note10-cpu", "pixel-cpu"]
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

import functools
import platform
import sys
from pathlib import Path

from search_space.errors import TargetError

TARGET_DIR = Path(__file__).resolve().parent / "targets"
_LOADED: dict[str, "LatencyModel"] = {}  # noqa: F821
PER_CPU = ("local-cpu",)  # names that resolve to the shipped file of this machine's CPU (``machine_target``)
_RESOLVED: dict = {}      # (name, cpu, files and their mtimes) -> the file chosen
_WARNED: set = set()


def targets() -> list[str]:
    """Names of the shipped targets (``local-cpu``: the file of this machine's CPU; ``local-cpu-xeon``
    etc.: one file each)."""
    return sorted(p.stem for p in TARGET_DIR.glob("*.json"))


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """This machine's CPU as the profiler records it: /proc/cpuinfo's first ``model name``, else
    ``platform.processor()`` (e.g. 'AMD EPYC', 'Intel(R) Xeon(R) Processor')."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def device_cpu(device) -> str:
    """The CPU named by a target's ``meta.device`` ('AMD EPYC (2 cores, shared VM)' -> 'AMD EPYC')."""
    return str(device or "").split(" (")[0].strip()


def machine_target(name: str, cpu: str | None = None) -> Path:
    """The shipped file behind per-CPU name ``name`` (``PER_CPU``) on a machine whose CPU is ``cpu``
    (default: this one's): the first of ``<name>.json``, ``<name>-*.json`` (sorted) whose
    ``meta.device`` names that CPU; else ``<name>.json``, with one warning line (once per process)."""
    import json

    cpu = (cpu_name() if cpu is None else cpu).strip()
    files = [TARGET_DIR / f"{name}.json"] + sorted(TARGET_DIR.glob(f"{name}-*.json"))
    files = [f for f in files if f.is_file()]
    if not files:
        raise TargetError(f"target: got {name!r}; no shipped file {name}.json; allowed: {', '.join(targets())}")
    key = (name, cpu, tuple((str(f), f.stat().st_mtime_ns) for f in files))
    if key not in _RESOLVED:
        devices = {}
        for f in files:
            try:
                devices[f] = device_cpu((json.loads(f.read_text()).get("meta") or {}).get("device"))
            except (OSError, ValueError, AttributeError):
                devices[f] = ""  # unreadable here: load() of the file itself says why
        match = [f for f in files if cpu and devices[f] == cpu]
        _RESOLVED[key] = (match or files)[0], (None if match else devices[files[0]])
    path, fallback_cpu = _RESOLVED[key]
    if fallback_cpu is not None and (name, cpu) not in _WARNED:
        _WARNED.add((name, cpu))
        print(f"warning: target {name}: no shipped {name} file was measured on this machine's CPU ({cpu or 'unknown'}); "
              f"using {path.name} (measured on {fallback_cpu or 'unknown'}): its error here is another CPU's "
              f"(docs/latency.md, per-machine targets)", file=sys.stderr)
    return path


def target_path(target: str) -> Path:
    if not isinstance(target, str) or not target:
        raise TargetError(f"target: got {target!r}; allowed: {', '.join(targets())}")
    if target.endswith(".json") or "/" in target:
        path = Path(target)
        if "/" not in target and not path.is_file() and (TARGET_DIR / target).is_file():
            return TARGET_DIR / target  # a shipped file by its file name, e.g. local-cpu.json
        return path
    if target in PER_CPU:
        return machine_target(target)
    path = TARGET_DIR / f"{target}.json"
    if not path.is_file():
        raise TargetError(f"target: got {target!r}; allowed: {', '.join(targets())} (or a path to a target .json)")
    return path


def load(target: str):
    """The ``LatencyModel`` of a shipped target name or a target file path (loaded once)."""
    from latency_models.model import LatencyModel

    path = target_path(target)
    st = path.stat() if path.is_file() else None
    key = f"{path.resolve()}:{st.st_mtime_ns if st else 0}:{st.st_size if st else 0}"
    if key not in _LOADED:
        _LOADED[key] = LatencyModel.from_file(path)
    return _LOADED[key]


def __getattr__(name: str):
    if name == "LatencyModel":
        from latency_models.model import LatencyModel

        return LatencyModel
    raise AttributeError(f"module 'latency_models' has no attribute {name!r}")


__all__ = ["LatencyModel", "PER_CPU", "TARGET_DIR", "cpu_name", "device_cpu", "load", "machine_target",
           "target_path", "targets"]
