"""Export an ``Arch`` as plain files: ``model.py`` (standalone torch code), ``model.onnx``, ``arch.yaml``.

``model.py`` imports only torch.  It holds the source of the module classes the network uses, copied
from ``search_space/modules.py`` (with the helpers they need), a network class that wires stem, blocks
(constructor calls with literal keyword arguments) and head, and ``build(num_classes=...)``.  Its
``state_dict`` keys equal those of ``arch.build()``, so framework weights load with ``strict=True``.

CLI::

    python -m search_space.export NAME_OR_ARCH_FILE --out DIR [--width W] [--format py,onnx,yaml]
                                  [--resolution R] [--num-classes N] [--weights FILE.pt]
"""
from __future__ import annotations

import argparse
import ast
import inspect
import re
from pathlib import Path
from typing import Any, Iterable

from search_space.arch import Arch, signatures
from search_space.errors import ArchError, EdgenasError, cli_entry, field_error

FORMATS = ("py", "onnx", "yaml", "pt")
DEFAULT_FORMATS = ("py", "onnx", "yaml")
FILE_NAMES = {"py": "model.py", "onnx": "model.onnx", "yaml": "arch.yaml", "pt": "weights.pt"}
ONNX_OPSET = 17


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
        raise field_error(ExportError, "format", "", FORMATS)
    for f in formats:
        if f not in FORMATS:
            raise field_error(ExportError, "format", f, FORMATS)
    return formats


def export(arch: Arch, out_dir, formats=DEFAULT_FORMATS, num_classes: int = 1000, resolution: int = 224,
           state_dict=None, name: str = "") -> dict[str, Path]:
    """Write ``arch`` to ``out_dir`` in ``formats`` (py, onnx, yaml, pt); return {format: path}.

    ``state_dict`` (optional) holds the framework module's weights; they go into the ONNX file and
    ``weights.pt``.  The generated ``model.py`` is checked here: built in a fresh namespace, its
    state_dict must have the framework module's keys and shapes.
    """
    import torch

    formats = _check_formats(formats)
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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def resolve_arch(target: str, width: float | None = None) -> tuple[Arch, str]:
    """A zoo name, an arch file (.yaml/.yml/.json/arch string file), a net.config, or an arch string."""
    p = Path(target)
    looks_like_file = p.suffix in (".yaml", ".yml", ".json", ".txt", ".config") or "/" in target
    if target.startswith("stem_") and not p.exists():
        if width not in (None, 1.0):
            raise field_error(ArchError, "--width", width, "only with a zoo name")
        return Arch.from_string(target), "network"
    if p.is_file():
        if width not in (None, 1.0):
            raise field_error(ArchError, "--width", width, "only with a zoo name (an arch file has explicit channels)")
        if p.suffix == ".config":
            from search_space.importers import read_net_config

            nc = read_net_config(p)
            return nc.arch, nc.name
        return Arch.load(p), p.stem if p.stem != "arch" else "network"
    if p.exists():
        raise ArchError(f"arch file: {target} is not a file; allowed: a .yaml/.yml/.json arch or a net.config")
    if looks_like_file:
        raise ArchError(f"arch file: {target} does not exist")
    from search_space import zoo

    names = zoo.names()
    if target not in names:
        raise field_error(ArchError, "NAME_OR_ARCH_FILE", target, f"an arch file or a zoo name: {', '.join(names)}")
    w = 1.0 if width is None else width
    widths = zoo.widths(target)
    if w not in widths:
        raise field_error(ArchError, f"--width (for {target})", w, widths)
    label = target if w == 1.0 else f"{target}@{w:g}"
    return zoo.get(target, width=w), label


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m search_space.export",
                                 description="Export a zoo net or an arch file as model.py / model.onnx / arch.yaml.")
    ap.add_argument("target", metavar="NAME_OR_ARCH_FILE", help="zoo name, arch .yaml/.json, or net.config")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--width", type=float, default=None, help="width multiplier (zoo names only)")
    ap.add_argument("--format", default=",".join(DEFAULT_FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    ap.add_argument("--resolution", type=int, default=224, help="ONNX input resolution (default 224)")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--weights", default=None, help="a state_dict .pt of the framework module to export")
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
            raise ExportError(f"--weights: cannot read {wp}: {type(exc).__name__}") from None
        if not isinstance(state_dict, dict):
            raise field_error(ExportError, "--weights", type(state_dict).__name__, "a state_dict")
    written = export(arch, args.out, formats=formats, num_classes=args.num_classes, resolution=args.resolution,
                     state_dict=state_dict, name=label)
    print(f"arch: {arch.to_string()}")
    for fmt, p in written.items():
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
