"""Search spaces as data: ``load_space(name_or_path) -> Space``.

A space is a YAML file (``search_space/spaces/<name>.yaml``) describing a stem, stages and a head,
each with *choices*.  A field given as a scalar is fixed; a field given as a list is a decision.
The encoding is MnasNet's factorized hierarchical one: every stage has its own decisions, shared by
all its layers (``stage.kernel: [3, 5]``) or made per layer (``stage.layer.kernel: [3, 5, 7]``,
one decision per layer slot up to the stage's largest depth)::

    name: ofa-mbv3                      # the space's name (defaults to the file stem)
    description: ...                    # free text
    zoo: [mobilenet_v3_large@1.0]       # zoo points the space claims (tests check them)
    mid_rule: divisible                 # expand -> mid: divisible (make_divisible(in*e, 8)),
                                        #   expand (round(in*e)), sandglass (in // e raised to
                                        #   make_divisible(ceil(out/6), 16))
    se_rule: v3                         # SE size when se is true: v3 | mnasnet | {of, round, gate, ratio}
    stem: {out_ch: [16, 24], kernel: 3, stride: 2, act: hswish, pool: false}
    stages:
      - depth: [2, 3, 4]                # layers in the stage (0 allowed: the stage is skipped)
        stride: 2                       # stride of its first layer (the rest have stride 1)
        out_ch: [24, 32]                # the stage's width (explicit channel counts)
        type: mbconv                    # block type (per stage)
        act: relu                       # shared fields: kernel expand mid se act skip opts
        layer: {kernel: [3, 5, 7], expand: [3, 4, 6]}   # per-layer decisions
        first: {opts: {dw1: 0}}         # fixed overrides for the first layer of the stage
    head: {last_ch: 960, hidden_ch: 1280, act: hswish, dropout: [0.1, 0.2]}

Derived fields: mid channels come from ``expand`` (via ``mid_rule``) or ``mid`` (explicit), are 0
for dwsep and out // 2 for shufflev2; SE channels come from the se rule; the residual is on when
the layer can have one (stride 1, in == out, mbconv or sandglass) unless ``skip`` is false; an
mbconv's ``pw`` option is dropped when the block has an expansion anyway.

``encode(arch)`` returns one integer per decision with more than one option, in a fixed order
(stem, then per stage: depth, shared decisions, per-layer decisions slot by slot, then head).
Slots beyond a stage's depth, and decisions that do not change the arch (e.g. ``skip`` on a
stride-2 layer), get code 0, so every arch has exactly one code list and
``decode(encode(a)) == a``.  ``size()`` counts those canonical code lists, which is the number of
distinct archs when the stage boundaries of an arch are unambiguous (true when consecutive
stages differ in stride or width, as in all shipped spaces).
"""
from __future__ import annotations

import functools
import itertools
import math
import random
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

from search_space.arch import (ACTIVATIONS, PADDINGS, SE_GATES, Arch, BlockSpec, Head, Stem, make_divisible,
                               signatures)
from search_space.errors import ArchError, SpaceError, allowed, field_error

SPACES_DIR = Path(__file__).resolve().parent / "spaces"

TOP_KEYS = ("name", "description", "zoo", "mid_rule", "se_rule", "split", "min_input", "stem", "stages", "head")
STEM_KEYS = ("out_ch", "kernel", "stride", "act", "pool", "bn", "padding")
HEAD_KEYS = tuple(f.name for f in fields(Head))  # last_ch, hidden_ch, act, dropout, ...
LAYER_FIELDS = ("kernel", "expand", "mid", "se", "act", "skip", "opts", "groups", "padding")  # dependency order
STAGE_KEYS = ("depth", "stride", "out_ch", "type", *LAYER_FIELDS, "layer", "first")
FIRST_KEYS = ("type", *LAYER_FIELDS)
MID_RULES = ("divisible", "expand", "sandglass")
SE_PRESETS = {
    "v3": {"of": "mid", "round": "divisible", "gate": "hsigmoid", "ratio": 0.25},
    "mnasnet": {"of": "in", "round": "round", "gate": "sigmoid", "ratio": 0.25},
    "ppocr": {"of": "mid", "round": "floor", "gate": "hsigmoid", "ratio": 0.25},
}
SE_RULE_KEYS = ("of", "round", "gate", "ratio")
RESIDUAL_TYPES = ("mbconv", "sandglass")
GROUP_TYPES = ("shufflev1",)       # block types that take the layer field `groups` (others: 1)
NO_MID_TYPES = ("dwsep", "conv", "maxpool")
SPLITS = ("free", "strict")
KEEP = 0                              # out_ch option 'keep': the stage keeps its input width
MAX_TRIES = 1000


def _err(where: str, got, allowed_values) -> SpaceError:
    return field_error(SpaceError, where, got, allowed_values)


# --------------------------------------------------------------------------------------------
# Parsed space pieces
# --------------------------------------------------------------------------------------------
@dataclass
class Decision:
    """One position of the code list: ``name`` (e.g. ``stages[2].layer[1].kernel``) and its options."""

    name: str
    options: tuple

    @property
    def size(self) -> int:
        return len(self.options)


@dataclass
class StageDef:
    index: int
    depth: tuple[int, ...]
    stride: tuple[int, ...]
    out_ch: tuple[int, ...]
    type: tuple[str, ...]
    shared: dict[str, tuple]          # field -> options, same for every layer of the stage
    layer: dict[str, tuple]           # field -> options, chosen per layer slot
    first: dict[str, Any]             # fixed overrides for the first layer

    @property
    def max_depth(self) -> int:
        return max(self.depth)

    def outs(self, in_ch: int) -> tuple[int, ...]:
        """The stage's width options from input width ``in_ch`` ('keep' resolved)."""
        return (in_ch,) if self.out_ch == (KEEP,) else self.out_ch

    @property
    def shared_names(self) -> list[str]:
        """Stage-level decisions, in code order (depth first)."""
        return ["depth", "stride", "out_ch", "type", *[f for f in LAYER_FIELDS if f in self.shared]]

    def options(self, name: str) -> tuple:
        if name in ("depth", "stride", "out_ch", "type"):
            return getattr(self, name)
        return self.shared[name]


# --------------------------------------------------------------------------------------------
# YAML -> Space
# --------------------------------------------------------------------------------------------
def _as_options(value, where: str) -> tuple:
    if isinstance(value, list):
        if not value:
            raise _err(where, value, "a value or a non-empty list of values")
        opts = tuple(_freeze(v) for v in value)
        if len(set(map(repr, opts))) != len(opts):
            raise SpaceError(f"{where}: got repeated options {value!r}; allowed: distinct values")
        return opts
    return (_freeze(value),)


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted(v.items()))
    return v


def _check_keys(d, keys: Iterable[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise _err(where, type(d).__name__, "a mapping")
    keys = tuple(keys)
    for k in d:
        if k not in keys:
            raise SpaceError(f"{where}.{k}: unknown field {k!r}; allowed keys: {allowed(keys)}")
    return d


def _check_values(opts: tuple, where: str, ok, allowed_values) -> tuple:
    for v in opts:
        if not ok(v):
            raise _err(where, v, allowed_values)
    return opts


def _stride_value(v):
    """A stage stride option: 1, 2, or an (sH, sW) pair of them (stored as an int when square)."""
    if isinstance(v, (list, tuple)):
        if len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x in (1, 2) for x in v):
            return v[0] if v[0] == v[1] else (v[0], v[1])
        return None
    return v if isinstance(v, int) and not isinstance(v, bool) and v in (1, 2) else None


def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _expand_value(v):
    """An expansion ratio: int, float or an exact fraction written 'a/b'."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and v > 0:
        return v
    if isinstance(v, str):
        try:
            f = Fraction(v)
        except (ValueError, ZeroDivisionError):
            return None
        return f if f > 0 else None
    return None


def _se_rule(value, where: str) -> dict | None:
    if value in (False, None, "none", 0):
        return None
    if isinstance(value, str):
        if value not in SE_PRESETS:
            raise _err(where, value, ["none", *SE_PRESETS, "a mapping {of, round, gate, ratio}"])
        return dict(SE_PRESETS[value])
    if isinstance(value, (dict, tuple)):
        d = dict(value)
        _check_keys(d, SE_RULE_KEYS, where)
        rule = {**SE_PRESETS["v3"], **d}
        if rule["of"] not in ("mid", "in"):
            raise _err(f"{where}.of", rule["of"], ["mid", "in"])
        if rule["round"] not in ("divisible", "round", "floor"):
            raise _err(f"{where}.round", rule["round"], ["divisible", "round", "floor"])
        if rule["gate"] not in SE_GATES:
            raise _err(f"{where}.gate", rule["gate"], SE_GATES)
        if not isinstance(rule["ratio"], (int, float)) or not 0 < rule["ratio"] <= 1:
            raise _err(f"{where}.ratio", rule["ratio"], "a number in (0, 1]")
        return rule
    raise _err(where, value, ["none", *SE_PRESETS, "a mapping {of, round, gate, ratio}"])


class Space:
    """A search space read from YAML; see the module docstring for the schema."""

    def __init__(self, data: dict, source: str = "<space>"):
        from search_space.blocks import BLOCKS

        where = source
        _check_keys(data, TOP_KEYS, where)
        for need in ("stem", "stages", "head"):
            if need not in data:
                raise SpaceError(f"{where}: missing {need!r}; required keys: stem, stages, head")
        self.source = source
        self.name = str(data.get("name") or Path(source).stem)
        self.description = str(data.get("description", ""))
        self.mid_rule = data.get("mid_rule", "divisible")
        if self.mid_rule not in MID_RULES:
            raise _err("mid_rule", self.mid_rule, MID_RULES)
        self.se_rule = _se_rule(data.get("se_rule", "v3"), "se_rule") or SE_PRESETS["v3"]
        self._zoo = self._parse_zoo(data.get("zoo", []))
        self.split = data.get("split", "free")
        if self.split not in SPLITS:
            raise _err("split", self.split, SPLITS)
        self.min_input = data.get("min_input", 0)
        if not isinstance(self.min_input, int) or isinstance(self.min_input, bool) or self.min_input < 0:
            raise _err("min_input", self.min_input, "an integer >= 0 (0: no check)")

        # stem
        stem = _check_keys(data["stem"], STEM_KEYS, "stem")
        if "out_ch" not in stem:
            raise SpaceError("stem: missing 'out_ch'; required keys: out_ch")
        self.stem = {
            "out_ch": _check_values(_as_options(stem["out_ch"], "stem.out_ch"), "stem.out_ch", _pos_int,
                                    "positive integers"),
            "kernel": _check_values(_as_options(stem.get("kernel", 3), "stem.kernel"), "stem.kernel",
                                    _pos_int, "positive integers"),
            "stride": _check_values(_as_options(stem.get("stride", 2), "stem.stride"), "stem.stride",
                                    lambda v: v in (1, 2), [1, 2]),
            "act": _check_values(_as_options(stem.get("act", "relu"), "stem.act"), "stem.act",
                                 lambda v: v in ACTIVATIONS, ACTIVATIONS),
            "pool": _check_values(_as_options(stem.get("pool", False), "stem.pool"), "stem.pool",
                                  lambda v: isinstance(v, bool), [False, True]),
            "bn": _check_values(_as_options(stem.get("bn", True), "stem.bn"), "stem.bn",
                                lambda v: isinstance(v, bool), [True, False]),
            "padding": _check_values(_as_options(stem.get("padding", "same"), "stem.padding"), "stem.padding",
                                     lambda v: v in ("same", "valid"), ["same", "valid"]),
        }
        # head: the four common fields are checked here, any other Head field (bias flags,
        # classifier kind...) by constructing a Head with each option
        head = _check_keys(data["head"], HEAD_KEYS, "head")
        self.head = {
            "last_ch": _check_values(_as_options(head.get("last_ch", 0), "head.last_ch"), "head.last_ch",
                                     lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                                     "integers >= 0"),
            "hidden_ch": _check_values(_as_options(head.get("hidden_ch", 0), "head.hidden_ch"), "head.hidden_ch",
                                       lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                                       "integers >= 0"),
            "act": _check_values(_as_options(head.get("act", "relu"), "head.act"), "head.act",
                                 lambda v: v in ACTIVATIONS, ACTIVATIONS),
            "dropout": _check_values(_as_options(head.get("dropout", 0.0), "head.dropout"), "head.dropout",
                                     lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                                     and 0 <= v < 1, "numbers in [0, 1)"),
        }
        self.head["dropout"] = tuple(float(v) for v in self.head["dropout"])
        for f in fields(Head):
            if f.name in self.head:
                continue
            opts = _as_options(head.get(f.name, f.default), f"head.{f.name}")
            for o in opts:  # valid on its own, with or without a hidden layer
                errors = []
                for hidden in (8, 0):
                    try:
                        Head(**{"last_ch": 8, "hidden_ch": hidden, f.name: o})
                    except (ArchError, TypeError) as exc:
                        errors.append(exc)
                if len(errors) == 2:
                    raise SpaceError(f"head.{f.name}: {errors[0]}") from None
            self.head[f.name] = opts
        # stages
        stages = data["stages"]
        if not isinstance(stages, list) or not stages:
            raise _err("stages", type(stages).__name__, "a non-empty list of stages")
        self.stages = [self._parse_stage(i, s, BLOCKS) for i, s in enumerate(stages)]
        if self.split == "strict":
            for st in self.stages:
                if "type" in st.first:
                    raise SpaceError(f"stages[{st.index}].first.type: not allowed with split: strict "
                                     "(a stage's layers share one block type there)")
        if all(min(s.depth) == 0 for s in self.stages) and not any(s.max_depth for s in self.stages):
            raise SpaceError("stages: every stage has depth 0; allowed: at least one layer")
        self.decisions = self._decisions()

    # -- parsing ----------------------------------------------------------------------------------
    def _parse_zoo(self, zoo) -> list[tuple[str, float]]:
        if not isinstance(zoo, list):
            raise _err("zoo", type(zoo).__name__, "a list of 'name@width' strings")
        out = []
        for i, z in enumerate(zoo):
            if isinstance(z, str) and "@" in z:
                n, w = z.rsplit("@", 1)
                try:
                    out.append((n, float(w)))
                    continue
                except ValueError:
                    pass
            raise _err(f"zoo[{i}]", z, "'name@width' strings such as mobilenet_v2@1.0")
        return out

    def _parse_stage(self, i: int, s, blocks) -> StageDef:
        where = f"stages[{i}]"
        _check_keys(s, STAGE_KEYS, where)
        for need in ("depth", "out_ch"):
            if need not in s:
                raise SpaceError(f"{where}: missing {need!r}; required keys: depth, out_ch")
        depth = _check_values(_as_options(s["depth"], f"{where}.depth"), f"{where}.depth",
                              lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "integers >= 0")
        stride = tuple(_stride_value(v) for v in _check_values(
            _as_options(s.get("stride", 1), f"{where}.stride"), f"{where}.stride",
            lambda v: _stride_value(v) is not None, "1, 2 or [sH, sW] pairs of them such as [2, 1]"))
        if len(set(stride)) != len(stride):
            raise _err(f"{where}.stride", list(s.get("stride")), "distinct strides ([2, 2] is 2)")
        if s["out_ch"] == "keep":  # the stage keeps its input width (pools)
            out_ch = (KEEP,)
        else:
            out_ch = _check_values(_as_options(s["out_ch"], f"{where}.out_ch"), f"{where}.out_ch", _pos_int,
                                   "positive integers, or keep (the input width)")
        types = _check_values(_as_options(s.get("type", "mbconv"), f"{where}.type"), f"{where}.type",
                              lambda v: v in blocks, sorted(blocks))
        if "maxpool" in types and types != ("maxpool",):
            raise _err(f"{where}.type", list(types), "maxpool alone (a pool stage holds only pools)")
        layer = _check_keys(s.get("layer", {}) or {}, LAYER_FIELDS, f"{where}.layer")
        first = _check_keys(s.get("first", {}) or {}, FIRST_KEYS, f"{where}.first")
        shared, per_layer = {}, {}
        for f in LAYER_FIELDS:
            if f in s and f in layer:
                raise SpaceError(f"{where}.{f}: given both per stage and per layer; allowed: one of them")
            if f in layer:
                per_layer[f] = self._field_options(f, layer[f], f"{where}.layer.{f}")
            else:
                default = {"kernel": 3, "act": "relu", "se": False, "skip": True, "opts": {}, "groups": 1,
                           "padding": "same"}.get(f)
                if f in s:
                    shared[f] = self._field_options(f, s[f], f"{where}.{f}")
                elif default is not None:
                    shared[f] = self._field_options(f, default, f"{where}.{f}")
        kernels = per_layer.get("kernel", shared.get("kernel", ()))
        if any(k % 2 == 0 for k in kernels) and not set(types) <= {"maxpool", "conv"}:
            raise _err(f"{where}.kernel", [k for k in kernels if k % 2 == 0][0],
                       "odd kernels (even ones only in stages of type maxpool or conv)")
        if types == ("maxpool",) and (per_layer.get("act") or shared.get("act")) != ("relu",):
            raise _err(f"{where}.act", list(per_layer.get("act") or shared.get("act")),
                       "relu alone (a pool has no activation; relu is the placeholder)")
        has = lambda f: f in shared or f in per_layer  # noqa: E731
        if has("expand") and has("mid"):
            raise SpaceError(f"{where}: both 'expand' and 'mid' given; allowed: one of them")
        if not has("expand") and not has("mid"):
            shared["expand"] = (1,)
        for k, v in first.items():
            if isinstance(v, list):
                raise _err(f"{where}.first.{k}", v, "a single value (first-layer overrides are fixed)")
            self._field_options(k, v, f"{where}.first.{k}") if k != "type" else None
        first = {k: _freeze(v) for k, v in first.items()}
        return StageDef(i, depth, stride, out_ch, types, shared, per_layer, first)

    def _field_options(self, f: str, value, where: str) -> tuple:
        opts = _as_options(value, where)
        if f == "kernel":
            return _check_values(opts, where, _pos_int, "positive integers (odd but for maxpool and conv)")
        if f == "groups":
            return _check_values(opts, where, _pos_int, "positive integers")
        if f == "padding":
            return _check_values(opts, where, lambda v: v in PADDINGS, PADDINGS)
        if f == "expand":
            bad = [v for v in opts if _expand_value(v) is None]
            if bad:
                raise _err(where, bad[0], "positive numbers or fractions like '11/3'")
            return tuple(_expand_value(v) for v in opts)
        if f == "mid":
            return _check_values(opts, where, _pos_int, "positive integers")
        if f == "se":
            for v in opts:
                _se_rule(v if not isinstance(v, bool) or not v else self.se_rule, where)
            return opts
        if f == "act":
            return _check_values(opts, where, lambda v: v in ACTIVATIONS, ACTIVATIONS)
        if f == "skip":
            return _check_values(opts, where, lambda v: isinstance(v, bool), [True, False])
        if f == "opts":
            for v in opts:
                if not isinstance(v, tuple) or not all(isinstance(k, str) and isinstance(x, int) for k, x in v):
                    raise _err(where, v, "mappings of option name to integer, e.g. {pw: 1}")
            return opts
        raise _err(where, f, LAYER_FIELDS)  # pragma: no cover

    def _decisions(self) -> list[Decision]:
        """Every field with its options, in code order (including fixed ones)."""
        out = [Decision(f"stem.{k}", v) for k, v in self.stem.items()]
        for s in self.stages:
            out += [Decision(f"stages[{s.index}].{n}", s.options(n)) for n in s.shared_names]
            for j in range(s.max_depth):
                out += [Decision(f"stages[{s.index}].layer[{j}].{f}", s.layer[f]) for f in LAYER_FIELDS
                        if f in s.layer]
        out += [Decision(f"head.{k}", v) for k, v in self.head.items()]
        return out

    # -- public description --------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Space({self.name!r}, {len(self.cardinalities())} decisions)"

    def decision_names(self) -> list[str]:
        """Names of the code positions, same order as ``encode``."""
        return list(self._cached("_names", lambda: tuple(d.name for d in self.decisions if d.size > 1)))

    def cardinalities(self) -> list[int]:
        """Number of options per code position (same length and order as ``encode``)."""
        return list(self._cached("_card", lambda: tuple(d.size for d in self.decisions if d.size > 1)))

    def _cached(self, key: str, make):
        """Decisions never change after loading: derived tuples are computed once (decode and
        sample call these in the search's inner loop)."""
        cache = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def zoo_entries(self) -> list[tuple[str, float]]:
        """The (zoo name, width) points this space claims to contain."""
        return list(self._zoo)

    # -- derivation: choices -> layer fields ------------------------------------------------------
    def _mid(self, btype: str, in_ch: int, out_ch: int, key: str, value) -> int:
        if btype in NO_MID_TYPES:
            return 0
        if btype == "shufflev2":
            return out_ch // 2
        if btype == "shufflev1":
            return out_ch // 4
        if key == "mid":
            return int(value)
        e = value
        if btype == "fire":  # e = expand-to-squeeze ratio of each expand branch (SqueezeNet: 4)
            return max(1, int(round(out_ch / (2 * float(e)))))
        if btype == "xception":  # e > 1: widen at the first separable conv; e = 1: at the last
            return out_ch if e > 1 else in_ch
        if btype == "sandglass" or self.mid_rule == "sandglass":
            hidden = int(in_ch // e)
            if hidden < out_ch / 6.0:
                hidden = make_divisible(math.ceil(out_ch / 6.0), 16)
            return hidden
        if self.mid_rule == "expand":
            return int(round(in_ch * e))
        return make_divisible(float(in_ch * e), 8)

    def _se(self, btype: str, in_ch: int, mid: int, expand, value) -> tuple[int, str]:
        if btype not in ("mbconv", "dwsep"):
            return 0, "hsigmoid"
        rule = self.se_rule if value is True else _se_rule(value, "se")
        if rule is None:
            return 0, "hsigmoid"
        ratio = rule["ratio"]
        if btype == "dwsep":  # SE on the depthwise output (PaddleOCR's MobileNetV1Enhance)
            v = in_ch * ratio
        elif rule["of"] == "mid":
            v = mid * ratio
        else:  # sized from the block input: ratio / e of the mid channels (timm), or of in_ch
            v = mid * ratio / float(expand) if expand is not None else in_ch * ratio
        if rule["round"] == "divisible":
            se_ch = make_divisible(v, 8)
        elif rule["round"] == "floor":
            se_ch = max(1, int(v))
        else:
            se_ch = max(1, int(round(v)))
        return se_ch, rule["gate"]

    def _layer(self, btype: str, in_ch: int, out_ch: int, stride: int, v: dict) -> dict:
        """The BlockSpec fields of one layer, computed field by field in ``LAYER_FIELDS`` order.
        Missing later fields are fine: each field depends only on earlier ones."""
        out: dict[str, Any] = {"type": btype, "in_ch": in_ch, "out_ch": out_ch, "stride": stride}
        if "kernel" in v:
            out["kernel"] = v["kernel"]
        key = "mid" if "mid" in v else "expand"
        if key in v:
            memo = self.__dict__.setdefault("_mid_memo", {})  # option values live as long as the space
            mk = (btype, in_ch, out_ch, key, id(v[key]))
            if mk not in memo:
                memo[mk] = (self._mid(btype, in_ch, out_ch, key, v[key]), v[key])
            out["mid_ch"] = memo[mk][0]
        if "se" in v and "mid_ch" in out:
            out["se_ch"], out["se_gate"] = self._se(btype, in_ch, out["mid_ch"], v.get("expand"), v["se"])
        if "act" in v:
            out["act"] = v["act"]
        if "skip" in v:
            out["residual"] = bool(v["skip"]) and btype in RESIDUAL_TYPES and stride == 1 and in_ch == out_ch
        if "opts" in v and "mid_ch" in out:
            # options the block type does not take, or that cannot apply to this layer, are dropped
            known = _opts_allowed(btype)
            opts = {k: x for k, x in dict(v["opts"]).items() if k in known}
            if btype == "mbconv" and opts.get("pw") and out["mid_ch"] != in_ch:
                opts.pop("pw")
            if btype == "sandglass" and stride != 1:
                opts.pop("dw2", None)  # the stride sits on the second depthwise conv
            out["opts"] = tuple(sorted(opts.items()))
        if "groups" in v:
            out["groups"] = v["groups"] if btype in GROUP_TYPES else 1
        if "padding" in v:
            out["padding"] = v["padding"] if v["padding"] in _paddings(btype) else "same"
        return out

    @staticmethod
    def _blk_fields(blk: BlockSpec) -> dict:
        return {"mid_ch": blk.mid_ch, "se_ch": blk.se_ch, "se_gate": blk.se_gate, "residual": blk.residual,
                "kernel": blk.kernel, "act": blk.act, "opts": blk.opts, "groups": blk.groups,
                "padding": blk.padding}

    @staticmethod
    def _project(f: str, spec: dict):
        """The BlockSpec fields a layer field decides."""
        if f in ("expand", "mid"):
            return spec.get("mid_ch")
        if f == "se":
            return spec.get("se_ch"), spec.get("se_gate") if spec.get("se_ch") else "hsigmoid"
        if f == "skip":
            return spec.get("residual")
        return spec.get(f)

    # -- the strict split ------------------------------------------------------------------------
    def _split_rule(self, last: int, q: int, stride, in_ch: int, out_ch: int, btype: str,
                    prev_type: str | None) -> str:
        """'' if stage ``q`` may start with a first layer of (stride, in_ch -> out_ch, btype) after the
        non-empty stage ``last`` (-1: the stem) and the layer of type ``prev_type``; else why not.

        Rule 1: a stage starts where the layers change: its first layer does not have stride 1,
        in_ch == out_ch and the previous layer's type (that layer would continue the previous stage).
        Rule 2: a stage is skipped only for a visible reason: no stage skipped between ``last`` and
        ``q`` offers the first layer's stride, width and type (it would have been the one to hold it).
        """
        if stride == 1 and in_ch == out_ch and btype == prev_type:
            return (f"stages[{q}] would start with a stride-1 {btype} {in_ch} -> {out_ch}, a continuation of "
                    f"the previous stage (split: strict starts a stage only where stride, width or type change)")
        for r in range(last + 1, q):
            st = self.stages[r]
            if stride in st.stride and out_ch in st.outs(in_ch) and btype in st.type:
                return (f"stages[{q}] holds a layer (stride {stride}, {out_ch} channels, {btype}) that the "
                        f"skipped stages[{r}] offers (split: strict skips a stage only when the next layer "
                        f"does not fit it)")
        return ""

    # -- decode --------------------------------------------------------------------------------
    def _full(self, codes) -> list[int]:
        """Code list (decisions with > 1 option) -> index for every decision."""
        card = self._cached("_card", lambda: tuple(d.size for d in self.decisions if d.size > 1))
        if not isinstance(codes, (list, tuple)) or len(codes) != len(card):
            n = len(codes) if isinstance(codes, (list, tuple)) else type(codes).__name__
            raise SpaceError(f"codes: got {n} values; allowed: a list of {len(card)} integers "
                             f"(space {self.name})")
        it = iter(codes)
        full = []
        k = 0
        for d in self.decisions:
            if d.size == 1:
                full.append(0)
                continue
            c = next(it)
            if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < d.size:
                raise SpaceError(f"codes[{k}] ({self.decision_names()[k]}): got {c!r}; "
                                 f"allowed: 0..{d.size - 1}")
            full.append(int(c))
            k += 1
        return full

    def decode(self, codes) -> Arch:
        """The arch of a code list (``len(cardinalities())`` integers, each below its cardinality)."""
        full = self._full(codes)
        it = iter(zip(self.decisions, full))
        pick = lambda: (lambda d, i: d.options[i])(*next(it))  # noqa: E731
        stem = Stem(**{k: pick() for k in self.stem})
        blocks: list[BlockSpec] = []
        in_ch = stem.out_ch
        last = -1  # the last non-empty stage (strict split)
        for s in self.stages:
            sv = {n: pick() for n in s.shared_names}
            slots = [{f: pick() for f in LAYER_FIELDS if f in s.layer} for _ in range(s.max_depth)]
            new, in_ch = self._stage_blocks(s, sv, slots, in_ch, last, blocks[-1].type if blocks else None)
            if new:
                last = s.index
            blocks += new
        try:
            head = Head(**{k: pick() for k in self.head})
            return Arch(stem, tuple(blocks), head)
        except ArchError as exc:
            raise SpaceError(f"decode: the codes give an invalid arch: {exc}") from None

    def _stage_blocks(self, s: StageDef, sv: dict, slots: list[dict], in_ch: int, last: int,
                      prev_type: str | None) -> tuple[list[BlockSpec], int]:
        """The layers of stage ``s`` for its shared values ``sv`` and per-slot values ``slots`` after
        the input width ``in_ch`` (``last``: the last non-empty stage, -1 for the stem; ``prev_type``:
        the type of the layer before); returns (blocks, out width).  SpaceError if the split rules
        (split: strict) refuse the stage here or a layer is not a valid block."""
        out_ch = in_ch if sv["out_ch"] == KEEP else sv["out_ch"]
        if not sv["depth"]:
            return [], in_ch
        if self.split == "strict":
            why = self._split_rule(last, s.index, sv["stride"], in_ch, out_ch, sv["type"], prev_type)
            if why:
                raise SpaceError(f"decode: {why}")
        blocks = []
        for j in range(sv["depth"]):
            v = {**{f: sv[f] for f in LAYER_FIELDS if f in sv}, **slots[j]}
            btype = sv["type"]
            if j == 0:
                v.update({k: x for k, x in s.first.items() if k != "type"})
                btype = s.first.get("type", btype)
            stride = sv["stride"] if j == 0 else 1
            spec = self._layer(btype, in_ch, out_ch, stride, v)
            try:
                blocks.append(BlockSpec(**spec))
            except ArchError as exc:
                raise SpaceError(f"decode: stages[{s.index}] layer {j} is not a valid block: {exc}") from None
            in_ch = out_ch
        return blocks, out_ch

    # -- encode --------------------------------------------------------------------------------
    def encode(self, arch: Arch) -> list[int]:
        """The code list of ``arch``; SpaceError naming the first layer/field outside the space."""
        if not isinstance(arch, Arch):
            raise _err("arch", type(arch).__name__, "an Arch")
        full: list[int] = []
        for k, opts in self.stem.items():
            full.append(self._index(opts, getattr(arch.stem, k), f"stem.{k}"))
        for f in fields(Stem):  # stem fields the space does not choose must keep their defaults
            if f.name not in self.stem and getattr(arch.stem, f.name) != f.default:
                raise _err(f"stem.{f.name}", getattr(arch.stem, f.name), [f.default])
        self._fail: tuple[tuple[int, int], str] = ((-1, -1), "")
        self._dead: set = set()  # (stage, block, in_ch) splits already known not to fit
        parsed = self._parse(arch.blocks, 0, 0, arch.stem.out_ch)
        if parsed is None:
            raise SpaceError(self._fail[1] or "arch: blocks do not fit the stages of space " + self.name)
        for part in parsed:
            full += part
        for k, opts in self.head.items():
            full.append(self._index(opts, getattr(arch.head, k), f"head.{k}"))
        return [i for d, i in zip(self.decisions, full) if d.size > 1]

    @staticmethod
    def _index(opts: tuple, value, where: str) -> int:
        for i, o in enumerate(opts):
            if o == value and type(o) is not bool or o is value:
                return i
        raise _err(where, value, opts)

    def _note(self, b: int, msg: str, prio: int = 1) -> None:
        """Keep the most telling failure: a field outside the allowed values (prio 2) over a broken
        split rule (1.5, split: strict) over a shape mismatch (1) over a stage tried deeper than the
        arch's (0); then the furthest block."""
        if (prio, b) >= self._fail[0]:
            self._fail = ((prio, b), msg)

    def _parse(self, blocks: tuple, si: int, b: int, in_ch: int, last: int = -1) -> list[list[int]] | None:
        """Backtracking split of ``blocks[b:]`` over stages ``si..``; the first split that fits
        (with split: strict, the only one that keeps the split rules; ``last``: the last non-empty
        stage before ``si``, -1 for none)."""
        if si == len(self.stages):
            if b == len(blocks):
                return []
            self._note(b, f"arch.blocks[{b}]: more blocks than the space's stages allow "
                          f"(max {sum(s.max_depth for s in self.stages)} blocks)")
            return None
        strict = self.split == "strict"
        key = (si, b, in_ch, last if strict else None)
        if key in self._dead:
            return None
        s = self.stages[si]
        # deepest first: a stage takes as many blocks as fit (and a wrong depth fails fast on shape)
        for di, d in sorted(enumerate(s.depth), key=lambda t: -t[1]):
            if b + d > len(blocks):
                self._note(len(blocks), f"arch.blocks: {len(blocks)} blocks, too few for stages[{si}] "
                                        f"depth {d} (allowed depths: {allowed(s.depth)})")
                continue
            part = self._encode_stage(s, di, blocks[b:b + d], b, in_ch)
            if part is None:
                continue
            if d and strict:  # the layers fit the stage; may the stage start here?
                x = blocks[b]
                why = self._split_rule(last, si, x.stride, x.in_ch, x.out_ch, x.type,
                                       blocks[b - 1].type if b else None)
                if why:
                    self._note(b, f"arch.blocks[{b}]: {why}", prio=1.5)  # over shape mismatches
                    continue
            rest = self._parse(blocks, si + 1, b + d, blocks[b + d - 1].out_ch if d else in_ch,
                               si if d else last)
            if rest is not None:
                return [part, *rest]
        self._dead.add(key)
        return None

    def _encode_stage(self, s: StageDef, di: int, layers: tuple, b0: int, in_ch: int) -> list[int] | None:
        """Indices of the stage's decisions (shared, then slot by slot) for ``layers``, or None."""
        shared_idx = {n: 0 for n in s.shared_names}
        shared_idx["depth"] = di
        slot_idx = [{f: 0 for f in s.layer} for _ in range(s.max_depth)]
        if layers:
            where = f"arch.blocks[{b0}]"
            first = layers[0]
            for n in ("out_ch", "stride"):
                value, opts = getattr(first, n), s.outs(in_ch) if n == "out_ch" else s.options(n)
                if value not in opts:
                    self._note(b0, f"{where}.{n}: got {value!r}; allowed: {allowed(opts)} (stages[{s.index}])")
                    return None
                shared_idx[n] = opts.index(value)
            stage_type = first.type
            if "type" in s.first:  # the first layer's type is fixed; the stage type shows from layer 1
                if first.type != s.first["type"]:
                    self._note(b0, f"{where}.type: got {first.type!r}; allowed: {s.first['type']} "
                                   f"(stages[{s.index}] first layer)")
                    return None
                stage_type = layers[1].type if len(layers) > 1 else None
            if stage_type is not None:
                if stage_type not in s.type:
                    self._note(b0, f"{where}.type: got {stage_type!r}; allowed: {allowed(s.type)} "
                                   f"(stages[{s.index}])")
                    return None
                shared_idx["type"] = s.type.index(stage_type)
            out_ch, btype = first.out_ch, s.type[shared_idx["type"]]
            for j, blk in enumerate(layers):
                w = f"arch.blocks[{b0 + j}]"
                t = s.first.get("type", btype) if j == 0 else btype
                stride = s.stride[shared_idx["stride"]] if j == 0 else 1
                exp_in = in_ch if j == 0 else out_ch
                for n, want in (("type", t), ("out_ch", out_ch), ("stride", stride), ("in_ch", exp_in)):
                    if getattr(blk, n) != want:
                        self._note(b0 + j, f"{w}.{n}: got {getattr(blk, n)!r}; allowed: {want} "
                                           f"(stages[{s.index}] layer {j})", prio=0 if j else 1)
                        return None
            # layer fields in dependency order; a shared one must fit every layer
            chosen: list[dict] = [{} for _ in layers]
            for j in range(len(layers)):
                if j == 0:
                    chosen[0].update({k: v for k, v in s.first.items() if k != "type"})
            for f in LAYER_FIELDS:
                if f in s.shared:
                    cands = [i for i, o in enumerate(s.shared[f])
                             if all(self._fits(s, layers, j, chosen[j], f, o, in_ch) for j in range(len(layers)))]
                    if not cands:
                        j = next((j for j in range(len(layers)) if not any(
                            self._fits(s, layers, j, chosen[j], f, o, in_ch) for o in s.shared[f])), None)
                        if j is None:
                            self._note(b0, f"arch.blocks[{b0}:{b0 + len(layers)}]: no single {f} fits every "
                                           f"layer; allowed: one of {allowed(s.shared[f])} shared by "
                                           f"stages[{s.index}]")
                        else:
                            self._note_field(s, layers, j, chosen, f, s.shared[f], in_ch, b0, shared=True)
                        return None
                    shared_idx[f] = cands[0]
                    for j in range(len(layers)):
                        chosen[j].setdefault(f, s.shared[f][cands[0]])
                elif f in s.layer:
                    for j in range(len(layers)):
                        if f in chosen[j]:  # fixed by `first`
                            continue
                        cands = [i for i, o in enumerate(s.layer[f])
                                 if self._fits(s, layers, j, chosen[j], f, o, in_ch)]
                        if not cands:
                            self._note_field(s, layers, j, chosen, f, s.layer[f], in_ch, b0, shared=False)
                            return None
                        slot_idx[j][f] = cands[0]
                        chosen[j][f] = s.layer[f][cands[0]]
            # opts/kernel etc. all matched field by field; confirm the whole layer (nothing else differs)
            for j, blk in enumerate(layers):
                spec = self._spec_for(s, layers, j, chosen[j], in_ch)
                if BlockSpec(**spec) != blk:
                    diff = next((k for k in spec if getattr(blk, k) != spec[k]), "groups")
                    self._note(b0 + j, f"arch.blocks[{b0 + j}].{diff}: got {getattr(blk, diff)!r}; "
                                       f"allowed: {spec.get(diff, 1)!r} (stages[{s.index}] layer {j})")
                    return None
        out = [shared_idx[n] for n in s.shared_names]
        for j in range(s.max_depth):
            out += [slot_idx[j][f] for f in LAYER_FIELDS if f in s.layer]
        return out

    def _spec_for(self, s: StageDef, layers: tuple, j: int, values: dict, in_ch: int) -> dict:
        blk = layers[j]
        return self._layer(blk.type, blk.in_ch, blk.out_ch, blk.stride, values)

    def _fits(self, s: StageDef, layers: tuple, j: int, values: dict, f: str, option, in_ch: int) -> bool:
        if j == 0 and f in s.first:  # fixed for the first layer: any shared option fits it
            return True
        spec = self._spec_for(s, layers, j, {**values, f: option}, in_ch)
        return self._project(f, spec) == self._project(f, self._blk_fields(layers[j]))

    def _note_field(self, s, layers, j, chosen, f, opts, in_ch, b0, shared: bool) -> None:
        blk = layers[j]
        got = self._project(f, self._blk_fields(blk))
        can = []
        for o in opts:
            p = self._project(f, self._spec_for(s, layers, j, {**chosen[j], f: o}, in_ch))
            if p not in can:
                can.append(p)
        label = {"expand": "mid_ch", "mid": "mid_ch", "se": "se_ch, se_gate", "skip": "residual"}.get(f, f)
        scope = f"stages[{s.index}].{f}" + (" (shared by the stage)" if shared else f" layer {j}")
        self._note(b0 + j, f"arch.blocks[{b0 + j}].{label}: got {got!r}; allowed: {allowed(can)} ({scope})",
                   prio=2)

    def contains(self, arch: Arch) -> bool:
        try:
            self.encode(arch)
        except SpaceError:
            return False
        return True

    def explain(self, arch: Arch) -> str:
        """'' if ``arch`` is in the space, else the one-line reason it is not."""
        try:
            self.encode(arch)
        except SpaceError as exc:
            return str(exc)
        return ""

    # -- sampling and variation ------------------------------------------------------------------
    def random_codes(self, rng: random.Random) -> list[int]:
        return [rng.randrange(c) for c in self.cardinalities()]

    def fits_input(self, arch: Arch, size: int | None = None) -> bool:
        """Whether every layer of ``arch`` keeps a spatial size >= 1 at a ``size`` x ``size`` input
        (default ``min_input``; 0: no check).  Valid padding, ceil-mode pools and (2, 1) strides can
        shrink a small input to nothing; the space still contains such archs (PP-OCR's nets need
        a 64-pixel-high input), but ``sample``, ``mutate`` and ``crossover`` only return archs that fit."""
        size = self.min_input if size is None else size
        if not size:
            return True
        h = w = size
        try:
            sigs = signatures(arch, (h, w), 10)
        except Exception:  # noqa: BLE001 -- a shape the rules cannot compute does not fit
            return False
        return all(sig.h >= 1 and sig.w >= 1 and min(sig.out_hw) >= 1 for sig in sigs)

    def _usable(self, codes) -> Arch:
        arch = self.decode(codes)
        if not self.fits_input(arch):
            raise SpaceError(f"sample: the arch shrinks a {self.min_input}x{self.min_input} input to nothing")
        return arch

    def sample(self, rng: random.Random) -> Arch:
        """A random valid arch, drawn stage by stage (no whole-arch rejection loop): the stem's
        choices uniformly; then, stage after stage, the stage's choices (depth, shared fields, the
        per-layer fields of its ``depth`` layers) uniformly among those that make valid layers there,
        keep the split rules (split: strict) and keep the input at least 1x1 at ``min_input``
        (a stage's invalid draws are redrawn, not the whole arch); then the head's choices among the
        valid heads.  Every valid arch of the space can be drawn (each of its stages is a valid
        choice given the stages before it); the draw is deterministic given ``rng``'s state.
        Slots beyond a stage's depth are not drawn (they do not change the arch)."""
        from search_space.blocks import check_block

        last_exc: Exception | None = None
        for _ in range(MAX_TRIES):
            try:
                return self._sample_stages(rng, check_block)
            except SpaceError as exc:  # a dead end (e.g. no valid choice for a stage): start over
                last_exc = exc
        raise SpaceError(f"sample: no valid arch in {MAX_TRIES} tries in space {self.name}: {last_exc}")

    def _draw(self, rng: random.Random, items: Iterable[tuple[str, tuple]]) -> dict:
        return {k: opts[rng.randrange(len(opts))] if len(opts) > 1 else opts[0] for k, opts in items}

    def _sample_stages(self, rng: random.Random, check_block) -> Arch:
        size = self.min_input
        tries = MAX_TRIES // 10
        for _ in range(tries):
            try:
                stem = Stem(**self._draw(rng, self.stem.items()))
                hw = stem.out_hw(size, size) if size else None
            except (ArchError, ValueError, ZeroDivisionError):
                continue
            if hw is None or min(hw) >= 1:
                break
        else:
            raise SpaceError(f"sample: no valid stem in {tries} draws")
        blocks: list[BlockSpec] = []
        in_ch, last = stem.out_ch, -1
        for s in self.stages:
            shared = [(n, s.options(n)) for n in s.shared_names]
            for _ in range(tries):
                sv = self._draw(rng, shared)
                slots = [self._draw(rng, s.layer.items()) for _ in range(sv["depth"])]
                try:
                    new, out_ch = self._stage_blocks(s, sv, slots, in_ch, last,
                                                     blocks[-1].type if blocks else None)
                    h = hw
                    for b in new:
                        check_block(b)
                        if h is not None:
                            h = b.out_hw(*h)
                            if min(h) < 1:
                                raise SpaceError("collapse")
                except (SpaceError, ArchError, ValueError, ZeroDivisionError):
                    continue
                break
            else:
                raise SpaceError(f"sample: no valid choice for stages[{s.index}] in {tries} draws")
            if new:
                blocks += new
                in_ch, last, hw = out_ch, s.index, h
        if not blocks:
            raise SpaceError("sample: every stage skipped")
        for _ in range(tries):
            try:
                head = Head(**self._draw(rng, self.head.items()))
            except ArchError:
                continue
            try:
                return Arch(stem, tuple(blocks), head)
            except ArchError as exc:
                raise SpaceError(f"sample: {exc}") from None
        raise SpaceError(f"sample: no valid head in {tries} draws")

    def mutate(self, arch: Arch, rng: random.Random, n: int | None = None) -> Arch:
        """Change one to three decisions (``n`` if given) so that the arch differs; stays inside."""
        codes = self.encode(arch)
        card = self.cardinalities()
        if not card:
            return arch
        for _ in range(MAX_TRIES):
            new = list(codes)
            k = n if n is not None else rng.choice((1, 1, 1, 2, 3))
            for i in rng.sample(range(len(card)), min(k, len(card))):
                new[i] = rng.choice([c for c in range(card[i]) if c != codes[i]])
            try:
                child = self._usable(new)
            except SpaceError:
                continue
            if child != arch:
                return child
        return arch

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Uniform crossover over the decisions of two archs of the space."""
        ca, cb = self.encode(a), self.encode(b)
        for _ in range(MAX_TRIES):
            try:
                return self._usable([x if rng.random() < 0.5 else y for x, y in zip(ca, cb)])
            except SpaceError:
                continue
        return a

    # -- size ------------------------------------------------------------------------------------
    def size(self, upper_bound: bool = False) -> int:
        """Number of distinct archs of the space, exact, as a Python int.

        Exact when every arch has one stage split: always with ``split: strict`` (the split rules
        make it unique), and with ``split: free`` when the rules can never apply to the space
        (``split_is_unique()``: no stride-1 stage can continue the stage before it, no skippable
        stage offers what a later stage's first layer is).  Otherwise an arch with several splits
        would be counted once per split: ``size()`` raises SpaceError, and ``size(upper_bound=True)``
        returns that count of canonical code lists, an upper bound.
        """
        if not upper_bound and not self.split_is_unique():
            raise SpaceError(f"size: space {self.name} has archs with several stage splits (e.g. "
                             f"{self._ambiguity()}); allowed: size(upper_bound=True) for the number of "
                             "code lists, or split: strict in the space file for an exact count")
        if getattr(self, "_size", None) is None:
            self._size = self._count()
        return self._size

    def split_is_unique(self) -> bool:
        """Whether every arch of the space has exactly one stage split (so ``size()`` is exact)."""
        return self.split == "strict" or (not any("type" in s.first for s in self.stages)
                                          and not self._ambiguity())

    def _ambiguity(self) -> str:
        """'' if the split rules (see ``_split_rule``) can never apply to an arch of the space, else
        where they could: then some arch may have two splits."""
        S = self.stages
        skippable = [0 in s.depth for s in S]

        def overlap(a: StageDef, b: StageDef, stride_1: bool = False) -> bool:
            strides = {1} & set(a.stride) if stride_1 else set(a.stride) & set(b.stride)
            widths = KEEP in a.out_ch or KEEP in b.out_ch or set(a.out_ch) & set(b.out_ch)
            return bool(strides and widths and set(a.type) & set(b.type))

        for q in range(len(S)):
            for r in range(q - 1, -1, -1):  # r: the stage before q, or a skipped one between
                if overlap(S[q], S[r], stride_1=True):
                    return f"stages[{r}] continued by a stride-1 stages[{q}] of the same width and type"
                if skippable[r] and overlap(S[q], S[r]):
                    return f"stages[{q}] after a skipped stages[{r}] that could hold its first layer"
                if not skippable[r]:
                    break
        return ""

    def _count(self) -> int:
        """Stage by stage: states (in_ch, type of the last layer, last non-empty stage) -> number of
        distinct layer sequences; with split: strict a transition to a stage keeps the split rules."""
        strict = self.split == "strict"
        S = len(self.stages)
        skippable = [0 in s.depth for s in self.stages]
        rest = math.prod(len(opts) for k, opts in self.stem.items() if k != "out_ch")
        by_last: list[dict] = [dict() for _ in range(S + 1)]  # index p + 1
        for o in self.stem["out_ch"]:
            by_last[0][(o, None)] = by_last[0].get((o, None), 0) + rest
        for q, sq in enumerate(self.stages):
            if not any(d > 0 for d in sq.depth):
                continue
            incoming: dict[tuple, int] = {}  # (in_ch, prev type, last) -> count
            for p in range(q - 1, -2, -1):
                for (in_ch, prev), cnt in by_last[p + 1].items():
                    k = (in_ch, prev if strict else None, p if strict else -1)
                    incoming[k] = incoming.get(k, 0) + cnt
                if p >= 0 and not skippable[p]:
                    break
            out = by_last[q + 1]
            for (in_ch, prev, p), cnt in incoming.items():
                parts = self._count_parts(sq, in_ch)
                for (o, stride, btype), n in parts.items():
                    if strict and self._split_rule(p, q, stride, in_ch, o, btype, prev):
                        continue
                    key = (o, btype if strict else None)
                    out[key] = out.get(key, 0) + cnt * n
        total = 0
        for p in range(S - 1, -1, -1):  # (not p = -1: an arch has at least one block)
            total += sum(by_last[p + 1].values())
            if not skippable[p]:
                break
        return total * self._count_heads()

    def _count_heads(self) -> int:
        n = 0
        keys = list(self.head)
        for combo in itertools.product(*(self.head[k] for k in keys)):
            try:
                Head(**dict(zip(keys, combo)))
            except ArchError:
                continue
            n += 1
        return n

    # Fields whose value is copied into the block as is and changes nothing else: they multiply
    # the count instead of being enumerated (distinct values always give distinct blocks).
    _INDEPENDENT = ("kernel", "act")

    @staticmethod
    def _effective(f: str, btype: str, options: tuple) -> tuple:
        """The options of layer field ``f`` that can give different blocks of type ``btype`` (one
        representative per effect); the rest give blocks equal to a representative's."""
        if f in ("expand", "mid") and btype in (*NO_MID_TYPES, "shufflev1", "shufflev2"):
            return options[:1]
        if f == "se" and btype not in ("mbconv", "dwsep"):
            return options[:1]
        if f == "skip" and btype not in RESIDUAL_TYPES:
            return options[:1]
        if f == "groups" and btype not in GROUP_TYPES:
            return options[:1]
        if f in ("opts", "padding"):
            seen, reps = set(), []
            for o in options:
                eff = (tuple((k, x) for k, x in o if k in _opts_allowed(btype)) if f == "opts"
                       else o if o in _paddings(btype) else "same")
                if eff not in seen:
                    seen.add(eff)
                    reps.append(o)
            return tuple(reps)
        return options

    def _layer_set(self, s: StageDef, btype: str, in_ch: int, out_ch: int, stride,
                   shared: tuple, first: bool) -> tuple[frozenset, int]:
        """Distinct layer specs (without the independent fields) for one layer slot given the
        stage's shared values, and the multiplicity the independent per-layer fields add.
        Stages with the same per-layer options and first-layer overrides share the memo."""
        sigs = self.__dict__.setdefault("_layer_sigs", {})
        if (s.index, first) not in sigs:  # stages with equal per-layer options share an id
            text = repr((sorted(s.layer.items()), sorted(s.first.items()) if first else ()))
            ids = self.__dict__.setdefault("_layer_sig_ids", {})
            sigs[(s.index, first)] = ids.setdefault(text, len(ids))
        key = (sigs[(s.index, first)], btype, in_ch, out_ch, stride, shared, first)
        memo = self.__dict__.setdefault("_set_memo", {})
        if key in memo:
            return memo[key]
        fixed = dict(shared)
        if first:
            fixed.update({k: v for k, v in s.first.items() if k not in ("type", *self._INDEPENDENT)})
            btype = s.first.get("type", btype)
        skip = set(fixed) | (set(s.first) if first else set())
        free = [f for f in s.layer if f not in skip and f not in self._INDEPENDENT]
        mult = math.prod(len(s.layer[f]) for f in self._INDEPENDENT if f in s.layer and f not in skip)
        combos = self.__dict__.setdefault("_combo_memo", {})
        ckey = (s.index, btype, tuple(free))
        if ckey not in combos:  # the free per-layer values, one representative per effect
            combos[ckey] = [dict(zip(free, c)) for c in
                            itertools.product(*(self._effective(f, btype, s.layer[f]) for f in free))]
        out, bad = set(), set()
        for combo in combos[ckey]:
            spec = self._layer(btype, in_ch, out_ch, stride, {**fixed, **combo})
            k = (btype, stride, spec.get("mid_ch", 0), spec.get("se_ch", 0), spec.get("se_gate", "hsigmoid"),
                 spec.get("residual", False), spec.get("opts", ()), spec.get("groups", 1),
                 spec.get("padding", "same"))
            if k in out or k in bad:
                continue
            (out if _valid_key(k, in_ch, out_ch) else bad).add(k)
        memo[key] = (frozenset(out), mult)
        return memo[key]

    def _count_parts(self, s: StageDef, in_ch: int) -> dict[tuple, int]:
        """{(out_ch, stride, type): number of distinct non-empty layer sequences of stage ``s``}
        from ``in_ch`` (sequences of different first-layer stride or type always differ)."""
        memo = self.__dict__.setdefault("_parts_memo", {})
        if (s.index, in_ch) in memo:
            return memo[(s.index, in_ch)]
        result: dict[tuple, int] = {}
        depths = [d for d in s.depth if d > 0]
        enum = [f for f in LAYER_FIELDS if f in s.shared and f not in self._INDEPENDENT]
        indep = [f for f in self._INDEPENDENT if f in s.shared]
        for out_ch in s.outs(in_ch):
            for stride in sorted(s.stride, key=lambda v: not isinstance(v, int)):  # ints first
                for btype in s.type:
                    if not isinstance(stride, int) and 2 in s.stride:
                        # an (sH, sW) first layer differs from the stride-2 one only in its stride
                        # field, where the block type takes a pair
                        n = result.get((out_ch, 2, btype), 0) if _pair_stride(btype) else 0
                        if n:
                            result[(out_ch, stride, btype)] = n
                        continue
                    products: dict[tuple, tuple[int, int]] = {}  # (first set, rest set) -> multiplicities
                    reduce = "type" not in s.first  # the first layer's type may take other fields
                    for combo in itertools.product(*(
                            self._effective(f, btype, s.shared[f]) if reduce else s.shared[f] for f in enum)):
                        sv = tuple(zip(enum, combo))
                        a, ma = self._layer_set(s, btype, in_ch, out_ch, stride, sv, True)
                        if not a:
                            continue
                        r, mr = self._layer_set(s, btype, out_ch, out_ch, 1, sv, False)
                        products[(a, r)] = (ma, mr)
                    n = 0
                    for d in depths:
                        # shared independent fields: each option is a disjoint copy, unless only the
                        # first layer exists and `first` fixes the field
                        m_shared = math.prod(len(s.shared[f]) for f in indep if not (d == 1 and f in s.first))
                        per_d = {}
                        for (a, r), (ma, mr) in products.items():
                            if d > 1 and not r:
                                continue
                            per_d.setdefault((a, r if d > 1 else None), (ma, mr))
                        n += m_shared * _union_of_products(list(per_d.items()), d)
                    if n:
                        result[(out_ch, stride, btype)] = n
        memo[(s.index, in_ch)] = result
        return result


@functools.lru_cache(maxsize=None)
def _pair_stride(btype: str) -> bool:
    from search_space.blocks import BLOCKS

    return bool(getattr(BLOCKS.get(btype), "pair_stride", False))


@functools.lru_cache(maxsize=None)
def _paddings(btype: str) -> tuple:
    from search_space.blocks import BLOCKS

    return tuple(getattr(BLOCKS.get(btype), "paddings", ("same",)))


@functools.lru_cache(maxsize=None)
def _opts_allowed(btype: str) -> frozenset:
    from search_space.blocks import BLOCKS

    return frozenset(getattr(BLOCKS.get(btype), "opts_allowed", {}) or {})


@functools.lru_cache(maxsize=None)
def _valid_key(k: tuple, in_ch: int, out_ch: int) -> bool:
    """Whether a layer-set key (type, stride, mid, se, gate, residual, opts, groups, padding) with
    these widths is a valid block (its type's check; kernel and act are checked at parse time)."""
    from search_space.blocks import check_block

    btype, stride, mid, se_ch, gate, residual, opts, groups, padding = k
    try:
        check_block(BlockSpec(type=btype, in_ch=in_ch, out_ch=out_ch, mid_ch=mid, stride=stride, se_ch=se_ch,
                              se_gate=gate, residual=residual, opts=opts, groups=groups, padding=padding))
    except ArchError:
        return False
    return True


def _union_of_products(products: list, d: int) -> int:
    """|U_i A_i x R_i^(d-1)| for items ((A_i, R_i or None), (m_a, m_r)), each layer set scaled by the
    multiplicity of its independent fields; exact (inclusion-exclusion within overlapping groups)."""
    def size(p, m):
        a, r = p
        return len(a) * m[0] * ((len(r) * m[1]) ** (d - 1) if r is not None else 1)

    def inter(p, q):
        return p[0] & q[0], (p[1] & q[1]) if p[1] is not None else None

    def empty(p):
        return not p[0] or (p[1] is not None and not p[1])

    n = len(products)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if products[i][1] == products[j][1] and not empty(inter(products[i][0], products[j][0])):
                parent[root(i)] = root(j)
    groups: dict[int, list] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(products[i])
    total = 0
    for g in groups.values():
        if len(g) == 1:
            total += size(*g[0])
            continue
        if len(g) > 16:
            raise SpaceError(f"size: {len(g)} overlapping stage variants; cannot count exactly")
        m = g[0][1]
        for k in range(1, len(g) + 1):
            for sub in itertools.combinations(g, k):
                p = sub[0][0]
                for q in sub[1:]:
                    p = inter(p, q[0])
                    if empty(p):
                        break
                if not empty(p):
                    total += (-1) ** (k + 1) * size(p, m)
    return total


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def space_names() -> list[str]:
    """Names of the shipped spaces (``search_space/spaces/*.yaml``)."""
    order = ["mobile-unified", "mnasnet", "mobilenetv3", "proxylessnas", "ofa-mbv3", "shufflenetv2"]
    have = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    return [n for n in order if n in have] + [n for n in have if n not in order]


def load_space(name_or_path) -> Space:
    """A shipped space by name, or a space YAML file by path."""
    import yaml

    if isinstance(name_or_path, Space):
        return name_or_path
    key = str(name_or_path)
    path = SPACES_DIR / f"{key}.yaml"
    if not path.is_file():
        path = Path(key).expanduser()
        if not (path.suffix in (".yaml", ".yml") and path.is_file()):
            raise SpaceError(f"space: got {key!r}; allowed: {allowed(space_names())}, "
                             "or the path of a space .yaml file")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpaceError(f"{path}: malformed YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: got {type(data).__name__}; allowed: a mapping with stem, stages, head")
    return Space(data, source=str(path))


def space_from_dict(data: dict, name: str = "<space>") -> Space:
    """A space from an already-parsed mapping (tests, programmatic spaces)."""
    return Space(data, source=name)


__all__ = ["Decision", "Space", "load_space", "space_from_dict", "space_names"]
