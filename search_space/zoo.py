"""The zoo: famous hand- and machine-designed mobile networks as points of the search space.

Named networks are data: ``search_space/zoo/<family>.yaml`` holds, per network, the stage table
of its reference implementation (torchvision, timm, the MobileNeXt or ProxylessNAS authors' code)
and the family's channel rounding rule; this module turns a (name, width) into an ``Arch``.

    names() -> list[str]            widths(name) -> list[float]        get(name, width=1.0) -> Arch

Names carry what is not a width multiplier: the SqueezeNet version (``squeezenet1_0``,
``squeezenet1_1``), the ShuffleNetV1 group count (``shufflenet_v1_g1`` ... ``_g8``, each at 1.0x),
and a PP-OCR backbone's built-in scale (``ppocr_mv3_small_x035``: PaddleOCR's MobileNetV3-Small at
scale 0.35; ``ppocr_mv1_enhance``: MobileNetV1Enhance at scale 0.5).  Each of those has width 1.0.

CLI::

    python -m search_space.zoo list                       # name, width, params, MACs at 224
    python -m search_space.zoo show NAME [--width W] [--resolution R] [--json]

Zoo YAML schema (one file per family, ``nets: {name: spec}``); a spec has:

    reference   {width: "where the reference comes from"}
    widths      [w, ...] the multipliers offered
    base_width  a multiplier built into the net (PP-OCR's scale 0.35): channels use width * base_width
    round       {divisor: 8} -> a channel c becomes make_divisible(c * w, 8); "none": c as written
    stem        {c, k, s, act, pool, scale, bn, padding}
    block       defaults for every row (type, act, mid, se_rule, keep_pw, g, padding, ...)
    stages      rows {type, e | exp, c, n, s, k, g, se, act, scale, skip, opts, padding, first}; a row
                expands to n blocks, the first with stride s (an int or [sH, sW]; ``first`` overrides),
                the rest stride 1; a row without ``c`` keeps the channels (maxpool)
    head        {last, hidden, act, dropout, last_scale, hidden_scale, classifier, classifier_bias}
    per_width   {w: patch}: ``c: [...]`` replaces the rows' c in order; stem/head/block dicts merge

``scale`` of a channel value: width (c * w, the default), min1 (c * max(1, w): the head of
MobileNetV2), fixed (c as written).  Mid-channel rules (``block.mid``): expand (round(in * e)),
divisible (make_divisible(in * e), timm), explicit (``exp`` column scaled like channels),
sandglass (in // e, raised to make_divisible(ceil(out / 6), 16)), branch (out // 2), out_div (out // e:
ShuffleNetV1's bottleneck), none (0).
SE rule (``block.se_rule``): {of: mid | in, round: divisible | round, gate}: se * mid rounded
(MobileNetV3), or round(mid * se / e) (timm's EfficientNet family: SE sized from the block input).
A dwsep block's SE is sized from its depthwise width (in).
Residual: automatic (stride 1 and in == out) unless a row says ``skip: false``.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

from search_space.arch import Arch, BlockSpec, Head, Stem, make_divisible
from search_space.errors import ArchError, OneLineParser, cli_entry, field_error

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


# --------------------------------------------------------------------------------------------
# Loading the data
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _specs() -> dict[str, dict[str, Any]]:
    import yaml

    specs: dict[str, dict[str, Any]] = {}
    files = sorted(ZOO_DIR.glob("*.yaml"))
    if not files:
        raise ArchError(f"zoo: no data files in {ZOO_DIR}")
    for path in files:
        data = yaml.safe_load(path.read_text())
        for name, spec in (data or {}).get("nets", {}).items():
            if name in specs:
                raise ArchError(f"zoo: {name} defined twice ({path.name})")
            specs[name] = {**spec, "_file": path.name, "_family": data.get("family", path.stem)}
    return specs


def split_width(text: str, width: float | None = None, field: str = "zoo name") -> tuple[str, float | None]:
    """``name@width`` -> ``(name, width)``; text without ``@`` comes back with ``width`` unchanged.  A
    ``--width`` given as well, or a width that is not a number, is one line (``field`` names the option)."""
    name, at, w_text = text.partition("@")
    if not at:
        return text, width
    if width is not None:
        raise field_error(ArchError, "--width", width, f"only without name@width (got {text})")
    try:
        return name, float(w_text)
    except ValueError:
        raise field_error(ArchError, f"{field} width (for {name})", w_text, widths(name)) from None


def names() -> list[str]:
    """Zoo network names, in the order of the data files."""
    order = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1",
             "mnasnet_b1", "mnasnet_small", "proxylessnas_mobile", "fbnet_c", "shufflenet_v2", "mobilenext",
             "squeezenet1_0", "squeezenet1_1", "shufflenet_v1_g1", "shufflenet_v1_g2", "shufflenet_v1_g3",
             "shufflenet_v1_g4", "shufflenet_v1_g8", "xception", "ppocr_mv3_small_x035", "ppocr_mv1_enhance"]
    have = list(_specs())
    return [n for n in order if n in have] + sorted(n for n in have if n not in order)


def _spec(name: str) -> dict[str, Any]:
    specs = _specs()
    if name not in specs:
        raise field_error(ArchError, "zoo name", name, names())
    return specs[name]


def widths(name: str) -> list[float]:
    """Width multipliers offered for ``name``."""
    return [float(w) for w in _spec(name)["widths"]]


def reference(name: str, width: float = 1.0) -> str:
    """Where the zoo entry's numbers come from (e.g. ``torchvision.models.mobilenet_v2()``)."""
    ref = _spec(name).get("reference", {})
    return str(ref.get(width, ref.get(float(width), ref.get("default", ""))))


def entries() -> list[tuple[str, float]]:
    """Every (name, width) point of the zoo."""
    return [(n, w) for n in names() for w in widths(n)]


# --------------------------------------------------------------------------------------------
# Data -> Arch
# --------------------------------------------------------------------------------------------
def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _width_spec(spec: dict, width: float) -> dict:
    per = spec.get("per_width") or {}
    patch = per.get(width, per.get(float(width)))
    if not patch:
        return spec
    patch = dict(patch)
    spec = _merge(spec, {k: v for k, v in patch.items() if k != "c"})
    if "c" in patch:
        rows = [dict(r) for r in spec["stages"]]
        if len(patch["c"]) != len(rows):
            raise ArchError(f"zoo {spec.get('_file')}: per_width {width} c has {len(patch['c'])} values "
                            f"for {len(rows)} stages")
        for r, c in zip(rows, patch["c"]):
            r["c"] = c
        spec = {**spec, "stages": rows}
    return spec


def _channels(c: int, width: float, scale: str, rounding) -> int:
    if scale == "fixed" or rounding == "none":
        return int(c)
    w = max(1.0, width) if scale == "min1" else width
    if scale not in ("width", "min1"):
        raise ArchError(f"zoo: scale: got {scale!r}; allowed: width, min1, fixed")
    return make_divisible(c * w, int(rounding.get("divisor", 8)))


def _mid(rule: str, in_ch: int, out_ch: int, row: dict, width: float, rounding) -> int:
    e = row.get("e", 1)
    if rule == "expand":
        return int(round(in_ch * e))
    if rule == "divisible":
        return make_divisible(in_ch * e, int(rounding.get("divisor", 8)) if rounding != "none" else 8)
    if rule == "explicit":
        return _channels(row["exp"], width, row.get("scale", "width"), rounding)
    if rule == "sandglass":
        hidden = in_ch // e
        if hidden < out_ch / 6.0:
            hidden = make_divisible(math.ceil(out_ch / 6.0), 16)
        return hidden
    if rule == "branch":
        return out_ch // 2
    if rule == "out_div":
        return out_ch // int(e)
    if rule == "none":
        return 0
    raise ArchError(f"zoo: mid: got {rule!r}; allowed: expand, divisible, explicit, sandglass, branch, out_div, none")


def _se(row: dict, rule: dict, mid: int) -> int:
    ratio = row.get("se", 0)
    if not ratio:
        return 0
    if rule.get("of", "mid") == "mid":
        v = mid * ratio
        return make_divisible(v, 8) if rule.get("round", "divisible") == "divisible" else int(round(v))
    # timm EfficientNet family: SE sized from the block input, i.e. ratio / e of the mid channels
    return int(round(mid * ratio / row.get("e", 1)))


def get(name: str, width: float = 1.0) -> Arch:
    """The ``Arch`` of zoo network ``name`` at width multiplier ``width``."""
    spec = _spec(name)
    try:
        width = float(width)
    except (TypeError, ValueError):
        raise field_error(ArchError, f"zoo {name} width", width, widths(name)) from None
    if width not in widths(name):
        raise field_error(ArchError, f"zoo {name} width", width, widths(name))
    return _build_arch(_width_spec(spec, width), width * float(spec.get("base_width", 1.0)))


def scaled(name: str, width: float) -> Arch:
    """Zoo network ``name`` at ANY positive width multiplier, by the family's own rounding rule
    (``get`` only offers the widths its reference publishes)."""
    spec = _spec(name)
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
        raise field_error(ArchError, f"zoo {name} width", width, "a positive number")
    width = float(width)
    if width in widths(name):
        return get(name, width)
    return _build_arch(_width_spec(spec, width), width * float(spec.get("base_width", 1.0)))


@functools.lru_cache(maxsize=None)
def _cached(name: str, width: float) -> Arch:
    return get(name, width)


def _build_arch(spec: dict, width: float) -> Arch:
    rounding = spec.get("round", {"divisor": 8})
    s = spec["stem"]
    stem = Stem(out_ch=_channels(s["c"], width, s.get("scale", "width"), rounding), kernel=s.get("k", 3),
                stride=s.get("s", 2), act=s.get("act", "relu"), pool=bool(s.get("pool", False)),
                bn=bool(s.get("bn", True)), padding=s.get("padding", "same"))
    defaults = spec.get("block", {})
    blocks: list[BlockSpec] = []
    in_ch = stem.out_ch
    for row in spec["stages"]:
        row = {**defaults, **row}
        out_ch = _channels(row["c"], width, row.get("scale", "width"), rounding) if "c" in row else in_ch
        btype = row.get("type", "mbconv")
        for i in range(int(row.get("n", 1))):
            r = _merge(row, row.get("first", {})) if i == 0 else row
            stride = r.get("s", 1) if i == 0 else 1
            stride = tuple(int(v) for v in stride) if isinstance(stride, list) else int(stride)
            # blocks without an inner width ignore the family's mid rule
            mid_rule = "none" if btype in ("dwsep", "conv", "maxpool") else r.get("mid", "expand")
            mid = _mid(mid_rule, in_ch, out_ch, r, width, rounding)
            opts = dict(r.get("opts") or {})
            if r.get("keep_pw") and mid == in_ch and btype == "mbconv":
                opts["pw"] = 1
            skip = r.get("skip", "auto")
            residual = (stride == 1 and in_ch == out_ch) if skip == "auto" else bool(skip)
            se_rule = r.get("se_rule", {})
            blocks.append(BlockSpec(
                type=btype, in_ch=in_ch, out_ch=out_ch, mid_ch=mid, kernel=int(r.get("k", 3)), stride=stride,
                se_ch=_se(r, se_rule, mid if btype != "dwsep" else in_ch), se_gate=se_rule.get("gate", "hsigmoid"),
                act=r.get("act", "relu"), residual=residual and btype in ("mbconv", "sandglass"),
                groups=int(r.get("g", 1)), opts=tuple(sorted(opts.items())), padding=r.get("padding", "same")))
            in_ch = out_ch
    h = spec.get("head", {})
    head = Head(last_ch=_channels(h["last"], width, h.get("last_scale", "width"), rounding) if h.get("last") else 0,
                hidden_ch=_channels(h["hidden"], width, h.get("hidden_scale", "fixed"), rounding)
                if h.get("hidden") else 0,
                act=h.get("act", "relu"), dropout=float(h.get("dropout", 0.0)),
                classifier=h.get("classifier", "linear"), classifier_bias=bool(h.get("classifier_bias", True)))
    return Arch(stem, tuple(blocks), head)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _fmt_int(n: int) -> str:
    return f"{n:,}"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from search_space.profile import profile

    parser = OneLineParser(prog="python -m search_space.zoo",
                           description="Named mobile networks as edgenas architectures.")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=OneLineParser)
    p_list = sub.add_parser("list", help="table of every zoo entry: name, width, params, MACs")
    p_list.add_argument("--resolution", type=int, default=224)
    p_show = sub.add_parser("show", help="one entry: params, MACs and its arch string")
    p_show.add_argument("name", help="a zoo name, or name@width")
    p_show.add_argument("--width", type=float, default=None, help="width multiplier (default 1.0)")
    p_show.add_argument("--resolution", type=int, default=224)
    p_show.add_argument("--json", action="store_true", help="print JSON (with the full arch dict)")
    args = parser.parse_args(argv)

    res = args.resolution
    if res <= 0:
        raise field_error(ArchError, "--resolution", res, "a positive integer")
    if args.cmd == "list":
        rows = [("name", "width", "params", f"MACs@{res}", "reference")]
        for n, w in entries():
            p = profile(_cached(n, w), res)
            rows.append((n, str(w), _fmt_int(p["params"]), _fmt_int(p["macs"]), reference(n, w)))
        widths_ = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.rjust(wd) if i in (1, 2, 3) else c.ljust(wd) for i, (c, wd) in enumerate(zip(r, widths_))).rstrip())
        return 0
    name, width = split_width(args.name, args.width, "NAME")
    args.name, args.width = name, 1.0 if width is None else width
    arch = get(args.name, args.width)
    p = profile(arch, res)
    if args.json:
        print(json.dumps({"name": args.name, "width": args.width, "resolution": res, "params": p["params"],
                          "macs": p["macs"], "reference": reference(args.name, args.width),
                          "arch": arch.to_string(), "arch_dict": arch.to_dict()}, indent=1))
    else:
        print(f"name:       {args.name}")
        print(f"width:      {args.width}")
        print(f"reference:  {reference(args.name, args.width)}")
        print(f"params:     {_fmt_int(p['params'])}")
        print(f"macs:       {_fmt_int(p['macs'])} at {res}x{res}")
        print(f"arch:       {arch.to_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
