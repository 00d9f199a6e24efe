"""Measure layers and whole networks on this machine, batch 1.

Backends: ``onnxruntime`` (default; the module is exported to ONNX opset 17 and run by a CPU
session with ``threads`` intra-op threads, sequential execution, all graph optimisations),
``torch`` (eager, ``torch.set_num_threads(threads)``, inference mode), and the phone runtimes
``tflite`` (LiteRT + XNNPACK) and ``executorch`` (XNNPACK delegate), whose conversion and loading
live in ``latency_models.mobile_backends``: ``Runner`` dispatches to it, and the one timing loop
here (``measure_items``, ``measure_passes``) times every backend.

These machines are shared, small VMs whose speed drifts 10-25% within minutes and whose other
users preempt any run longer than a time slice, so at one thread runs are timed in the thread's CPU
time (``use_clock``), and every measurement is *relative*: the measured item and a fixed reference block (``REFERENCE``) are timed
in alternating rounds (warm-up, then ``rounds`` x (``reps`` runs of the reference, ``reps`` runs of
the item)), and the item's cost is the median over rounds of (item median / reference median).
Rounds whose ratio lies more than 20% off the median are re-measured once, interleaved again.
The reference's own median (ms) is kept with each measurement.  ``call_overhead`` measures the
cost of one ``run`` call on a 1-element model (it is not part of a layer inside a network).

    python -m latency_models.profile --arch mobilenet_v2 [--backend torch|tflite|executorch] [--threads 1]
prints one network's measured latency (zoo name or arch string).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from search_space.arch import Arch, BlockSpec, Signature
from search_space.errors import OneLineParser, TargetError, cli_entry, field_error

from latency_models import mobile_backends

DESKTOP_BACKENDS = ("onnxruntime", "torch")
BACKENDS = DESKTOP_BACKENDS + mobile_backends.BACKENDS
# the fixed reference: an MBConv at 56x56 (~44 M MACs, ~1 ms on one core with ONNX Runtime)
REFERENCE = Signature("mbconv", BlockSpec("mbconv", 32, 32, mid_ch=192, kernel=3, stride=1, act="relu6",
                                          residual=True), 32, 56, 56)


# the smallest input a measured network may take (train.py's --resolution floor too)
MIN_RESOLUTION = 16


def check_at_least(field: str, value: int, lo: int) -> None:
    """A count option below its floor: one line naming the field and the allowed values, before
    anything is measured."""
    if value < lo:
        raise field_error(TargetError, field, value, f"an integer >= {lo}")


def check_positive(field: str, value: float) -> None:
    if not value > 0:
        raise field_error(TargetError, field, value, "a number > 0")


def check_timing_options(threads: int | None = None, rounds: int | None = None,
                         resolution: int | None = None, prefix: str = "--") -> None:
    """The options every measuring command shares: ``threads`` and ``rounds`` >= 1, ``resolution`` >= 16
    (``None``: not given, not checked)."""
    if threads is not None:
        check_at_least(f"{prefix}threads", threads, 1)
    if rounds is not None:
        check_at_least(f"{prefix}rounds", rounds, 1)
    if resolution is not None:
        check_at_least(f"{prefix}resolution", resolution, MIN_RESOLUTION)


def cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("EDGENAS_CACHE", "~/.cache/edgenas")))


# ---- the export caches: ONNX / .tflite / .pte files by item key, bounded on disk ----
EXPORT_CACHE_ENV = "EDGENAS_EXPORT_CACHE_GB"
EXPORT_CACHE_GB = 4.0  # default size limit of each kind's cache, GiB


def export_cache_limit() -> int:
    """The size limit of each export cache in bytes: ``$EDGENAS_EXPORT_CACHE_GB`` GiB (default 4;
    ``0``: no caching).  A bad value: one line naming the variable and the allowed values."""
    text = os.environ.get(EXPORT_CACHE_ENV, "").strip()
    if not text:
        return int(EXPORT_CACHE_GB * 2**30)
    try:
        gb = float(text)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb >= 0):
        raise field_error(TargetError, EXPORT_CACHE_ENV, text, "a number of GiB >= 0 (0 turns the export cache off)")
    return int(gb * 2**30)


_EXPORT_CACHES: dict[tuple[str, int], Any] = {}
_CACHE_WARNED: set[str] = set()  # kinds whose cache failed in this process: warned once, then not used


def export_cache(kind: str):
    """The on-disk cache of one kind of export (``onnx``, ``tflite``, ``pte``): a ``diskcache.Cache``
    in ``cache_dir()/exports/<kind>`` holding at most ``export_cache_limit()`` bytes (its volume:
    stored files plus its SQLite index; sqlite's WAL journal, a few MB at most, is not counted),
    evicting the least recently used, safe across processes (measuring passes run in spawned ones).
    ``None`` when caching is off (``EDGENAS_EXPORT_CACHE_GB=0``: nothing is written).  One handle per
    directory and limit in a process (opening one costs ~25 ms); closing it (``with``) only closes
    its connection, which the next use reopens."""
    limit = export_cache_limit()
    if limit == 0 or kind in _CACHE_WARNED:  # off, or found unusable earlier in this process
        return None
    path = str(cache_dir() / "exports" / kind)
    cache = _EXPORT_CACHES.get((path, limit))
    if cache is None:
        import diskcache

        cache = _EXPORT_CACHES[path, limit] = diskcache.Cache(path, size_limit=limit,
                                                              eviction_policy="least-recently-used")
    return cache


def _cache_failed(kind: str, exc: BaseException) -> None:
    """A cache that cannot be opened, read or written (a full disk, a damaged cache.db) costs re-exports,
    not the measurement: one warning per kind and process, then that kind goes uncached (no retry per item).  (A lock another process
    holds is waited for: the calls pass ``retry=True``.)"""
    if kind not in _CACHE_WARNED:
        _CACHE_WARNED.add(kind)
        print(f"warning: export cache {cache_dir() / 'exports' / kind} unusable ({type(exc).__name__}: {exc}); "
              f"exporting without it (delete that directory, or set {EXPORT_CACHE_ENV}=0)", file=sys.stderr)


def _cache_errors() -> tuple:
    import sqlite3

    import diskcache

    return (OSError, sqlite3.Error, diskcache.Timeout)


def export_cache_get(kind: str, digest: str) -> tuple[bytes | None, str | None]:
    """(the cached export, its tag) of ``digest``, or (None, None): a miss, caching off, or a cache
    that cannot be read (``_cache_failed``)."""
    try:
        cache = export_cache(kind)  # opening reads cache.db: a damaged one fails here
        if cache is None:
            return None, None
        return cache.get(digest, tag=True, retry=True)
    except _cache_errors() as exc:
        _cache_failed(kind, exc)
        return None, None


def export_cache_put(kind: str, digest: str, data: bytes, tag: str | None = None) -> bool:
    """Store ``data`` under ``digest``, then evict least recently used items until the cache's volume
    is within its limit (diskcache evicts in batches of up to 10, so an overflow of a cache holding
    few items may empty it, the new one included).  While a write is in flight the directory holds
    up to the limit plus that item.  An item larger than the limit is not stored (diskcache would
    store it and keep the cache above its limit until the next write).  True when stored."""
    try:
        cache = export_cache(kind)
        if cache is None or len(data) > cache.size_limit:
            return False
        cache.set(digest, data, tag=tag, retry=True)
        cache.cull(retry=True)  # set() culls at most 10 items; this culls down to the limit
    except _cache_errors() as exc:  # e.g. a full disk: the export in hand is still good
        _cache_failed(kind, exc)
        return False
    return True


def machine_info(backend: str = "onnxruntime", threads: int = 1) -> dict[str, Any]:
    from latency_models import cpu_name

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "backend": backend,
            "threads": threads}
    import torch

    info["torch"] = torch.__version__
    if backend == "onnxruntime":
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    elif backend in mobile_backends.BACKENDS:
        info.update(mobile_backends.versions(backend))
    return info


def runtime_version(info: dict[str, Any]) -> str:
    """The runtime's version(s) in ``machine_info``'s dict, as one string for target files."""
    backend = info.get("backend", "onnxruntime")
    if backend in mobile_backends.BACKENDS:
        return ", ".join(f"{k} {info.get(k)}" for k in mobile_backends.versions(backend))
    return str(info.get("onnxruntime" if backend == "onnxruntime" else "torch"))


# --------------------------------------------------------------------------------------------
# Modules of single layers
# --------------------------------------------------------------------------------------------
def layer_module(sig: Signature):
    """The torch module of one layer (stem, block or head) and its input shape."""
    from search_space import modules
    from search_space.blocks import get_block_type
    from search_space.builder import head_kwargs, stem_kwargs

    if sig.kind == "stem":
        m = modules.Stem(**stem_kwargs(sig.spec))
    elif sig.kind == "head":
        m = modules.Head(**head_kwargs(sig.spec, sig.in_ch, sig.num_classes or 1000))
    else:
        m = get_block_type(sig.spec.type).module(sig.spec)
    return m, (1, sig.in_ch, sig.h, sig.w)


def _randomize_bn(module) -> None:
    """Give BatchNorm non-trivial statistics (not needed for timing, but keeps values finite/real)."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.0)


class Runner:
    """One compiled item: ``run()`` executes it once on a fixed input.  ``undelegated``: the ops a
    phone runtime left outside XNNPACK (ExecuTorch; empty elsewhere)."""

    def __init__(self, module, shape: tuple[int, ...], backend: str, threads: int, key: str = "") -> None:
        import torch

        if backend not in BACKENDS:
            raise field_error(TargetError, "backend", backend, BACKENDS)
        module.eval()
        _randomize_bn(module)
        x = torch.randn(*shape)
        self.backend = backend
        self.undelegated: list[str] = []
        if backend in mobile_backends.BACKENDS:
            run, self.undelegated = mobile_backends.make_run(backend, module, x, threads, key)
        elif backend == "torch":
            torch.set_num_threads(threads)
            self._mod, self._x = module, x

            def run():
                with torch.inference_mode():
                    module(x)
        else:
            import onnxruntime as ort

            data = onnx_bytes(module, x, key)
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x.numpy()}
            self._sess = sess

            def run():
                sess.run(None, feed)
        self.run: Callable[[], None] = run


def onnx_bytes(module, x, key: str = "") -> bytes:
    """ONNX opset 17 export (cached on disk by ``key`` when given: ``export_cache("onnx")``)."""
    import torch

    digest = None
    if key:
        digest = hashlib.sha1(f"{key}|{tuple(x.shape)}|{torch.__version__}".encode()).hexdigest()[:20]
        data, _ = export_cache_get("onnx", digest)
        if data is not None:
            return data
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), f, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"])
    data = f.getvalue()
    if digest is not None:
        export_cache_put("onnx", digest, data)
    return data


def layer_runner(sig: Signature, backend: str, threads: int) -> Runner:
    m, shape = layer_module(sig)
    return Runner(m, shape, backend, threads, key=f"layer|{sig.key}")


def net_runner(arch: Arch, resolution: int, backend: str, threads: int, num_classes: int = 1000) -> Runner:
    return Runner(arch.build(num_classes), (1, arch.stem.in_ch, resolution, resolution), backend, threads,
                  key=f"net|{arch.to_string()}|{resolution}|{num_classes}")


def null_runner(backend: str, threads: int) -> Runner:
    """A 1-element ReLU: the cost of one call of the backend."""
    import torch

    return Runner(torch.nn.ReLU(), (1, 1, 1, 1), backend, threads, key="null")


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
CLOCK: Callable[[], float] = time.thread_time


def use_clock(threads: int) -> str:
    """Time with the calling thread's CPU time at one thread (a shared, overloaded VM preempts any
    run longer than a time slice, which wall time would count; CPU time does not), wall time when
    more threads work (their CPU times would add up)."""
    global CLOCK
    if threads == 1:
        CLOCK = time.thread_time
        return "thread CPU time"
    CLOCK = time.perf_counter
    return "wall time"


def _time(run: Callable[[], None], reps: int) -> float:
    """Median time of ``reps`` calls on ``CLOCK``, in ms."""
    ts = []
    pc = CLOCK
    for _ in range(reps):
        t0 = pc()
        run()
        ts.append(pc() - t0)
    return 1e3 * statistics.median(ts)


NOISY_SPREAD = 0.03  # median round-to-round spread above which errors of a few percent cannot be read from a run


def noise_line(spreads: list[float], what: str = "networks") -> str:
    """One line on a run's timing noise: the median and p90 of its items' round-to-round spread (IQR /
    median of the per-round ratios, ``Measurement.spread``), prefixed ``warning:`` when the median
    exceeds ``NOISY_SPREAD`` (quiet machines here: ~1% on the AMD EPYC VM; the Xeon VM 3-8%)."""
    if not spreads:
        return f"timing noise: no {what} measured"
    med, p90 = (100 * float(v) for v in np.percentile(spreads, [50, 90]))
    line = f"timing noise: round-to-round spread median {med:.1f}%, p90 {p90:.1f}% over {len(spreads)} {what}"
    if med > 100 * NOISY_SPREAD:
        line = (f"warning: {line} (over {100 * NOISY_SPREAD:.0f}%: this machine's timings move too much for errors "
                "of a few percent to be read from them; a quiet machine shows ~1%, docs/latency.md)")
    return line


@dataclass
class Measurement:
    rel: float          # item / reference, median over rounds
    spread: float       # relative spread of the per-round ratios (IQR / median)
    ref_ms: float       # the reference's median over rounds
    ms: float           # rel * ref_ms
    n: int              # timed runs of the item
    remeasured: int     # rounds re-measured as outliers

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def reps_for(ms_guess: float, budget_ms: float = 15.0, lo: int = 3, hi: int = 50) -> int:
    return int(min(hi, max(lo, budget_ms / max(ms_guess, 1e-3))))


def measure_relative(run: Callable[[], None], ref: Callable[[], None], rounds: int = 7,
                     reps: int | None = None, ref_reps: int | None = None, outlier: float = 0.2) -> Measurement:
    """Interleaved relative timing of ``run`` against ``ref`` (see the module docstring)."""
    # warm-up (and a first guess of each cost)
    for _ in range(3):
        ref()
        run()
    g_ref, g_run = _time(ref, 3), _time(run, 3)
    reps = reps or reps_for(g_run)
    ref_reps = ref_reps or reps_for(g_ref)
    ratios, refs = [], []
    for _ in range(rounds):
        r = _time(ref, ref_reps)
        t = _time(run, reps)
        ratios.append(t / r)
        refs.append(r)
    med = statistics.median(ratios)
    remeasured = 0
    for i, q in enumerate(ratios):
        if abs(q / med - 1.0) > outlier:
            r = _time(ref, ref_reps)
            t = _time(run, reps)
            ratios[i], refs[i] = t / r, r
            remeasured += 1
    rel = statistics.median(ratios)
    q1, q3 = np.percentile(ratios, [25, 75])
    ref_ms = statistics.median(refs)
    return Measurement(rel, float((q3 - q1) / rel), ref_ms, rel * ref_ms, reps * (rounds + remeasured), remeasured)


def measure_absolute(run: Callable[[], None], rounds: int = 7, reps: int | None = None) -> tuple[float, float]:
    """(median ms, relative IQR) of ``run`` alone."""
    for _ in range(3):
        run()
    reps = reps or reps_for(_time(run, 3))
    meds = [_time(run, reps) for _ in range(rounds)]
    q1, q3 = np.percentile(meds, [25, 75])
    m = statistics.median(meds)
    return m, float((q3 - q1) / m)


# --------------------------------------------------------------------------------------------
# Worker: measures a list of items in this process (run in a fresh process per pass)
# --------------------------------------------------------------------------------------------
def measure_items(items: list[tuple[str, Any]], backend: str, threads: int, rounds: int = 7) -> list[dict]:
    """items: ("layer", Signature) | ("net", (Arch, resolution)) | ("null", None), on any backend.
    Returns one dict per item: key, kind, rel, spread, ref_ms, ms, n, remeasured, pid, and on the
    phone runtimes ``undelegated`` (ops left outside XNNPACK)."""
    import torch

    if backend not in BACKENDS:
        raise field_error(TargetError, "backend", backend, BACKENDS)
    check_timing_options(threads, rounds, prefix="")
    mobile = backend in mobile_backends.BACKENDS
    torch.set_num_threads(1 if mobile else threads)  # the phone runtimes have their own pools
    use_clock(threads)
    ref = layer_runner(REFERENCE, backend, threads)
    out = []
    for kind, item in items:
        if kind == "layer":
            key, runner = item.key, layer_runner(item, backend, threads)
        elif kind == "net":
            arch, res = item
            key, runner = f"{arch.to_string()}@{res}", net_runner(arch, res, backend, threads)
        else:
            key, runner = "null", null_runner(backend, threads)
        m = measure_relative(runner.run, ref.run, rounds=rounds)
        row = {"key": key, "kind": kind, **m.to_dict(), "pid": os.getpid()}
        if mobile:
            row["undelegated"] = sorted(set(runner.undelegated))
        out.append(row)
        del runner
    return out


def measure_passes(items: list[tuple[str, Any]], backend: str, threads: int = 1, rounds: int = 7,
                   passes: int = 3, log=print) -> dict[str, dict]:
    """``measure_items`` in ``passes`` fresh processes; per key the row of the pass with the smallest
    relative cost, with ``passes`` and ``rel_max`` (the largest relative cost seen) added."""
    import concurrent.futures as cf
    import multiprocessing as mp

    best: dict[str, dict] = {}
    for p in range(passes):
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            rows = ex.submit(measure_items, items, backend, threads, rounds).result()
        for r in rows:
            b = best.get(r["key"])
            r = dict(r, passes=p + 1, rel_max=max(r["rel"], b["rel_max"]) if b else r["rel"])
            if b is None or r["rel"] < b["rel"]:
                best[r["key"]] = r
            else:
                b.update(passes=p + 1, rel_max=r["rel_max"])
        if log:
            log(f"pass {p + 1}/{passes}: {len(rows)} items, reference {rows[0]['ref_ms']:.3f} ms" if rows else
                f"pass {p + 1}/{passes}: nothing to measure")
    return best


@cli_entry
def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m latency_models.profile", description="Measure one network.")
    ap.add_argument("--arch", required=True, help="a zoo name (optionally name@width), an arch file or an arch string")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--backend", default="onnxruntime", help=f"one of {', '.join(BACKENDS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    if args.backend not in BACKENDS:
        raise field_error(TargetError, "--backend", args.backend, BACKENDS)
    check_timing_options(args.threads, args.rounds, args.resolution)
    arch = resolve_arch(args.arch)
    res = measure_items([("net", (arch, args.resolution))], args.backend, args.threads, args.rounds)[0]
    info = machine_info(args.backend, args.threads)
    print(f"{args.arch} @ {args.resolution}: {res['ms']:.3f} ms ({res['rel']:.3f} x reference at "
          f"{res['ref_ms']:.3f} ms; spread {100 * res['spread']:.1f}%) on {info['cpu']}, {args.backend}, "
          f"{args.threads} thread(s) ({runtime_version(info)})")
    if res.get("undelegated"):
        print(f"note: ops outside XNNPACK: {', '.join(res['undelegated'])}")
    return 0


def resolve_arch(text: str, field: str = "--arch") -> Arch:
    """A zoo name (``name`` or ``name@width``), an arch file or an arch string (the resolver of
    ``search_space.export``, which train and netadapt use too)."""
    from search_space.export import resolve_arch as export_resolve

    return export_resolve(text, field=field)[0]


if __name__ == "__main__":
    sys.exit(main())
