"""Latency lookup tables: our versioned file format and importers for OFA / ProxylessNAS tables.

A table maps a layer's key (``search_space.arch.Signature.key``: the
layer's arch-string token at its input shape, e.g. ``mbconv_i24_o32_m144_k3_s2_re@24x112x112``)
to a measured latency: median (or mean) in ms, spread (std, or the spread of repeated medians) and
the number of runs.  Tables are stored inside target files (see ``latency_models.model``).

Importers read the YAML tables of the Once-for-All / ProxylessNAS code (MIT Han Lab), whose key
grammar is::

    expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:0|1[-se:0|1-hs:0|1]
    Conv-... (stem)  Conv_1-... (last 1x1)  AvgPool2D-...  Conv_2-... (1x1 after pool)  Logits-...

and turn every operator into our key, stating the source project's conventions (activations,
SE width, what expand means).  The head's operators (Conv_1, AvgPool2D, Conv_2, Logits) become
one entry, the sum of theirs, under our head key.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.arch import BlockSpec, Head, Signature, Stem, make_divisible
from search_space.errors import TargetError

KEY_RE = re.compile(r"^(stem|head|[a-z][a-z0-9]*)(_[A-Za-z0-9.=]+)*@\d+x\d+x\d+(_n\d+)?$")


@dataclass
class Entry:
    ms: float
    spread: float = 0.0
    n: int = 1
    source: tuple[str, ...] = ()  # the foreign keys this entry sums (importers)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ms": self.ms, "spread": round(self.spread, 6), "n": self.n}
        if self.source:
            d["from"] = list(self.source)
        return d


@dataclass
class LatencyTable:
    """``entries`` hold for any network input resolution; ``by_res[r]`` holds entries measured
    inside networks at input resolution ``r`` (OFA measures one table per resolution, and the
    same layer at the same shape may cost differently in each) and is looked up first."""

    entries: dict[str, Entry] = field(default_factory=dict)
    by_res: dict[int, dict[str, Entry]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    sigs: dict[str, Signature] = field(default_factory=dict, repr=False)  # importers: key -> Signature

    def __len__(self) -> int:
        return len(self.entries) + sum(len(t) for t in self.by_res.values())

    def get(self, key: str, resolution: int | None = None) -> Entry | None:
        if resolution is not None and resolution in self.by_res:
            e = self.by_res[resolution].get(key)
            if e is not None:
                return e
        return self.entries.get(key)

    def items(self):
        """(resolution or None, key, entry) for every entry."""
        for k, e in self.entries.items():
            yield None, k, e
        for r in sorted(self.by_res):
            for k, e in self.by_res[r].items():
                yield r, k, e

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"any": _entries_dict(self.entries)}
        for r in sorted(self.by_res):
            d[str(r)] = _entries_dict(self.by_res[r])
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "LatencyTable":
        if not isinstance(d, dict):
            raise TargetError(f"{where}: got {type(d).__name__}; allowed: a mapping 'any' | <resolution> -> entries")
        table = cls()
        for section, entries in d.items():
            if section == "any":
                table.entries = _entries_from_dict(entries, f"{where}.any")
            elif isinstance(section, str) and section.isdigit():
                table.by_res[int(section)] = _entries_from_dict(entries, f"{where}.{section}")
            else:
                raise TargetError(f"{where}: section {section!r}; allowed: any, or an input resolution such as 224")
        return table


def _entries_dict(entries: dict[str, Entry]) -> dict[str, Any]:
    return {k: e.to_dict() for k, e in sorted(entries.items())}


def _entries_from_dict(d: Any, where: str) -> dict[str, Entry]:
    if not isinstance(d, dict):
        raise TargetError(f"{where}: got {type(d).__name__}; allowed: a mapping key -> {{ms, spread, n}}")
    entries = {}
    for key, e in d.items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise TargetError(f"{where}: table key {key!r} does not parse; allowed: "
                              "<layer token>@<C>x<H>x<W>[_n<classes>], e.g. mbconv_i16_o24_m96_k3_s2_re@16x112x112")
        if not isinstance(e, dict) or not isinstance(e.get("ms"), (int, float)) or not e["ms"] >= 0:
            raise TargetError(f"{where}[{key!r}]: got {e!r}; allowed: {{ms: number >= 0, spread, n}}")
        entries[key] = Entry(float(e["ms"]), float(e.get("spread", 0.0)), int(e.get("n", 1)),
                             tuple(e.get("from", ())))
    return entries


# --------------------------------------------------------------------------------------------
# OFA / ProxylessNAS YAML importers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Convention:
    """How a foreign table's keys map to our layers."""

    name: str
    expand_is_mid: bool      # OFA: 'expand' is the middle channel count; ProxylessNAS: the ratio
    stem_act: str
    block_act: str           # activation when the key has no hs flag (or hs:0)
    hs_act: str = "hswish"
    se_divisor: int = 8      # SE bottleneck = make_divisible(mid // 4, divisor)
    se_gate: str = "hsigmoid"
    head_act: str = "relu6"
    hidden_bias: bool = True  # the 1x1 after pooling (Conv_2) has a bias


PROXYLESS = Convention("proxylessnas", expand_is_mid=False, stem_act="relu6", block_act="relu6",
                       head_act="relu6")
OFA = Convention("ofa", expand_is_mid=True, stem_act="hswish", block_act="relu", head_act="hswish",
                 hidden_bias=False)

_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


def _parse_foreign_key(key: str, where: str) -> tuple[str, dict[str, Any]]:
    parts = key.split("-")
    op, fields_ = parts[0], {}
    if op not in ("expanded_conv", "Conv", "Conv_1", "Conv_2", "AvgPool2D", "Logits"):
        raise TargetError(f"{where}: table key {key!r}: unknown operator {op!r}; allowed: "
                          "expanded_conv, Conv, Conv_1, Conv_2, AvgPool2D, Logits")
    for p in parts[1:]:
        name, sep, value = p.partition(":")
        if not sep:
            raise TargetError(f"{where}: table key {key!r}: field {p!r} is not name:value")
        if name in ("input", "output"):
            m = _SHAPE.match(value)
            if m:
                fields_[name] = tuple(int(x) for x in m.groups())
            elif name == "output" and value.isdigit():
                fields_[name] = (1, 1, int(value))
            else:
                raise TargetError(f"{where}: table key {key!r}: {name} {value!r} is not HxWxC")
        elif name in ("expand", "kernel", "stride", "idskip", "se", "hs"):
            if not value.isdigit():
                raise TargetError(f"{where}: table key {key!r}: {name} {value!r} is not an integer")
            fields_[name] = int(value)
        else:
            raise TargetError(f"{where}: table key {key!r}: unknown field {name!r}; allowed: "
                              "input, output, expand, kernel, stride, idskip, se, hs")
    if "input" not in fields_ or "output" not in fields_:
        raise TargetError(f"{where}: table key {key!r}: needs input: and output: shapes")
    if op == "expanded_conv":
        missing = [f for f in ("expand", "kernel", "stride", "idskip") if f not in fields_]
        if missing:
            raise TargetError(f"{where}: table key {key!r}: missing {', '.join(missing)}")
    return op, fields_


def _block_sig(f: dict[str, Any], conv: Convention) -> Signature:
    (h, w, cin), (_, _, cout) = f["input"], f["output"]
    mid = f["expand"] if conv.expand_is_mid else cin * f["expand"]
    se_ch = make_divisible(mid // 4, conv.se_divisor) if f.get("se", 0) else 0
    spec = BlockSpec("mbconv", in_ch=cin, out_ch=cout, mid_ch=mid, kernel=f["kernel"], stride=f["stride"],
                     se_ch=se_ch, se_gate=conv.se_gate, act=conv.hs_act if f.get("hs", 0) else conv.block_act,
                     residual=bool(f["idskip"]))
    return Signature("mbconv", spec, cin, h, w)


def _stat(raw: dict[str, Any], key: str, where: str) -> tuple[float, float, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("mean"), (int, float)):
        raise TargetError(f"{where}[{key!r}]: got {raw!r}; allowed: a mapping with mean, std|var, count")
    if "std" in raw:
        spread = float(raw["std"])
    else:
        spread = math.sqrt(max(0.0, float(raw.get("var", 0.0))))
    return float(raw["mean"]), spread, int(raw.get("count", 1))


def import_yaml(path: str | Path, convention: Convention, num_classes: int = 1000) -> LatencyTable:
    """Read one OFA / ProxylessNAS YAML table into our keys."""
    import yaml

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise TargetError(f"{where}: table file does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TargetError(f"{where}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict) or not raw:
        raise TargetError(f"{where}: got {type(raw).__name__}; allowed: a mapping key -> {{mean, std|var, count}}")
    entries: dict[str, Entry] = {}
    sigs: dict[str, Signature] = {}
    head_parts: dict[str, tuple[dict, tuple[float, float, int]]] = {}
    resolution = None
    for key, stats in raw.items():
        op, f = _parse_foreign_key(str(key), where)
        ms, spread, n = _stat(stats, key, where)
        if op == "expanded_conv":
            sig = _block_sig(f, convention)
        elif op == "Conv":
            (h, w, cin), (ho, _, cout) = f["input"], f["output"]
            stride = max(1, round(h / ho))
            sig = Signature("stem", Stem(out_ch=cout, kernel=3, stride=stride, act=convention.stem_act, in_ch=cin),
                            cin, h, w)
            resolution = h
        else:
            head_parts[op] = (f, (ms, spread, n), key)
            continue
        entries[sig.key] = Entry(ms, spread, n, (str(key),))
        sigs[sig.key] = sig
    if "Conv_1" in head_parts and "Logits" in head_parts:
        f1, *_ = head_parts["Conv_1"]
        (h, w, cin), (_, _, last) = f1["input"], f1["output"]
        hidden = head_parts["Conv_2"][0]["output"][2] if "Conv_2" in head_parts else 0
        classes = head_parts["Logits"][0]["output"][2]
        head = Head(last_ch=last, hidden_ch=hidden, act=convention.head_act,
                    hidden_bias=convention.hidden_bias if hidden else True)
        sig = Signature("head", head, cin, h, w, classes)
        parts = [head_parts[op] for op in ("Conv_1", "AvgPool2D", "Conv_2", "Logits") if op in head_parts]
        entries[sig.key] = Entry(sum(p[1][0] for p in parts), math.sqrt(sum(p[1][1] ** 2 for p in parts)),
                                 min(p[1][2] for p in parts), tuple(p[2] for p in parts))
        sigs[sig.key] = sig
    elif head_parts:
        raise TargetError(f"{where}: head operators {sorted(head_parts)} without both Conv_1 and Logits")
    meta = {"source": [path.name], "convention": convention.name, "resolutions": [resolution] if resolution else []}
    return LatencyTable(entries, meta=meta, sigs=sigs)


def _res_of(table: LatencyTable, where: str) -> int:
    res = table.meta.get("resolutions") or []
    if len(res) != 1:
        raise TargetError(f"{where}: no stem (Conv-input:...) entry, cannot tell the input resolution")
    return res[0]


def _import_per_res(paths, convention: Convention) -> LatencyTable:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    table = LatencyTable(meta={"source": [], "convention": convention.name, "resolutions": []})
    for p in paths:
        t = import_yaml(p, convention)
        res = _res_of(t, str(p))
        table.by_res.setdefault(res, {}).update(t.entries)
        table.sigs.update(t.sigs)
        table.meta["source"] += t.meta["source"]
        table.meta["resolutions"].append(res)
    table.meta["resolutions"].sort()
    return table


def import_proxylessnas(paths) -> LatencyTable:
    """ProxylessNAS mobile table(s), each filed under the input resolution its stem entry shows."""
    return _import_per_res(paths, PROXYLESS)


def import_ofa(paths) -> LatencyTable:
    """One or more OFA tables (one per input resolution)."""
    return _import_per_res(paths, OFA)
