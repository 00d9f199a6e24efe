"""Profiler backends on the phone runtimes: ``tflite`` (LiteRT with its XNNPACK delegate) and
``executorch`` (a .pte lowered to the XNNPACK delegate).  These are the kernels a phone runs: the
published Pixel latencies were measured with TFLite, and ExecuTorch is PyTorch's on-device runtime.

A layer (``search_space.arch.signatures``: stem, block or head at an input shape) or a whole network
is converted once (litert-torch / ``torch.export`` + XNNPACK lowering), cached on disk by its
signature key (``EDGENAS_CACHE``/tflite, /pte), and timed in this process with the runtime's own
interpreter at ``threads`` threads.

Timing follows ``latency_models.profile``: one thread, thread CPU time, every item interleaved with
the fixed reference block (``profile.REFERENCE``, on the same backend) and stored relative to it;
several fresh processes, minimum of medians.  Pitfalls handled here:

* ExecuTorch keeps the thread-pool size a method was *loaded* with: the pool is sized before every
  load (``search_space.export.set_executorch_threads``) and checked after it.
* LiteRT: ``num_threads`` is given to the interpreter (XNNPACK delegate) at creation.
* Ops XNNPACK does not take stay on ExecuTorch's portable kernels; they are recorded per item
  (``undelegated``) so that a slow layer can be told from a slow kernel.

Plugging into the profiler (``latency_models/profile.py``, owned elsewhere) takes one branch in
``Runner.__init__``::

    elif backend in mobile_backends.BACKENDS:
        self.run = mobile_backends.make_run(backend, module, x, threads, key)

with ``profile.BACKENDS`` extended by ``mobile_backends.BACKENDS`` and ``machine_info`` updated with
``mobile_backends.versions(backend)``.  Until then ``measure_items`` here mirrors
``profile.measure_items`` for these backends.

    python -m latency_models.mobile_backends --arch mobilenet_v2 [--backend tflite|executorch]
        [--threads 1] [--rounds 7] [--resolution 224]
prints one network's latency on the runtime.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any, Callable

from search_space.arch import Arch, Signature
from search_space.errors import TargetError, cli_entry, field_error

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

    check_backend(backend)
    path = None
    if key:
        ver = ",".join(f"{k}={v}" for k, v in sorted(versions(backend).items()))
        digest = hashlib.sha1(f"{backend}|{key}|{tuple(x.shape)}|{torch.__version__}|{ver}".encode()).hexdigest()[:20]
        path = cache_dir() / SUFFIX[backend] / f"{digest}.{SUFFIX[backend]}"
        note = path.with_suffix(".undelegated")
        if path.is_file():
            left = note.read_text().split() if note.is_file() else []
            return path.read_bytes(), left
    module = module.eval()
    if backend == "tflite":
        data, left = E.tflite_bytes(module, shape=tuple(x.shape)), []
    else:
        data, left = E.lower_pte(module, shape=tuple(x.shape))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        path.with_suffix(".undelegated").write_text(" ".join(left))
    return data, left


def cache_dir():
    from latency_models.profile import cache_dir as _cache_dir

    return _cache_dir()


class MobileRunner:
    """One converted item on a phone runtime: ``run()`` executes it once on a fixed input."""

    def __init__(self, module, shape: tuple[int, ...], backend: str, threads: int, key: str = "") -> None:
        import torch

        check_backend(backend)
        from latency_models.profile import _randomize_bn

        module.eval()
        _randomize_bn(module)
        x = torch.randn(*shape)
        self.backend = backend
        data, self.undelegated = model_bytes(backend, module, x, key)
        self.run: Callable[[], None] = _make_run(backend, data, x, threads)


def make_run(backend: str, module, x, threads: int, key: str = "") -> Callable[[], None]:
    """The hook for ``profile.Runner``: convert (cached by ``key``) and return a no-argument run."""
    data, _ = model_bytes(backend, module, x, key)
    return _make_run(backend, data, x, threads)


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


def layer_runner(sig: Signature, backend: str, threads: int) -> MobileRunner:
    from latency_models.profile import layer_module

    m, shape = layer_module(sig)
    return MobileRunner(m, shape, backend, threads, key=f"layer|{sig.key}")


def net_runner(arch: Arch, resolution: int, backend: str, threads: int, num_classes: int = 1000) -> MobileRunner:
    return MobileRunner(arch.build(num_classes), (1, arch.stem.in_ch, resolution, resolution), backend, threads,
                        key=f"net|{arch.to_string()}|{resolution}|{num_classes}")


def measure_items(items: list[tuple[str, Any]], backend: str, threads: int = 1, rounds: int = 7) -> list[dict]:
    """As ``profile.measure_items`` on a phone runtime.  items: ("layer", Signature) |
    ("net", (Arch, resolution)).  Returns per item: key, kind, rel, spread, ref_ms, ms, n,
    remeasured, pid, undelegated."""
    import torch

    from latency_models.features import lookup_key
    from latency_models.profile import REFERENCE, measure_relative, use_clock

    check_backend(backend)
    torch.set_num_threads(1)  # conversion only; the runtimes have their own pools
    use_clock(threads)
    ref = layer_runner(REFERENCE, backend, threads)
    out = []
    for kind, item in items:
        if kind == "layer":
            key, runner = lookup_key(item), layer_runner(item, backend, threads)
        elif kind == "net":
            arch, res = item
            key, runner = f"{arch.to_string()}@{res}", net_runner(arch, res, backend, threads)
        else:
            raise field_error(TargetError, "item kind", kind, ("layer", "net"))
        m = measure_relative(runner.run, ref.run, rounds=rounds)
        out.append({"key": key, "kind": kind, **m.to_dict(), "pid": os.getpid(),
                    "undelegated": sorted(set(runner.undelegated))})
        del runner
    return out


def measure_passes(items: list[tuple[str, Any]], backend: str, threads: int = 1, rounds: int = 7,
                   passes: int = 3, log=print) -> dict[str, dict]:
    """Each pass in a fresh process; per key the pass with the smallest relative cost (its row, with
    ``passes`` and ``rel_max`` added)."""
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
    ap = argparse.ArgumentParser(prog="python -m latency_models.mobile_backends",
                                 description="Measure one network on LiteRT or ExecuTorch (XNNPACK).")
    ap.add_argument("--arch", required=True, help="a zoo name (optionally name@width) or an arch string")
    ap.add_argument("--backend", default="tflite", help=f"one of {', '.join(BACKENDS)}")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    check_backend(args.backend)
    from latency_models.profile import machine_info, resolve_arch

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
