"""Profiler backends on the phone runtimes: ``tflite`` (LiteRT with its XNNPACK delegate) and
``executorch`` (a .pte lowered to the XNNPACK delegate).  These are the kernels a phone runs: the
published Pixel latencies were measured with TFLite, and ExecuTorch is PyTorch's on-device runtime.

A layer (``search_space.arch.signatures``: stem, block or head at an input shape) or a whole network
is converted once (litert-torch / ``torch.export`` + XNNPACK lowering), cached on disk by its
signature key (``profile.export_cache``: ``EDGENAS_CACHE``/exports/tflite, /pte, bounded by
``EDGENAS_EXPORT_CACHE_GB``), and timed in this process with the runtime's own
interpreter at ``threads`` threads.

Timing is ``latency_models.profile``'s, one loop for every backend (``profile.Runner`` calls
``make_run`` here for these two; ``profile.measure_items`` / ``measure_passes`` time them): one
thread, thread CPU time, every item interleaved with the fixed reference block
(``profile.REFERENCE``, on the same backend) and stored relative to it; several fresh processes,
minimum of medians.  Pitfalls handled here:

* ExecuTorch keeps the thread-pool size a method was *loaded* with: the pool is sized before every
  load (``search_space.export.set_executorch_threads``) and checked after it.
* LiteRT: ``num_threads`` is given to the interpreter (XNNPACK delegate) at creation.
* Ops XNNPACK does not take stay on ExecuTorch's portable kernels; they are recorded per item
  (``undelegated``) so that a slow layer can be told from a slow kernel.

    python -m latency_models.mobile_backends --arch mobilenet_v2 [--backend tflite|executorch]
        [--threads 1] [--rounds 7] [--resolution 224]
prints one network's latency on the runtime.
"""
from __future__ import annotations

import hashlib
import sys
from typing import Callable

from search_space.errors import OneLineParser, TargetError, cli_entry, field_error

BACKENDS = ("tflite", "executorch")
SUFFIX = {"tflite": "tflite", "executorch": "pte"}
EXTRA = {"tflite": "tflite", "executorch": "executorch"}


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise field_error(TargetError, "backend", backend, BACKENDS)


def versions(backend: str) -> dict[str, str]:
    """Versions of the runtime (and converter) behind ``backend``, for a target file's meta."""
    from importlib import metadata

    check_backend(backend)
    names = ("ai-edge-litert", "litert-torch") if backend == "tflite" else ("executorch",)
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def model_bytes(backend: str, module, x, key: str = "") -> tuple[bytes, list[str]]:
    """The converted model of ``module`` at input ``x`` (cached on disk by ``key`` when given), and
    the ops left outside XNNPACK (ExecuTorch only; LiteRT's delegate takes what it can at load)."""
    import torch

    from search_space import export as E

    from latency_models.profile import export_cache_get, export_cache_put

    check_backend(backend)
    digest = None
    if key:
        ver = ",".join(f"{k}={v}" for k, v in sorted(versions(backend).items()))
        digest = hashlib.sha1(f"{backend}|{key}|{tuple(x.shape)}|{torch.__version__}|{ver}".encode()).hexdigest()[:20]
        data, note = export_cache_get(SUFFIX[backend], digest)  # the tag: the undelegated ops
        if data is not None:
            return data, (note or "").split()
    module = module.eval()
    if backend == "tflite":
        data, left = E.tflite_bytes(module, shape=tuple(x.shape)), []
    else:
        data, left = E.lower_pte(module, shape=tuple(x.shape))
    if digest is not None:
        export_cache_put(SUFFIX[backend], digest, data, tag=" ".join(left))
    return data, left


def make_run(backend: str, module, x, threads: int, key: str = "") -> tuple[Callable[[], None], list[str]]:
    """The hook for ``profile.Runner``: convert (cached by ``key``); a no-argument run and the ops
    left outside XNNPACK."""
    data, left = model_bytes(backend, module.eval(), x, key)
    return _make_run(backend, data, x, threads), left


def _make_run(backend: str, data: bytes, x, threads: int) -> Callable[[], None]:
    from search_space import export as E

    if backend == "tflite":
        it = E.tflite_interpreter(data, threads)
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], x.numpy())
        it.invoke()
        return it.invoke
    method = E.pte_method(data, threads)  # sizes the thread pool before loading
    args = [x]
    method.execute(args)

    def run():
        method.execute(args)
    return run


@cli_entry
def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m latency_models.mobile_backends",
                       description="Measure one network on LiteRT or ExecuTorch (XNNPACK).")
    ap.add_argument("--arch", required=True, help="a zoo name (optionally name@width), an arch file or an arch string")
    ap.add_argument("--backend", default="tflite", help=f"one of {', '.join(BACKENDS)}")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    check_backend(args.backend)
    from latency_models.profile import check_timing_options, machine_info, measure_items, resolve_arch

    check_timing_options(args.threads, args.rounds, args.resolution)

    arch = resolve_arch(args.arch)
    r = measure_items([("net", (arch, args.resolution))], args.backend, args.threads, args.rounds)[0]
    info = machine_info("torch", args.threads)
    ver = ", ".join(f"{k} {v}" for k, v in versions(args.backend).items())
    print(f"{args.arch} @ {args.resolution}: {r['ms']:.3f} ms ({r['rel']:.3f} x reference at {r['ref_ms']:.3f} ms; "
          f"spread {100 * r['spread']:.1f}%) on {info['cpu']}, {args.backend} ({ver}), {args.threads} thread(s)")
    if r["undelegated"]:
        print(f"note: ops outside XNNPACK: {', '.join(r['undelegated'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
