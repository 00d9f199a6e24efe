"""Export an ``Arch`` as plain files: ``model.py`` (standalone torch code), ``model.onnx``, ``arch.yaml``,
and for phones ``model.tflite`` (LiteRT, through litert-torch) and ``model.pte`` (ExecuTorch, XNNPACK).

``model.py`` imports only torch.  It holds the source of the module classes the network uses, copied
from ``search_space/modules.py`` (with the helpers they need), a network class that wires stem, blocks
(constructor calls with literal keyword arguments) and head, and ``build(num_classes=...)``.  Its
``state_dict`` keys equal those of ``arch.build()``, so framework weights load with ``strict=True``.

CLI::

    python -m search_space.export NAME_OR_ARCH_FILE --out DIR [--width W] [--format py,onnx,yaml,tflite,pte]
                                  [--resolution R] [--num-classes N] [--weights FILE.pt]
                                  [--channels-last] [--verify]

Mobile formats (optional extras; asking for one without its extra is an error naming the extra):

* ``tflite``: ``model.tflite`` converted by litert-torch (``pip install 'edgenas[tflite]'``), fp32,
  batch 1.  ``--channels-last`` makes its input NHWC (``1 x R x R x C``, TFLite's native layout, no
  transpose in the graph); by default it takes NCHW like the torch module.
* ``pte``: ``model.pte`` lowered by ExecuTorch to its XNNPACK delegate (``pip install
  'edgenas[executorch]'``), fp32, batch 1, NCHW input.

``--verify`` runs every written model file with its own runtime (ONNX Runtime, LiteRT, ExecuTorch)
on a random input and prints the largest absolute difference from the torch module; it fails (exit
2) above ``VERIFY_TOLERANCE``.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any, Iterable

from search_space.arch import Arch, signatures
from search_space.errors import ArchError, EdgenasError, OneLineParser, cli_entry, field_error

FORMATS = ("py", "onnx", "yaml", "pt")           # need only the base install
MOBILE_FORMATS = ("tflite", "pte")               # need an optional extra each
ALL_FORMATS = FORMATS + MOBILE_FORMATS
DEFAULT_FORMATS = ("py", "onnx", "yaml")
FILE_NAMES = {"py": "model.py", "onnx": "model.onnx", "yaml": "arch.yaml", "pt": "weights.pt",
              "tflite": "model.tflite", "pte": "model.pte"}
ONNX_OPSET = 17
# the pip extra and the module each mobile format needs
EXTRAS = {"tflite": ("tflite", "litert_torch", "litert-torch"), "pte": ("executorch", "executorch.exir", "executorch"),
          "litert": ("tflite", "ai_edge_litert.interpreter", "ai-edge-litert")}
VERIFY_TOLERANCE = 1e-4


class ExportError(EdgenasError):
    """An export could not be written (bad format list, output path, weights...)."""


# --------------------------------------------------------------------------------------------
# Code generation
# --------------------------------------------------------------------------------------------
def _modules_source() -> tuple[str, ast.Module]:
    from search_space import modules

    src = inspect.getsource(modules)
    return src, ast.parse(src)


def _top_level_defs(tree: ast.Module) -> dict[str, ast.stmt]:
    defs = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    defs[t.id] = node
    return defs


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _needed(roots: Iterable[str], defs: dict[str, ast.stmt]) -> set[str]:
    """Top-level definitions of modules.py that ``roots`` need, transitively."""
    need, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in need or name not in defs:
            continue
        need.add(name)
        todo.extend(_names_used(defs[name]) - need)
    return need


def _imports_for(tree: ast.Module, src: str, used: set[str]) -> list[str]:
    """The import lines of modules.py that bind a name the copied code uses."""
    lines = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = {(a.asname or a.name).split(".")[0] for a in node.names}
            if bound & used:
                text = ast.get_source_segment(src, node)
                lines.append(text)
    return lines


def _class_name(name: str) -> str:
    """``mobilenet_v3_small@0.75`` -> ``MobileNetV3Small`` (the width stays in the docstring)."""
    parts = re.split(r"[^0-9a-zA-Z]+", name.split("@")[0])
    out = "".join(p[:1].upper() + p[1:] for p in parts if p)
    for plain, styled in (("Mobilenext", "MobileNeXt"), ("Mobilenet", "MobileNet"), ("Shufflenet", "ShuffleNet"),
                          ("Mnasnet", "MnasNet"), ("Proxylessnas", "ProxylessNAS"), ("Fbnet", "FBNet")):
        out = out.replace(plain, styled)
    if not out or not out[0].isalpha():
        out = "Net" + out
    return out


def _call(cls_name: str, kwargs: dict[str, Any], defaults: dict[str, Any], extra: str = "") -> str:
    """``Cls(k=v, ...)`` with literal values, leaving out arguments equal to their defaults."""
    args = [f"{k}={v!r}" for k, v in kwargs.items()
            if not (k in defaults and defaults[k] is not inspect.Parameter.empty and defaults[k] == v)]
    if extra:
        args.append(extra)
    return f"{cls_name}({', '.join(args)})"


def _signature_defaults(cls) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


def generate_model_py(arch: Arch, num_classes: int = 1000, name: str = "", resolution: int = 224) -> str:
    """The source of a standalone ``model.py`` for ``arch`` (imports only torch)."""
    from search_space import modules

    from search_space.builder import module_plan

    src, tree = _modules_source()
    defs = _top_level_defs(tree)
    plan = module_plan(arch, num_classes)  # (modules.py class name, kwargs): what arch.build() builds
    for cls_name_, _ in plan:
        if not isinstance(getattr(modules, cls_name_, None), type):
            raise ExportError(f"export: {cls_name_!r} is not a class of search_space/modules.py")
    sigs = signatures(arch, resolution, num_classes)
    roots = [c for c, _ in plan]

    def call(i: int, extra: str = "") -> str:
        c, kw = plan[i]
        return _call(c, kw, _signature_defaults(getattr(modules, c)), extra)

    block_lines = []
    for i, (spec, sig) in enumerate(zip(arch.blocks, sigs[1:-1])):
        oh, ow = sig.out_hw
        block_lines.append(f"            {call(i + 1)},  # {i}: {sig.h}x{sig.w}x{spec.in_ch} -> {oh}x{ow}x{spec.out_ch}")
    stem_call = call(0)
    head_cls, head_kw = plan[-1]
    head_kw = {k: v for k, v in head_kw.items() if k != "num_classes"}
    head_call = _call(head_cls, head_kw, _signature_defaults(getattr(modules, head_cls)), "num_classes=num_classes")

    need = _needed(roots, defs)
    body = [ast.get_source_segment(src, node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign))
            and any(n in need for n in ([node.name] if not isinstance(node, ast.Assign)
                                        else [t.id for t in node.targets if isinstance(t, ast.Name)]))]
    used = set().union(*(_names_used(defs[n]) for n in need)) | {"nn"}
    imports = _imports_for(tree, src, used)
    if not any(re.fullmatch(r"from torch import nn", line.strip()) for line in imports):
        imports.append("from torch import nn")

    cls_name = _class_name(name) if name else "Network"
    title = name or "network"
    arch_str = arch.to_string()
    out = [
        f'"""{title}: a standalone PyTorch model exported by edgenas.',
        "",
        "Needs only torch.  ``build(num_classes)`` returns the network; its state_dict keys match the",
        "edgenas framework module of the same architecture, so its weights load with strict=True.",
        "",
        "Architecture (the edgenas arch string, also in ``ARCH``):",
        "",
        f"    {arch_str}",
        '"""',
        *imports,
        "",
        f"ARCH = {arch_str!r}",
    ]
    for chunk in body:
        out += ["", "", chunk]
    out += [
        "",
        "",
        f"class {cls_name}(nn.Module):",
        f'    """stem -> {len(arch.blocks)} blocks -> head; block comments give HxWxC at {resolution}x{resolution}."""',
        "",
        "    def __init__(self, num_classes=1000):",
        "        super().__init__()",
        f"        self.stem = {stem_call}",
        "        self.blocks = nn.Sequential(",
        *block_lines,
        "        )",
        f"        self.head = {head_call}",
        "",
        "    def forward(self, x):",
        "        x = self.stem(x)",
        "        x = self.blocks(x)",
        "        return self.head(x)",
        "",
        "",
        f"def build(num_classes={num_classes}):",
        f'    """The {title} network (random init; load weights with load_state_dict)."""',
        f"    return {cls_name}(num_classes=num_classes)",
        "",
    ]
    return "\n".join(out)


def load_generated(source: str, module_name: str = "edgenas_generated_model"):
    """Execute generated model source and return its namespace as a module object."""
    import types

    mod = types.ModuleType(module_name)
    exec(compile(source, f"<{module_name}>", "exec"), mod.__dict__)
    return mod


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
def _check_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(formats)
    if not formats:
        raise field_error(ExportError, "format", "", ALL_FORMATS)
    for f in formats:
        if f not in ALL_FORMATS:
            raise field_error(ExportError, "format", f, ALL_FORMATS)
    return formats


def require(what: str):
    """Import the module that mobile format ``what`` (tflite, pte, litert) needs, or raise an
    ExportError naming the pip extra that provides it."""
    import importlib

    extra, module, package = EXTRAS[what]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"format {what}: needs the {package} package, which is not installed ({exc}); "
                          f"install it with: pip install 'edgenas[{extra}]'") from None


def export(arch: Arch, out_dir, formats=DEFAULT_FORMATS, num_classes: int = 1000, resolution: int = 224,
           state_dict=None, name: str = "", channels_last: bool = False, log=None) -> dict[str, Path]:
    """Write ``arch`` to ``out_dir`` in ``formats`` (py, onnx, yaml, pt, tflite, pte); return {format: path}.

    ``state_dict`` (optional) holds the framework module's weights; they go into the ONNX, TFLite and
    .pte files and ``weights.pt``.  The generated ``model.py`` is checked here: built in a fresh
    namespace, its state_dict must have the framework module's keys and shapes.  ``channels_last``
    makes the TFLite model's input NHWC (the other files keep NCHW).  ``log`` (a print-like callable)
    gets notes, e.g. the ops a .pte leaves outside the XNNPACK delegate.
    """
    import torch

    formats = _check_formats(formats)
    for f in formats:  # a missing extra fails before anything is written
        if f in MOBILE_FORMATS:
            require(f)
    if not isinstance(arch, Arch):
        raise field_error(ExportError, "arch", type(arch).__name__, "an Arch")
    for fname, v in (("num_classes", num_classes), ("resolution", resolution)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise field_error(ExportError, fname, v, "a positive integer")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"out: {out} exists and is not a directory; allowed: a directory path")
    model = arch.build(num_classes=num_classes).eval()
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise ExportError(f"weights: do not fit the arch: {' '.join(first[:2])[:300]}") from None
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    if "py" in formats:
        source = generate_model_py(arch, num_classes=num_classes, name=name, resolution=resolution)
        generated = load_generated(source).build(num_classes=num_classes)
        ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        theirs = [(k, tuple(v.shape)) for k, v in generated.state_dict().items()]
        if ours != theirs:  # a bug in codegen, not user input
            diff = next((a, b) for a, b in zip(ours + [None], theirs + [None]) if a != b)
            raise AssertionError(f"generated model.py state_dict differs from arch.build(): {diff}")
        p = out / FILE_NAMES["py"]
        p.write_text(source)
        written["py"] = p
    if "yaml" in formats:
        p = out / FILE_NAMES["yaml"]
        arch.save(p)
        written["yaml"] = p
    if "pt" in formats:
        p = out / FILE_NAMES["pt"]
        torch.save(model.state_dict(), p)
        written["pt"] = p
    if "onnx" in formats:
        p = out / FILE_NAMES["onnx"]
        export_onnx(model, p, resolution=resolution, in_ch=arch.stem.in_ch)
        written["onnx"] = p
    if "tflite" in formats:
        p = out / FILE_NAMES["tflite"]
        p.write_bytes(tflite_bytes(model, resolution=resolution, in_ch=arch.stem.in_ch, channels_last=channels_last))
        written["tflite"] = p
    if "pte" in formats:
        p = out / FILE_NAMES["pte"]
        p.write_bytes(pte_bytes(model, resolution=resolution, in_ch=arch.stem.in_ch, log=log))
        written["pte"] = p
    return written


def export_onnx(model, path, resolution: int = 224, in_ch: int = 3) -> None:
    """torch.onnx (TorchScript exporter, opset 17), batch dimension dynamic; checked by onnx.checker."""
    import warnings

    import onnx
    import torch

    x = torch.zeros(1, in_ch, resolution, resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))


def _quiet():
    """Silence the converters' progress lines and warnings (they print to stdout/stderr)."""
    import contextlib
    import io
    import logging
    import warnings

    @contextlib.contextmanager
    def cm():
        buf = io.StringIO()
        level = logging.root.level
        logging.root.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
                warnings.simplefilter("ignore")
                yield
        finally:
            logging.root.setLevel(level)
    return cm()


def tflite_bytes(module, resolution=224, in_ch: int = 3, channels_last: bool = False, shape=None) -> bytes:
    """A LiteRT flatbuffer of ``module`` (eval mode, fp32, batch 1) through litert-torch.

    ``shape`` (NCHW) overrides ``(1, in_ch, resolution, resolution)``; ``resolution`` may be an
    (H, W) pair.  With ``channels_last`` the model's input is NHWC."""
    import os
    import tempfile

    import torch

    litert_torch = require("tflite")
    if shape is None:
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        shape = (1, in_ch, h, w)
    module = module.eval()
    x = torch.zeros(*shape)
    with _quiet():
        if channels_last:
            module = litert_torch.to_channel_last_io(module, args=[0])
            x = x.permute(0, 2, 3, 1).contiguous()
        edge = litert_torch.convert(module, (x,))
        fd, tmp = tempfile.mkstemp(suffix=".tflite")
        os.close(fd)
        try:
            edge.export(tmp)
            return Path(tmp).read_bytes()
        finally:
            os.unlink(tmp)


def pte_bytes(module, resolution=224, in_ch: int = 3, shape=None, require_full_delegation: bool = False,
              log=None) -> bytes:
    """An ExecuTorch program of ``module`` (eval mode, fp32, batch 1, NCHW) lowered to XNNPACK.

    Ops XNNPACK does not take (e.g. a ``mean`` without keepdim, ``chunk``) stay on ExecuTorch's
    portable kernels; they are named through ``log`` (or are an error with ``require_full_delegation``)."""
    data, left = lower_pte(module, resolution, in_ch, shape)
    if left:
        msg = f"ops left to ExecuTorch's portable kernels (not XNNPACK): {', '.join(sorted(set(left)))}"
        if require_full_delegation:
            raise ExportError(f"format pte: {msg}; allowed: modules whose every op XNNPACK supports")
        if log is not None:
            log(f"note: model.pte: {msg}")
    return data


def lower_pte(module, resolution=224, in_ch: int = 3, shape=None) -> tuple[bytes, list[str]]:
    """(.pte bytes, names of the compute ops left outside the XNNPACK delegate)."""
    import torch

    require("pte")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if shape is None:
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        shape = (1, in_ch, h, w)
    x = torch.zeros(*shape)
    with _quiet(), torch.no_grad():
        ep = torch.export.export(module.eval(), (x,))
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        left = undelegated_ops(edge.exported_program())
        return edge.to_executorch().buffer, left


def undelegated_ops(exported_program) -> list[str]:
    """Names of the compute ops of a lowered ExecuTorch graph that stayed outside the delegates."""
    skip = ("getitem", "executorch_call_delegate", "alloc", "view", "_clone_dim_order", "clone")
    left = []
    for node in exported_program.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if not any(s in name for s in skip):
            left.append(name)
    return left


# --------------------------------------------------------------------------------------------
# Running exported files with their own runtimes
# --------------------------------------------------------------------------------------------
def tflite_interpreter(model, threads: int = 1):
    """A LiteRT interpreter (XNNPACK delegate, ``threads`` threads) of a .tflite path or bytes,
    tensors allocated."""
    interp_mod = require("litert")
    with _quiet():
        if isinstance(model, (bytes, bytearray)):
            it = interp_mod.Interpreter(model_content=bytes(model), num_threads=threads)
        else:
            it = interp_mod.Interpreter(model_path=str(model), num_threads=threads)
        it.allocate_tensors()
    return it


def set_executorch_threads(threads: int) -> None:
    """Size ExecuTorch's thread pool.  A method keeps the pool size it was loaded with: call this
    *before* loading a program (``pte_method``)."""
    require("pte")
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    got = portable_lib._threadpool_get_thread_count()
    if got != threads:
        raise ExportError(f"threads: ExecuTorch's thread pool has {got} threads after asking for {threads}")


class PteMethod:
    """A loaded ExecuTorch ``forward`` that keeps its program (and the program's bytes) alive: a
    method whose program was garbage-collected crashes the process when executed."""

    def __init__(self, data, program, method) -> None:
        self._data, self._program, self._method = data, program, method

    def execute(self, inputs):
        return self._method.execute(inputs)


def pte_method(model, threads: int = 1) -> PteMethod:
    """The loaded ``forward`` method of a .pte path or bytes, on a ``threads``-thread pool."""
    require("pte")
    set_executorch_threads(threads)
    from executorch.runtime import Runtime

    rt = Runtime.get()
    data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    program = rt.load_program(data)
    return PteMethod(data, program, program.load_method("forward"))


def run_exported(path, x, threads: int = 1):
    """Run an exported model file (.onnx, .tflite, .pte) on the NCHW tensor/array ``x``; return the
    first output as a numpy array.  A channels-last .tflite gets ``x`` transposed to NHWC."""
    import numpy as np

    path = Path(path)
    xn = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x), dtype=np.float32)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: xn})[0]
    if path.suffix == ".tflite":
        it = tflite_interpreter(path, threads)
        inp = it.get_input_details()[0]
        if tuple(inp["shape"]) != xn.shape and tuple(inp["shape"]) == (xn.shape[0], *xn.shape[2:], xn.shape[1]):
            xn = np.ascontiguousarray(xn.transpose(0, 2, 3, 1))
        it.set_tensor(inp["index"], xn)
        it.invoke()
        return np.array(it.get_tensor(it.get_output_details()[0]["index"]))
    if path.suffix == ".pte":
        import torch

        method = pte_method(path, threads)
        return method.execute([torch.from_numpy(xn)])[0].detach().numpy()
    raise field_error(ExportError, "model file", path.name, "a .onnx, .tflite or .pte file")


def verify(written: dict[str, Path], model, x) -> dict[str, float]:
    """{format: max |runtime output - torch output|} for each written model file (onnx, tflite, pte)."""
    import numpy as np
    import torch

    with torch.no_grad():
        ref = model.eval()(x).numpy()
    out = {}
    for fmt in ("onnx", "tflite", "pte"):
        if fmt in written:
            y = run_exported(written[fmt], x)
            out[fmt] = float(np.abs(y.reshape(ref.shape) - ref).max())
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def resolve_arch(target: str, width: float | None = None, field: str = "NAME_OR_ARCH_FILE") -> tuple[Arch, str]:
    """A zoo name (``name`` or ``name@width``), an arch file (.yaml/.yml/.json/arch string file), a
    net.config, or an arch string -> (arch, label).  ``field`` names the option in error messages."""
    p = Path(target)
    looks_like_file = p.suffix in (".yaml", ".yml", ".json", ".txt", ".config") or "/" in target

    def exists(q: Path) -> bool:
        try:
            return q.exists()
        except OSError:  # e.g. an arch string longer than a file name may be
            return False

    if target.startswith("stem_") and not exists(p):
        if width not in (None, 1.0):
            raise field_error(ArchError, "--width", width, "only with a zoo name")
        return Arch.from_string(target), "network"
    if exists(p) and p.is_file():
        if width not in (None, 1.0):
            raise field_error(ArchError, "--width", width, "only with a zoo name (an arch file has explicit channels)")
        if p.suffix == ".config":
            from search_space.importers import read_net_config

            nc = read_net_config(p)
            return nc.arch, nc.name
        return Arch.load(p), p.stem if p.stem != "arch" else "network"
    if exists(p):
        raise ArchError(f"arch file: {target} is not a file; allowed: a .yaml/.yml/.json arch or a net.config")
    if looks_like_file:
        raise ArchError(f"arch file: {target} does not exist")
    from search_space import zoo

    names = zoo.names()
    at = "@" in target and target.partition("@")[0] in names
    if at:
        target, width = zoo.split_width(target, width, field)
    if target not in names:
        raise field_error(ArchError, field, target, "an arch file (.yaml/.yml/.json/.txt, net.config), an arch string "
                          f"(stem_...-head_...) or a zoo name[@width]: {', '.join(names)}")
    w = 1.0 if width is None else width
    widths = zoo.widths(target)
    if w not in widths:
        raise field_error(ArchError, f"{'--width' if not at else field + ' width'} (for {target})", w, widths)
    label = target if w == 1.0 else f"{target}@{w:g}"
    return zoo.get(target, width=w), label


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m search_space.export",
                                 description="Export a zoo net or an arch file as model.py / model.onnx / arch.yaml.")
    ap.add_argument("target", metavar="NAME_OR_ARCH_FILE", help="zoo name (or name@width), arch .yaml/.json, "
                    "net.config, or an arch string")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--width", type=float, default=None, help="width multiplier (zoo names only)")
    ap.add_argument("--format", default=",".join(DEFAULT_FORMATS), help=f"comma list of {', '.join(ALL_FORMATS)}")
    ap.add_argument("--resolution", type=int, default=224, help="ONNX/TFLite/.pte input resolution (default 224)")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--weights", default=None, help="a state_dict .pt of the framework module to export")
    ap.add_argument("--channels-last", action="store_true", help="model.tflite takes NHWC input")
    ap.add_argument("--verify", action="store_true",
                    help="run each written model file with its runtime and compare with torch")
    args = ap.parse_args(argv)
    formats = _check_formats(args.format)
    arch, label = resolve_arch(args.target, args.width)
    state_dict = None
    if args.weights:
        import torch

        wp = Path(args.weights)
        if not wp.is_file():
            raise ExportError(f"--weights: {wp} does not exist")
        try:
            state_dict = torch.load(wp, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
            raise ExportError(f"--weights: cannot read {wp} ({type(exc).__name__}); allowed: a state_dict .pt of "
                              f"{label} (torch.save(model.state_dict(), path))") from None
        if not isinstance(state_dict, dict):
            raise field_error(ExportError, "--weights", type(state_dict).__name__,
                              f"a state_dict .pt of {label} (torch.save(model.state_dict(), path))")
    written = export(arch, args.out, formats=formats, num_classes=args.num_classes, resolution=args.resolution,
                     state_dict=state_dict, name=label, channels_last=args.channels_last, log=print)
    print(f"arch: {arch.to_string()}")
    for fmt, p in written.items():
        print(f"wrote {p}")
    if args.verify:
        import torch

        model = arch.build(num_classes=args.num_classes).eval()
        if state_dict is not None:
            model.load_state_dict(state_dict)
        x = torch.randn(1, arch.stem.in_ch, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
        diffs = verify(written, model, x)
        for fmt, d in diffs.items():
            print(f"verify {FILE_NAMES[fmt]}: max abs diff from torch {d:.2e}")
        bad = {f: d for f, d in diffs.items() if not d <= VERIFY_TOLERANCE}
        if bad:
            raise ExportError(f"verify: {', '.join(FILE_NAMES[f] for f in bad)} differ from torch by more than "
                              f"{VERIFY_TOLERANCE:g} (max abs {max(bad.values()):.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
