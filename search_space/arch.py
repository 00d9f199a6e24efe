"""The one currency of edgenas: ``Arch``, an immutable architecture value.

An ``Arch`` is a stem, an ordered tuple of ``BlockSpec`` and a head, with every channel count an
explicit integer.  It round-trips exactly through a dict (YAML/JSON) and through a compact one-line
string, and ``signatures(arch, resolution)`` gives the per-layer signatures that the MACs counter,
the latency profiler, the lookup tables and the learned predictor all share.

Arch string grammar (one line, no spaces; layers joined by ``-``)::

    arch   := stem "-" block ("-" block)* "-" head
    stem   := "stem" ("_" field)*          e.g. stem_i3_o16_k3_s2_hs
    block  := TYPE ("_" field)*            e.g. mbconv_i16_o24_m64_k3_s2_re
    head   := "head" ("_" field)*          e.g. head_l960_h1280_hs_d0.2

Fields are a short code followed by the value; fields equal to their default are left out:

    i<int> in channels        o<int> out channels    m<int> mid (expanded/hidden) channels
    k<int> kernel             s<int> stride          g<int> groups
    s<int>x<int>              a (sH, sW) stride pair (blocks only; PP-OCR's (2, 1) text-line strides)
    valid | ceil              padding: none ('valid'), or none with ceil-mode rounding ('ceil', pools
                              only); the default 'same' pads k // 2 and is left out (stem, blocks)
    nobn                      the stem conv has a bias and no BatchNorm (SqueezeNet) (stem)
    se<int>h|s  SE bottleneck channels with a hard-sigmoid (h) or sigmoid (s) gate
    re | r6 | hs | sw | li    activation: relu, relu6, hswish, swish, linear (identity)
    skip                      residual connection (blocks)
    pool                      3x3/2 max-pool after the stem conv (stem)
    l<int> 1x1 conv before pooling, h<int> hidden 1x1 after pooling, d<float> dropout (head)
    nobias                    the hidden layer has no bias (head; Once-for-All's feature_mix_layer)
    convcls                   the classifier is a 1x1 conv (bias) + act before the global pool,
                              after the dropout (head; SqueezeNet)
    clsnobias                 the classifier has no bias (head; the official ShuffleNetV1 code)
    x<key>=<int>              block-specific integer option (``BlockSpec.opts``)

``TYPE`` is a block type name registered in ``search_space.blocks`` (mbconv, dwsep, sandglass,
shufflev2, fire, shufflev1, xception, conv, maxpool, ...).  Adding a block family adds a type string
and a block class, nothing here.

Every field added after the first release has a default that the string and the dict leave out, so
an older string or file means exactly what it meant before.  Strides are ints where square (``s2``);
a block may have an ``(sH, sW)`` pair (``s2x1``), normalized so that ``(2, 2)`` is stored as ``2``.
Spatial sizes follow one rule, ``conv_out`` (and ``out_hw`` built on it, which ``signatures`` uses).
"""
from __future__ import annotations

import json
import re
from array import array
from dataclasses import asdict, dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Iterator

from search_space.errors import ArchError, field_error

ACTIVATIONS = ("relu", "relu6", "hswish", "swish", "linear")
SE_GATES = ("hsigmoid", "sigmoid")
STRIDES = (1, 2)
PADDINGS = ("same", "valid", "ceil")
HEAD_CLASSIFIERS = ("linear", "conv")
ACT_CODES = {"relu": "re", "relu6": "r6", "hswish": "hs", "swish": "sw", "linear": "li"}
CODE_ACTS = {v: k for k, v in ACT_CODES.items()}
GATE_CODES = {"hsigmoid": "h", "sigmoid": "s"}
CODE_GATES = {v: k for k, v in GATE_CODES.items()}
FORMAT_VERSION = 1


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round channels to a multiple of ``divisor`` (the TF/torchvision/timm rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return int(new_v)


def conv_out(size: int, kernel: int, stride: int, padding: str = "same") -> int:
    """Spatial output size along one axis: the only place it is computed.

    ``padding`` 'same' pads k // 2 on both sides, 'valid' pads nothing, 'ceil' pads nothing and
    rounds up like torch's ``ceil_mode=True`` pooling (a last window must start inside the input).
    """
    if padding == "same":
        return (size + 2 * (kernel // 2) - kernel) // stride + 1
    if padding == "valid":
        return (size - kernel) // stride + 1
    if padding == "ceil":
        out = -(-(size - kernel) // stride) + 1
        if (out - 1) * stride >= size:
            out -= 1
        return out
    raise field_error(ArchError, "padding", padding, PADDINGS)


def stride_hw(stride) -> tuple[int, int]:
    """(sH, sW) of an int or pair stride."""
    return (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))


def out_hw(h: int, w: int, kernel: int, stride, padding: str = "same") -> tuple[int, int]:
    """(H, W) after a kxk window with an int or (sH, sW) stride (``conv_out`` on each axis)."""
    if padding == "same" and type(stride) is int:  # the hot path (latency models price many layers)
        d = 2 * (kernel // 2) - kernel
        return (h + d) // stride + 1, (w + d) // stride + 1
    sh, sw = stride_hw(stride)
    return conv_out(h, kernel, sh, padding), conv_out(w, kernel, sw, padding)


def _normalize_stride(where: str, value):
    """An int stride, or a (sH, sW) pair stored as an int when square; lists become tuples."""
    if isinstance(value, (list, tuple)):
        if (len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v not in STRIDES
                                   for v in value)):
            raise field_error(ArchError, where, value, "1, 2 or a pair (sH, sW) of them")
        value = tuple(value)
        return value[0] if value[0] == value[1] else value
    if isinstance(value, bool) or value not in STRIDES:
        raise field_error(ArchError, where, value, STRIDES)
    return value


def _positive_int(cls_name: str, name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise field_error(ArchError, f"{cls_name}.{name}", value, "a positive integer")


# --------------------------------------------------------------------------------------------
# Intern ids: equal layer specs share one small int per process (vectorized consumers key on it)
# --------------------------------------------------------------------------------------------
class Interned:
    """The specs of one class met in this process: a spec's ``_iid`` (set when it is created, equal
    specs get the same one) indexes ``values`` (its field values).  ``rows`` holds ``ROW_FIELDS``
    integers per id (blocks only): what ``latency_models`` reads for many layers at once with
    numpy instead of reading each spec's fields in Python.  Ids are process-local (a pickled spec
    gets its id again when loaded); past ``limit`` ids a new spec gets -1 (consumers then read its
    fields).  Memory: about 0.4 KB per distinct spec (so at most about 0.8 GB)."""

    def __init__(self, fields_of, row_of=None, limit: int = 2_000_000) -> None:
        self.ids: dict[tuple, int] = {}
        self.values: list[tuple] = []
        self.fields_of = fields_of
        self.row_of = row_of
        self.rows = array("q")
        self.limit = limit

    def __len__(self) -> int:
        return len(self.values)


ROW_FIELDS = ("type", "in_ch", "out_ch", "mid_ch", "kernel", "sh", "sw", "se_ch", "se_gate", "act", "residual",
              "groups", "opts", "padding")  # a block's numeric row: strings as codes (TYPE_NAMES, ACTIVATIONS, ...)
TYPE_NAMES: list[str] = []          # block type code -> name (process-local, in order of first use)
_TYPE_CODES: dict[str, int] = {}
OPTS: list[tuple] = [()]            # opts code -> opts tuple (0: none)
_OPTS_CODES: dict[tuple, int] = {(): 0}
_ACT_IDX = {a: i for i, a in enumerate(ACTIVATIONS)}
_GATE_IDX = {g: i for i, g in enumerate(SE_GATES)}
_PAD_IDX = {p: i for i, p in enumerate(PADDINGS)}


def _block_row(b) -> tuple:
    t = _TYPE_CODES.get(b.type)
    if t is None:
        t = _TYPE_CODES[b.type] = len(TYPE_NAMES)
        TYPE_NAMES.append(b.type)
    o = _OPTS_CODES.get(b.opts)
    if o is None:
        o = _OPTS_CODES[b.opts] = len(OPTS)
        OPTS.append(b.opts)
    s = b.stride
    sh, sw = (s, s) if type(s) is int else (int(s[0]), int(s[1]))
    return (t, b.in_ch, b.out_ch, b.mid_ch, b.kernel, sh, sw, b.se_ch, _GATE_IDX[b.se_gate], _ACT_IDX[b.act],
            1 if b.residual else 0, b.groups, o, _PAD_IDX[b.padding])


def _intern(reg: Interned, obj, vals: tuple | None = None) -> None:
    """Set ``obj._iid`` (``vals``: its field values in field order, when the caller has them)."""
    if vals is None:
        vals = reg.fields_of(obj)
    i = reg.ids.get(vals)
    if i is None:
        i = -1
        if len(reg.values) < reg.limit:
            try:
                if reg.row_of is not None:
                    reg.rows.fromlist(list(reg.row_of(obj)))
            except (OverflowError, TypeError):  # a field past int64: no id (consumers read its fields)
                pass
            else:
                i = reg.ids[vals] = len(reg.values)
                reg.values.append(vals)
    object.__setattr__(obj, "_iid", i)


class _Interned:
    """Pickling and copying of an interned spec: its id is not carried (ids are process-local)."""

    __slots__ = ()

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_iid", None)
        return d

    def __setstate__(self, state) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        _intern(next(_REGISTRY[c] for c in type(self).__mro__ if c in _REGISTRY), self)


# --------------------------------------------------------------------------------------------
# Layer specs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stem(_Interned):
    """kxk conv (stride s) + BN + activation, optionally followed by a 3x3/2 max-pool (padding 1).

    ``bn`` False: the conv has a bias and no BatchNorm (SqueezeNet).  ``padding`` 'same' (k // 2)
    or 'valid' (none: SqueezeNet, Xception).
    """

    out_ch: int
    kernel: int = 3
    stride: int = 2
    act: str = "relu"
    pool: bool = False
    in_ch: int = 3
    bn: bool = True
    padding: str = "same"

    def __post_init__(self) -> None:
        for name in ("out_ch", "kernel", "in_ch"):
            _positive_int("stem", name, getattr(self, name))
        if isinstance(self.stride, bool) or self.stride not in STRIDES:
            raise field_error(ArchError, "stem.stride", self.stride, STRIDES)
        if self.act not in ACTIVATIONS:
            raise field_error(ArchError, "stem.act", self.act, ACTIVATIONS)
        for name in ("pool", "bn"):
            if not isinstance(getattr(self, name), bool):
                raise field_error(ArchError, f"stem.{name}", getattr(self, name), "true, false")
        if self.padding not in ("same", "valid"):
            raise field_error(ArchError, "stem.padding", self.padding, ("same", "valid"))
        _intern(STEMS, self)

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        h, w = out_hw(h, w, self.kernel, self.stride, self.padding)
        if self.pool:
            h, w = out_hw(h, w, 3, 2)
        return h, w

    def to_string(self) -> str:
        parts = ["stem", f"i{self.in_ch}", f"o{self.out_ch}", f"k{self.kernel}", f"s{self.stride}",
                 ACT_CODES[self.act]]
        if self.pool:
            parts.append("pool")
        if not self.bn:
            parts.append("nobn")
        if self.padding != "same":
            parts.append(self.padding)
        return "_".join(parts)


@dataclass(frozen=True)
class BlockSpec(_Interned):
    """One block of the body.  ``type`` names a registered block class.

    ``mid_ch`` is the block's inner width: the expanded channels of an mbconv (equal to ``in_ch``
    means no expansion conv), the hidden (reduced) width of a sandglass, the branch width of a
    shufflev2 unit.  ``se_ch`` > 0 adds squeeze-and-excitation with that many bottleneck channels.
    ``opts`` holds block-specific integer options as sorted (key, value) pairs.  ``stride`` is an
    int, or an (sH, sW) pair for the block types that take one.  ``padding`` is 'same' (k // 2),
    'valid' (none) or 'ceil' (none, ceil-mode: pools) for the block types that allow it.
    """

    type: str
    in_ch: int
    out_ch: int
    mid_ch: int = 0
    kernel: int = 3
    stride: int = 1
    se_ch: int = 0
    se_gate: str = "hsigmoid"
    act: str = "relu"
    residual: bool = False
    groups: int = 1
    opts: tuple[tuple[str, int], ...] = ()
    padding: str = "same"

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not re.fullmatch(r"[a-z][a-z0-9]*", self.type or ""):
            raise field_error(ArchError, "block.type", self.type, "a block type name such as mbconv")
        for name in ("in_ch", "out_ch", "kernel", "groups"):
            _positive_int(f"block({self.type})", name, getattr(self, name))
        if not isinstance(self.mid_ch, int) or self.mid_ch < 0:
            raise field_error(ArchError, f"block({self.type}).mid_ch", self.mid_ch, "an integer >= 0")
        if not isinstance(self.se_ch, int) or self.se_ch < 0:
            raise field_error(ArchError, f"block({self.type}).se_ch", self.se_ch, "an integer >= 0")
        object.__setattr__(self, "stride", _normalize_stride(f"block({self.type}).stride", self.stride))
        if self.padding not in PADDINGS:
            raise field_error(ArchError, f"block({self.type}).padding", self.padding, PADDINGS)
        if self.act not in ACTIVATIONS:
            raise field_error(ArchError, f"block({self.type}).act", self.act, ACTIVATIONS)
        if self.se_gate not in SE_GATES:
            raise field_error(ArchError, f"block({self.type}).se_gate", self.se_gate, SE_GATES)
        if not self.se_ch and self.se_gate != "hsigmoid":
            # the gate means nothing without SE; keep one canonical value so that the string form
            # (which omits it) round-trips to an equal BlockSpec
            object.__setattr__(self, "se_gate", "hsigmoid")
        if self.residual and (self.stride != 1 or self.in_ch != self.out_ch):
            raise ArchError(
                f"block({self.type}).residual: needs stride 1 and in_ch == out_ch, "
                f"got stride {self.stride}, {self.in_ch} -> {self.out_ch}")
        opts = self.opts
        if isinstance(opts, dict):
            opts = tuple(sorted(opts.items()))
            object.__setattr__(self, "opts", opts)
        elif isinstance(opts, list):  # a list of pairs: the same opts, hashable (the spec is interned)
            opts = tuple(tuple(i) if isinstance(i, list) else i for i in opts)
            object.__setattr__(self, "opts", opts)
        for item in opts:
            if (not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str)
                    or not re.fullmatch(r"[a-z][a-z0-9]*", item[0]) or not isinstance(item[1], int)):
                raise field_error(ArchError, f"block({self.type}).opts", item, "(name, int) pairs")
        if list(opts) != sorted(opts) or len({k for k, _ in opts}) != len(opts):
            raise field_error(ArchError, f"block({self.type}).opts", opts, "sorted, unique names")
        _intern(BLOCKS, self)

    def opt(self, key: str, default: int = 0) -> int:
        return dict(self.opts).get(key, default)

    def to_string(self) -> str:
        parts = [self.type, f"i{self.in_ch}", f"o{self.out_ch}"]
        if self.mid_ch:
            parts.append(f"m{self.mid_ch}")
        stride = self.stride if isinstance(self.stride, int) else f"{self.stride[0]}x{self.stride[1]}"
        parts += [f"k{self.kernel}", f"s{stride}"]
        if self.padding != "same":
            parts.append(self.padding)
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if self.se_ch:
            parts.append(f"se{self.se_ch}{GATE_CODES[self.se_gate]}")
        parts.append(ACT_CODES[self.act])
        if self.residual:
            parts.append("skip")
        parts += [f"x{k}={v}" for k, v in self.opts]
        return "_".join(parts)

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return out_hw(h, w, self.kernel, self.stride, self.padding)


@dataclass(frozen=True)
class Head(_Interned):
    """Optional 1x1 conv + BN + act (``last_ch``), global pool, optional hidden 1x1/linear with
    bias + act (``hidden_ch``, MobileNetV3's efficient last stage), dropout, classifier.

    ``classifier`` 'conv' (SqueezeNet): after the optional last conv come dropout, a 1x1 conv to
    the classes (with bias), the activation, and the global pool.  ``classifier_bias`` False: the
    classifier has no bias (the official ShuffleNetV1 code).
    """

    last_ch: int = 0
    hidden_ch: int = 0
    act: str = "relu"
    dropout: float = 0.0
    hidden_bias: bool = True
    classifier: str = "linear"
    classifier_bias: bool = True

    def __post_init__(self) -> None:
        for name in ("last_ch", "hidden_ch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise field_error(ArchError, f"head.{name}", v, "an integer >= 0")
        if self.act not in ACTIVATIONS:
            raise field_error(ArchError, "head.act", self.act, ACTIVATIONS)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise field_error(ArchError, "head.dropout", self.dropout, "a number in [0, 1)")
        object.__setattr__(self, "dropout", float(self.dropout))
        if not isinstance(self.hidden_bias, bool):
            raise field_error(ArchError, "head.hidden_bias", self.hidden_bias, "true, false")
        if not self.hidden_ch and not self.hidden_bias:
            raise ArchError("head.hidden_bias: false needs a hidden layer (hidden_ch > 0)")
        if self.classifier not in HEAD_CLASSIFIERS:
            raise field_error(ArchError, "head.classifier", self.classifier, HEAD_CLASSIFIERS)
        if not isinstance(self.classifier_bias, bool):
            raise field_error(ArchError, "head.classifier_bias", self.classifier_bias, "true, false")
        if self.classifier == "conv" and self.hidden_ch:
            raise ArchError(f"head.hidden_ch: got {self.hidden_ch} with classifier conv; allowed: 0 "
                            "(the conv classifier works on the feature map, before pooling)")
        _intern(HEADS, self)

    def to_string(self) -> str:
        parts = ["head"]
        if self.last_ch:
            parts.append(f"l{self.last_ch}")
        if self.hidden_ch:
            parts.append(f"h{self.hidden_ch}")
        if not self.hidden_bias:
            parts.append("nobias")
        if self.classifier == "conv":
            parts.append("convcls")
        if not self.classifier_bias:
            parts.append("clsnobias")
        parts.append(ACT_CODES[self.act])
        if self.dropout:
            parts.append(f"d{self.dropout:g}")
        return "_".join(parts)

    def features(self, in_ch: int) -> int:
        """Channels that reach the classifier."""
        return self.hidden_ch or self.last_ch or in_ch


STEMS = Interned(attrgetter(*(f.name for f in fields(Stem))))
BLOCKS = Interned(attrgetter(*(f.name for f in fields(BlockSpec))), _block_row)
HEADS = Interned(attrgetter(*(f.name for f in fields(Head))))
_REGISTRY = {Stem: STEMS, BlockSpec: BLOCKS, Head: HEADS}
_IID = attrgetter("_iid")


# --------------------------------------------------------------------------------------------
# The architecture
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arch:
    stem: Stem
    blocks: tuple[BlockSpec, ...]
    head: Head = field(default_factory=Head)

    def __post_init__(self) -> None:
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise ArchError("arch.blocks: got no blocks; allowed: one or more blocks")
        prev = self.stem.out_ch
        for i, b in enumerate(self.blocks):
            if not isinstance(b, BlockSpec):
                raise field_error(ArchError, f"arch.blocks[{i}]", type(b).__name__, "BlockSpec")
            if b.in_ch != prev:
                raise ArchError(f"arch.blocks[{i}].in_ch: got {b.in_ch}; allowed: {prev} "
                                f"(the previous layer's out_ch)")
            prev = b.out_ch
        from search_space.blocks import check_block  # registry lives with the modules

        for i, b in enumerate(self.blocks):
            try:
                check_block(b)
            except ArchError as exc:
                raise ArchError(f"arch.blocks[{i}]: {exc}") from None
        self._set_ids()

    def _set_ids(self) -> None:
        """``_ids``: the intern ids of the stem, each block and the head, as int64 bytes (many
        archs' ids join into one numpy array without a Python step per layer)."""
        object.__setattr__(self, "_ids", array("q", [self.stem._iid, *map(_IID, self.blocks), self.head._iid]).tobytes())

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_ids", None)  # process-local
        return d

    def __setstate__(self, state) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        self._set_ids()

    # -- derived -----------------------------------------------------------------------------
    @property
    def out_ch(self) -> int:
        return self.blocks[-1].out_ch

    @property
    def num_features(self) -> int:
        return self.head.features(self.out_ch)

    def build(self, num_classes: int = 1000):
        """The ``torch.nn.Module`` of this architecture."""
        from search_space.builder import build

        return build(self, num_classes=num_classes)

    def replace_block(self, index: int, **changes) -> "Arch":
        blocks = list(self.blocks)
        blocks[index] = replace(blocks[index], **changes)
        return replace(self, blocks=tuple(blocks))

    # -- string form ---------------------------------------------------------------------------
    def to_string(self) -> str:
        return "-".join([self.stem.to_string(), *(b.to_string() for b in self.blocks),
                         self.head.to_string()])

    __str__ = to_string

    @classmethod
    def from_string(cls, text: str) -> "Arch":
        return parse_arch_string(text)

    # -- dict / YAML / JSON ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def block_dict(b: BlockSpec) -> dict[str, Any]:
            d = {"type": b.type, "in_ch": b.in_ch, "out_ch": b.out_ch}
            for f in fields(BlockSpec):
                if f.name in d:
                    continue
                v = getattr(b, f.name)
                if v != f.default:
                    d[f.name] = dict(v) if f.name == "opts" else list(v) if isinstance(v, tuple) else v
            return d

        def plain(obj, later: tuple[str, ...]) -> dict[str, Any]:
            # fields added later are written only when they differ from their default, so that
            # existing files stay byte-identical
            defaults = {f.name: f.default for f in fields(obj)}
            return {k: v for k, v in asdict(obj).items() if k not in later or v != defaults[k]}

        return {
            "version": FORMAT_VERSION,
            "arch": self.to_string(),
            "stem": plain(self.stem, ("bn", "padding")),
            "blocks": [block_dict(b) for b in self.blocks],
            "head": plain(self.head, ("classifier", "classifier_bias")),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "arch") -> "Arch":
        if not isinstance(d, dict):
            raise field_error(ArchError, where, type(d).__name__, "a mapping with stem, blocks, head")
        version = d.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise field_error(ArchError, f"{where}.version", version, [FORMAT_VERSION])
        if "stem" not in d or "blocks" not in d:
            if "arch" in d and isinstance(d["arch"], str):
                return parse_arch_string(d["arch"])
            raise ArchError(f"{where}: missing 'stem' or 'blocks'; allowed keys: version, arch, stem, blocks, head")
        stem = _make(Stem, d["stem"], f"{where}.stem")
        raw_blocks = d["blocks"]
        if not isinstance(raw_blocks, list):
            raise field_error(ArchError, f"{where}.blocks", type(raw_blocks).__name__, "a list of blocks")
        blocks = []
        for i, b in enumerate(raw_blocks):
            if isinstance(b, dict) and isinstance(b.get("opts"), dict):
                b = {**b, "opts": tuple(sorted(b["opts"].items()))}
            blocks.append(_make(BlockSpec, b, f"{where}.blocks[{i}]"))
        head = _make(Head, d.get("head", {}), f"{where}.head")
        arch = cls(stem, tuple(blocks), head)
        if isinstance(d.get("arch"), str) and d["arch"] != arch.to_string():
            raise ArchError(f"{where}.arch: the string does not match the stem/blocks/head given")
        return arch

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    @classmethod
    def from_yaml(cls, text: str, where: str = "arch") -> "Arch":
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ArchError(f"{where}: malformed YAML{at}: {getattr(exc, 'problem', exc)}") from None
        return cls.from_dict(data, where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "arch") -> "Arch":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"{where}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(data, where)

    def save(self, path) -> None:
        from pathlib import Path

        p = Path(path)
        p.write_text(self.to_json() if p.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls, path) -> "Arch":
        """Read an arch from a .yaml/.yml/.json file, or a file holding one arch string."""
        from pathlib import Path

        p = Path(path)
        if not p.is_file():
            raise ArchError(f"arch file: {p} does not exist")
        text = p.read_text()
        if p.suffix == ".json":
            return cls.from_json(text, where=str(p))
        stripped = text.strip()
        if stripped.startswith("stem_") and "\n" not in stripped:
            return parse_arch_string(stripped)
        return cls.from_yaml(text, where=str(p))


def _make(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise field_error(ArchError, where, type(d).__name__, "a mapping")
    names = [f.name for f in fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise field_error(ArchError, f"{where}.{unknown[0]}", unknown[0], names)
    try:
        return cls(**d)
    except TypeError as exc:
        raise ArchError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------------------
# String parsing
# --------------------------------------------------------------------------------------------
_INT_FIELD = re.compile(r"([a-z])(\d+)$")


def _parse_layer(token: str, where: str) -> tuple[str, dict[str, Any]]:
    parts = token.split("_")
    kind, out = parts[0], {}
    for p in parts[1:]:
        if p in CODE_ACTS:
            out["act"] = CODE_ACTS[p]
        elif p == "skip":
            out["residual"] = True
        elif p == "pool":
            out["pool"] = True
        elif p == "nobias":
            out["hidden_bias"] = False
        elif p == "nobn":
            out["bn"] = False
        elif p in ("valid", "ceil"):
            out["padding"] = p
        elif p == "convcls":
            out["classifier"] = "conv"
        elif p == "clsnobias":
            out["classifier_bias"] = False
        elif m := re.fullmatch(r"s(\d+)x(\d+)", p):
            out["s"] = (int(m.group(1)), int(m.group(2)))
        elif m := re.fullmatch(r"se(\d+)([hs])", p):
            out["se_ch"], out["se_gate"] = int(m.group(1)), CODE_GATES[m.group(2)]
        elif m := re.fullmatch(r"d(\d*\.?\d+(?:e-?\d+)?)", p):
            out["dropout"] = float(m.group(1))
        elif m := re.fullmatch(r"x([a-z][a-z0-9]*)=(-?\d+)", p):
            out.setdefault("opts", []).append((m.group(1), int(m.group(2))))
        elif m := _INT_FIELD.fullmatch(p):
            out[m.group(1)] = int(m.group(2))
        else:
            raise ArchError(f"{where}: cannot parse field {p!r} of {token!r}; allowed: "
                            "i o m k s g l h <int>, s<int>x<int>, se<int>h|s, re r6 hs sw li, skip, pool, nobn, valid, ceil, "
                            "nobias, convcls, clsnobias, d<float>, x<key>=<int>")
    if "opts" in out:
        out["opts"] = tuple(sorted(out["opts"]))
    return kind, out


_STEM_CODES = {"i": "in_ch", "o": "out_ch", "k": "kernel", "s": "stride"}
_BLOCK_CODES = {"i": "in_ch", "o": "out_ch", "m": "mid_ch", "k": "kernel", "s": "stride", "g": "groups"}
_HEAD_CODES = {"l": "last_ch", "h": "hidden_ch"}


def _rename(kw: dict[str, Any], codes: dict[str, str], allowed_named: set[str], where: str) -> dict[str, Any]:
    out = {}
    for k, v in kw.items():
        if k in codes:
            out[codes[k]] = v
        elif k in allowed_named:
            out[k] = v
        else:
            raise ArchError(f"{where}: field {k!r} does not apply here; allowed: "
                            f"{', '.join(sorted(set(codes) | allowed_named))}")
    return out


def parse_arch_string(text: str) -> Arch:
    """Parse the one-line arch string (see the module docstring for the grammar)."""
    if not isinstance(text, str) or not text.strip():
        raise ArchError("arch string: empty; allowed: stem_...-<block>-...-head_...")
    tokens = text.strip().split("-")
    if len(tokens) == 2 and tokens[0].startswith("stem") and tokens[1].startswith("head"):
        raise ArchError("arch string: has no blocks; allowed: stem_...-<block>-...-head_... (at least one block)")
    if len(tokens) < 3 or not tokens[0].startswith("stem") or not tokens[-1].startswith("head"):
        raise ArchError("arch string: must start with 'stem_' and end with 'head_' layers joined by '-'")
    kind, kw = _parse_layer(tokens[0], "arch string stem")
    stem = Stem(**_rename(kw, _STEM_CODES, {"act", "pool", "bn", "padding"}, "arch string stem"))
    blocks = []
    for i, tok in enumerate(tokens[1:-1]):
        where = f"arch string block {i}"
        kind, kw = _parse_layer(tok, where)
        kw = _rename(kw, _BLOCK_CODES, {"act", "residual", "se_ch", "se_gate", "opts", "padding"}, where)
        for need in ("in_ch", "out_ch"):
            if need not in kw:
                raise ArchError(f"{where}: missing {need} ({'i' if need == 'in_ch' else 'o'}<int>) in {tok!r}")
        blocks.append(BlockSpec(type=kind, **kw))
    kind, kw = _parse_layer(tokens[-1], "arch string head")
    head = Head(**_rename(kw, _HEAD_CODES, {"act", "dropout", "hidden_bias", "classifier", "classifier_bias"},
                          "arch string head"))
    return Arch(stem, tuple(blocks), head)


# --------------------------------------------------------------------------------------------
# Signatures: the one place a layer's key at an input shape is derived
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signature:
    """A layer at an input shape.  ``kind`` is 'stem', 'head' or the block type."""

    kind: str
    spec: Stem | BlockSpec | Head
    in_ch: int
    h: int
    w: int
    num_classes: int = 0

    @property
    def key(self) -> str:
        """What the layer costs depends on: its spec and input shape (and the head's class count).
        The head's dropout is left out (an identity at inference), so heads that differ only in
        dropout share one key, one table entry and one measurement."""
        if self.kind == "head":
            spec = replace(self.spec, dropout=0.0) if self.spec.dropout else self.spec
            return f"{spec.to_string()}@{self.in_ch}x{self.h}x{self.w}_n{self.num_classes}"
        return f"{self.spec.to_string()}@{self.in_ch}x{self.h}x{self.w}"

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kind == "head":
            return 1, 1
        return self.spec.out_hw(self.h, self.w)


def signatures(arch: Arch, resolution: int | tuple[int, int] = 224, num_classes: int = 1000) -> list[Signature]:
    """Stem, each block and the head of ``arch`` at input ``resolution`` (int or (H, W))."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    sigs = [Signature("stem", arch.stem, arch.stem.in_ch, h, w)]
    h, w = arch.stem.out_hw(h, w)
    for b in arch.blocks:
        sigs.append(Signature(b.type, b, b.in_ch, h, w))
        h, w = b.out_hw(h, w)
    sigs.append(Signature("head", arch.head, arch.out_ch, h, w, num_classes))
    return sigs


def signature_from_key(key: str) -> Signature:
    """The ``Signature`` whose ``key`` is ``key`` (its inverse; a head comes back without dropout,
    which its key leaves out).  Lets measurements stored by key be priced and refitted later."""
    if not isinstance(key, str) or key.count("@") != 1:
        raise ArchError(f"signature key: got {key!r}; allowed: <layer token>@<C>x<H>x<W>[_n<classes>]")
    token, shape = key.split("@")
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)(?:_n(\d+))?", shape)
    if m is None:
        raise ArchError(f"signature key {key!r}: shape {shape!r}; allowed: <C>x<H>x<W>[_n<classes>]")
    c, h, w = (int(m.group(i)) for i in (1, 2, 3))
    kind, kw = _parse_layer(token, f"signature key {key!r}")
    where = f"signature key {key!r}"
    if kind == "stem":
        return Signature("stem", Stem(**_rename(kw, _STEM_CODES, {"act", "pool", "bn", "padding"}, where)), c, h, w)
    if kind == "head":
        if m.group(4) is None:
            raise ArchError(f"{where}: a head key ends in _n<classes>")
        head = Head(**_rename(kw, _HEAD_CODES, {"act", "dropout", "hidden_bias", "classifier", "classifier_bias"}, where))
        return Signature("head", head, c, h, w, int(m.group(4)))
    spec = BlockSpec(type=kind, **_rename(kw, _BLOCK_CODES, {"act", "residual", "se_ch", "se_gate", "opts", "padding"},
                                          where))
    return Signature(kind, spec, c, h, w)


def iter_block_shapes(arch: Arch, resolution: int = 224) -> Iterator[tuple[BlockSpec, int, int]]:
    for s in signatures(arch, resolution):
        if s.kind not in ("stem", "head"):
            yield s.spec, s.h, s.w


__all__ = [
    "ACTIVATIONS", "PADDINGS", "SE_GATES", "Arch", "BlockSpec", "Head", "Signature", "Stem", "conv_out",
    "make_divisible", "out_hw", "parse_arch_string", "signature_from_key", "signatures", "stride_hw",
]
