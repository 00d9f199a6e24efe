"""Cost features of one layer signature, for the learned latency predictor.

A layer (stem, block or head) at an input shape is described by ``search_space.arch.signatures``;
this module turns a ``Signature`` into a fixed-length vector of physically meaningful terms:
multiply-accumulates split by the kind of operator (pointwise, depthwise by kernel size, dense,
squeeze-and-excitation), activation bytes read and written, weight bytes, costly activations
(h-swish / swish elements), and operator count.  A linear model over these terms with
non-negative weights extrapolates sensibly to widths and resolutions it never saw.

Each block family has a small decomposition function (``DECOMPOSE``); a family without one is
priced from its analytic total (``search_space.blocks.BLOCKS[type].cost``) as dense MACs plus its
input and output bytes, so a new family still gets a latency (marked ``generic``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from search_space.arch import ACTIVATIONS, OPTS, PADDINGS, ROW_FIELDS, BlockSpec, Head, Signature, Stem, out_hw, stride_hw
from search_space.errors import TargetError

FEATURES = (
    "pw_macs",        # 1x1 convs and fully connected layers
    "dw3_macs",       # depthwise convs, kernel <= 3
    "dw5_macs",       # depthwise convs, kernel 5
    "dw7_macs",       # depthwise convs, kernel >= 7
    "dws2_macs",      # extra term: depthwise MACs of stride-2 depthwise convs
    "dense_macs",     # kxk full (or grouped) convs, k > 1
    "se_macs",        # squeeze-and-excitation FCs
    "dwu4_macs",      # extra term: depthwise MACs on channel counts not a multiple of DW_ALIGN (4)
    "pwu_macs",       # extra term: 1x1 MACs with in or out channels not a multiple of the target's pw_align (8)
    "in_bytes",       # activation bytes read by the layer
    "out_bytes",      # activation bytes written at its output
    "mid_bytes",      # intermediate activation bytes (written + read inside the layer)
    "weight_bytes",   # parameters, fp32
    "hswish_elems",   # elements through h-swish / swish (relu-like ones are ~free)
    "ops",            # conv / linear operators (per-op dispatch overhead)
    "one",            # per-layer constant
)
N_FEATURES = len(FEATURES)
ALIGN = 8     # default pw_align.  1x1 convs: channel counts not a multiple of this get the pwu_macs term (a coarse
# flag: here dense 3x3 convs take about the same time at 34-40 input channels, 1.15-1.43x the 32-channel
# time per MAC -- padded to ONNX Runtime's NCHWc block of 16 --, 1x1 convs at most 1.09x;
# ``benchmarks/ort_alignment.py``)
PW_ALIGNS = (8, 16)  # a target's ``meta.pw_align`` (default ALIGN): 16 is ONNX Runtime's NCHWc block with AVX-512.
# On the AVX-512 Xeon of sessions 9-13 X2's 628 measured layers whose channel counts were a multiple of 8 but not
# of 16 were priced ~10% low under the 8-flag (docs/latency.md, session 13); whether 16 is better for whole networks
# was not confirmed on the fresh set there, so 8 stays the default everywhere and 16 is chosen per target.
DW_ALIGN = 4  # depthwise convs: ONNX Runtime's NCHWc depthwise kernel takes channel counts that are a
# multiple of 4; other counts fall back to a per-channel path 5-13x slower per MAC on this CPU
# (``benchmarks/ort_alignment.py``: 646 channels, k7, 14x14: 2.18 ms vs 0.17 ms at 644)
_IDX = {n: i for i, n in enumerate(FEATURES)}


def pw_align_of(meta: dict, where: str = "meta") -> int:
    """A target's ``meta.pw_align`` (default 8, the features of every target made before it existed)."""
    v = meta.get("pw_align", ALIGN) if isinstance(meta, dict) else ALIGN
    if isinstance(v, bool) or v not in PW_ALIGNS:
        raise TargetError(f"{where}.pw_align: got {v!r}; allowed: {', '.join(map(str, PW_ALIGNS))}")
    return int(v)
SCALE = np.array([1e-6 if n.endswith("macs") else 1e-6 if n.endswith("bytes") else
                  1e-6 if n.endswith("elems") else 1.0 for n in FEATURES])  # keep numbers O(1)


class _Acc:
    """Accumulates operator costs of one layer."""

    __slots__ = ("v", "align")

    def __init__(self, align: int = ALIGN) -> None:
        self.v = [0.0] * N_FEATURES
        self.align = align

    def add(self, name: str, value: float) -> None:
        self.v[_IDX[name]] += value

    def act(self, act: str, elems: float) -> None:
        if act in ("hswish", "swish"):
            self.add("hswish_elems", elems)

    def pw(self, cin: int, cout: int, hw: int, groups: int = 1) -> None:
        self.add("pw_macs", cin * cout * hw / groups)
        if cin % self.align or cout % self.align:  # optimised kernels (e.g. ONNX Runtime's NCHWc) need aligned channels
            self.add("pwu_macs", cin * cout * hw / groups)
        self.add("weight_bytes", 4 * (cin * cout / groups + 2 * cout))
        self.add("ops", 1)

    def dw(self, ch: int, k: int, stride, hw_out: int) -> None:
        macs = ch * k * k * hw_out
        self.add("dw3_macs" if k <= 3 else "dw5_macs" if k <= 5 else "dw7_macs", macs)
        if max(stride_hw(stride)) > 1:
            self.add("dws2_macs", macs)
        if ch % DW_ALIGN:
            self.add("dwu4_macs", macs)
        self.add("weight_bytes", 4 * (ch * k * k + 2 * ch))
        self.add("ops", 1)

    def dense(self, cin: int, cout: int, k: int, hw_out: int, groups: int = 1) -> None:
        self.add("dense_macs", cin * cout * k * k * hw_out / groups)
        self.add("weight_bytes", 4 * (cin * cout * k * k / groups + 2 * cout))
        self.add("ops", 1)

    def se(self, ch: int, se_ch: int, hw: int) -> None:
        self.add("se_macs", 2 * ch * se_ch)  # the two FCs
        self.add("mid_bytes", 4 * 2 * ch * hw)  # pooling reads, gating multiply writes
        self.add("weight_bytes", 4 * (2 * ch * se_ch + ch + se_ch))
        self.add("ops", 2)

    def mid(self, elems: float) -> None:
        self.add("mid_bytes", 4 * elems)


def _mbconv(s: BlockSpec, h: int, w: int, a: _Acc) -> None:
    mid = s.mid_ch or s.in_ch
    ho, wo = s.out_hw(h, w)
    if mid != s.in_ch or s.opt("pw"):
        a.pw(s.in_ch, mid, h * w, s.groups)
        a.mid(mid * h * w)
        a.act(s.act, mid * h * w)
    a.dw(mid, s.kernel, s.stride, ho * wo)
    a.mid(mid * ho * wo)
    a.act(s.act, mid * ho * wo)
    if s.se_ch:
        a.se(mid, s.se_ch, ho * wo)
        a.mid(mid * ho * wo)
    a.pw(mid, s.out_ch, ho * wo, s.groups)
    if s.residual:
        a.mid(s.out_ch * ho * wo)


def _dwsep(s: BlockSpec, h: int, w: int, a: _Acc) -> None:
    ho, wo = s.out_hw(h, w)
    a.dw(s.in_ch, s.kernel, s.stride, ho * wo)
    a.mid(s.in_ch * ho * wo)
    a.act(s.act, s.in_ch * ho * wo)
    if s.se_ch:
        a.se(s.in_ch, s.se_ch, ho * wo)
        a.mid(s.in_ch * ho * wo)
    a.pw(s.in_ch, s.out_ch, ho * wo, s.groups)
    a.act(s.act, s.out_ch * ho * wo)


def _sandglass(s: BlockSpec, h: int, w: int, a: _Acc) -> None:
    # [dw kxk on the wide input + act] -> 1x1 reduce (linear) -> 1x1 expand + act -> [dw kxk/s, linear]
    hidden = s.mid_ch or max(1, s.in_ch // 6)
    ho, wo = s.out_hw(h, w)
    if s.opt("dw1", 1):
        a.dw(s.in_ch, s.kernel, 1, h * w)
        a.mid(s.in_ch * h * w)
        a.act(s.act, s.in_ch * h * w)
    a.pw(s.in_ch, hidden, h * w, s.groups)
    a.mid(hidden * h * w)
    a.pw(hidden, s.out_ch, h * w, s.groups)
    a.act(s.act, s.out_ch * h * w)
    if s.opt("dw2", 1):
        a.mid(s.out_ch * h * w)
        a.dw(s.out_ch, s.kernel, s.stride, ho * wo)
    if s.residual:
        a.mid(s.out_ch * ho * wo)


def _shufflev2(s: BlockSpec, h: int, w: int, a: _Acc) -> None:
    # torchvision's unit: branch width mid (= out // 2); stride 2 adds branch1 = dw kxk/2 + 1x1
    ho, wo = s.out_hw(h, w)
    mid = s.mid_ch or s.out_ch // 2
    if max(stride_hw(s.stride)) == 1:
        cin = s.in_ch // 2
    else:
        cin = s.in_ch
        a.dw(s.in_ch, s.kernel, s.stride, ho * wo)
        a.mid(s.in_ch * ho * wo)
        a.pw(s.in_ch, mid, ho * wo)
        a.act(s.act, mid * ho * wo)
    a.pw(cin, mid, h * w)
    a.mid(mid * h * w)
    a.act(s.act, mid * h * w)
    a.dw(mid, s.kernel, s.stride, ho * wo)
    a.mid(mid * ho * wo)
    a.pw(mid, mid, ho * wo)
    a.act(s.act, mid * ho * wo)
    a.mid(2 * s.out_ch * ho * wo)  # concat + channel shuffle copies


def _generic(s: BlockSpec, h: int, w: int, a: _Acc) -> None:
    """A family without a decomposition: its analytic total as dense MACs."""
    from search_space.blocks import BLOCKS

    cls = BLOCKS.get(s.type)
    if cls is None:
        raise TargetError(f"block type {s.type!r}: not registered; allowed: {', '.join(sorted(BLOCKS))}")
    params, macs = cls.cost(s, h, w)
    a.add("dense_macs", macs)
    a.add("weight_bytes", 4 * params)
    a.add("ops", 3)


DECOMPOSE: dict[str, Callable[[BlockSpec, int, int, _Acc], None]] = {
    "mbconv": _mbconv, "dwsep": _dwsep, "sandglass": _sandglass, "shufflev2": _shufflev2,
}


def _stem(s: Stem, h: int, w: int, a: _Acc) -> None:
    ho, wo = out_hw(h, w, s.kernel, s.stride, getattr(s, "padding", "same"))
    a.dense(s.in_ch, s.out_ch, s.kernel, ho * wo)
    a.act(s.act, s.out_ch * ho * wo)
    if s.pool:
        a.mid(s.out_ch * ho * wo)
        a.add("ops", 1)


def _head(s: Head, cin: int, h: int, w: int, num_classes: int, a: _Acc) -> None:
    ch = cin
    if s.last_ch:
        a.pw(cin, s.last_ch, h * w)
        a.act(s.act, s.last_ch * h * w)
        a.mid(s.last_ch * h * w)
        ch = s.last_ch
    a.add("ops", 1)  # global pool
    if getattr(s, "classifier", "linear") == "conv":  # SqueezeNet: 1x1 conv to the classes, then pool
        a.pw(ch, num_classes, h * w)
        a.mid(num_classes * h * w)
        return
    if s.hidden_ch:
        a.pw(ch, s.hidden_ch, 1)
        a.act(s.act, s.hidden_ch)
        ch = s.hidden_ch
    a.pw(ch, num_classes, 1)


def layer_features(sig: Signature, align: int = ALIGN) -> np.ndarray:
    """The feature vector (unscaled) of one signature; ``align``: the target's ``pw_align``."""
    a = _Acc(align)
    h, w = sig.h, sig.w
    a.add("in_bytes", 4 * sig.in_ch * h * w)
    a.add("one", 1)
    if sig.kind == "stem":
        _stem(sig.spec, h, w, a)
        ho, wo = sig.out_hw
        a.add("out_bytes", 4 * sig.spec.out_ch * ho * wo)
    elif sig.kind == "head":
        _head(sig.spec, sig.in_ch, h, w, sig.num_classes or 1000, a)
        a.add("out_bytes", 4 * (sig.num_classes or 1000))
    else:
        dec = DECOMPOSE.get(sig.kind)
        if dec is not None:
            dec(sig.spec, h, w, a)
            if not _macs_agree(sig, a):  # a variant this decomposition does not know: price it generically
                a = _Acc(align)
                a.add("in_bytes", 4 * sig.in_ch * h * w)
                a.add("one", 1)
                _generic(sig.spec, h, w, a)
        else:
            _generic(sig.spec, h, w, a)
        ho, wo = sig.out_hw
        a.add("out_bytes", 4 * sig.spec.out_ch * ho * wo)
    return np.array(a.v)


_MAC_NAMES = [i for i, n in enumerate(FEATURES) if n.endswith("macs") and n not in ("dws2_macs", "dwu4_macs", "pwu_macs")]


_AGREE: dict[tuple, bool] = {}


def _structure(s: BlockSpec) -> tuple:
    """What decides whether a decomposition applies to a spec: everything but its sizes."""
    mid = s.mid_ch
    return (s.type, s.stride, s.kernel, s.groups, s.opts, s.padding, s.se_ch > 0, s.residual,
            mid == 0, mid == s.in_ch, mid == s.out_ch, s.in_ch == s.out_ch, 2 * s.in_ch == s.out_ch,
            s.in_ch % 2, s.out_ch % 2)


def _macs_agree(sig: Signature, a: _Acc) -> bool:
    """The decomposition's conv+linear MACs equal the block type's analytic count (within 1%).
    Decided once per structure (``_structure``: type, stride, kernel, groups, options, which
    channel counts coincide), not per layer: agreement is a property of the formulas."""
    st = _structure(sig.spec)
    ok = _AGREE.get(st)
    if ok is None:
        from search_space.blocks import BLOCKS

        cls = BLOCKS.get(sig.spec.type)
        if cls is None:
            ok = True
        else:
            _, macs = cls.cost(sig.spec, sig.h, sig.w)
            mine = sum(a.v[i] for i in _MAC_NAMES)
            ok = abs(mine - macs) <= 0.01 * max(macs, 1)
        if len(_AGREE) < 100_000:
            _AGREE[st] = ok
    return ok


def is_generic(kind: str) -> bool:
    return kind not in DECOMPOSE and kind not in ("stem", "head")


def feature_matrix(sigs, align: int = ALIGN) -> np.ndarray:
    return np.stack([layer_features(s, align) for s in sigs]) if sigs else np.zeros((0, N_FEATURES))


def total_macs(sig: Signature) -> float:
    v = layer_features(sig)
    return float(sum(v[i] for i in _MAC_NAMES))  # conv+linear


class Kinds:
    """The layer kinds of many rows as (names, codes): row i's kind is ``names[codes[i]]``, so that
    per-kind work costs numpy operations instead of a Python step per row (``as_kinds``)."""

    __slots__ = ("names", "codes")

    def __init__(self, names: Sequence[str], codes: np.ndarray) -> None:
        self.names = list(names)
        self.codes = np.asarray(codes, np.int64)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return self.names[self.codes[i]]
        return Kinds(self.names, self.codes[i])

    def __iter__(self):
        names = self.names
        return (names[c] for c in self.codes.tolist())

    def lookup(self, table: dict, default) -> np.ndarray:
        """``table.get(kind, default)`` of every row."""
        return np.array([table.get(n, default) for n in self.names] or [default])[self.codes]

    def groups(self) -> dict[str, np.ndarray]:
        """Kind -> its rows (ascending), kinds in order of first row."""
        if not len(self.codes):
            return {}
        present = np.flatnonzero(np.bincount(self.codes, minlength=len(self.names)))
        if len(present) == 1:
            return {self.names[int(present[0])]: np.arange(len(self.codes))}
        parts = {int(j): np.flatnonzero(self.codes == j) for j in present}
        return {self.names[j]: parts[j] for j in sorted(parts, key=lambda j: parts[j][0])}


def as_kinds(kinds) -> Kinds:
    """A ``Kinds`` of a sequence of kind names (or the ``Kinds`` itself)."""
    if isinstance(kinds, Kinds):
        return kinds
    col: dict[str, int] = {}
    codes = np.fromiter((col.setdefault(k, len(col)) for k in kinds), np.int64)
    return Kinds(list(col), codes)



# --------------------------------------------------------------------------------------------
# Many layers at once (numpy): the same features as ``layer_features``, row by row
# --------------------------------------------------------------------------------------------
_HSW = ("hswish", "swish")
_INT_FIELDS = __import__("operator").attrgetter("in_ch", "out_ch", "mid_ch", "kernel", "se_ch", "groups")
_STRUCT_FIELDS = __import__("operator").attrgetter("type", "stride", "kernel", "groups", "opts", "padding")
_STRUCT_IDS: dict[tuple, int] = {}
_SPEC_NAMES = [f.name for f in __import__("dataclasses").fields(BlockSpec)]
_SPEC_COL = {n: i for i, n in enumerate(_SPEC_NAMES)}
spec_fields = __import__("operator").attrgetter(*_SPEC_NAMES)  # a BlockSpec's field values, as a tuple


def _vout(size: np.ndarray, k: np.ndarray, s: np.ndarray, pad: list[str] | None) -> np.ndarray:
    """``search_space.arch.conv_out`` on arrays (padding per row; None: all 'same')."""
    same = (size + 2 * (k // 2) - k) // s + 1
    if pad is None or all(p == "same" for p in pad):
        return same
    p = np.array(pad)
    valid = (size - k) // s + 1
    ceil = -(-(size - k) // s) + 1
    ceil = np.where((ceil - 1) * s >= size, ceil - 1, ceil)
    bad = ~np.isin(p, ("same", "valid", "ceil"))
    if bad.any():
        from search_space.arch import PADDINGS, ArchError
        from search_space.errors import field_error

        raise field_error(ArchError, "padding", p[bad][0], PADDINGS)
    return np.where(p == "same", same, np.where(p == "valid", valid, ceil))


class _VAcc:
    """``_Acc`` for n rows at once (feature-major); every term is added in ``_Acc``'s order, so a
    row's values equal ``layer_features``'s (adding 0.0 where a term does not apply)."""

    def __init__(self, n: int, align: int = ALIGN) -> None:
        self.F = np.zeros((N_FEATURES, n))
        self.align = align

    def add(self, name: str, value, mask=None) -> None:
        if mask is not None:
            value = np.where(mask, value, 0.0)
        self.F[_IDX[name]] += value

    def act(self, hs: np.ndarray, elems, mask=None) -> None:
        self.add("hswish_elems", elems, hs if mask is None else hs & mask)

    def pw(self, cin, cout, hw, groups=1, mask=None) -> None:
        v = cin * cout * hw / groups
        self.add("pw_macs", v, mask)
        un = (cin % self.align != 0) | (cout % self.align != 0)
        self.add("pwu_macs", v, un if mask is None else un & mask)
        self.add("weight_bytes", 4 * (cin * cout / groups + 2 * cout), mask)
        self.add("ops", 1, mask)

    def dw(self, ch, k, s2, hw_out, mask=None) -> None:
        macs = ch * k * k * hw_out
        for name, m in (("dw3_macs", k <= 3), ("dw5_macs", (k > 3) & (k <= 5)), ("dw7_macs", k > 5)):
            self.add(name, macs, m if mask is None else m & mask)
        self.add("dws2_macs", macs, s2 if mask is None else s2 & mask)
        un = ch % DW_ALIGN != 0
        self.add("dwu4_macs", macs, un if mask is None else un & mask)
        self.add("weight_bytes", 4 * (ch * k * k + 2 * ch), mask)
        self.add("ops", 1, mask)

    def dense(self, cin, cout, k, hw_out, groups=1) -> None:
        self.add("dense_macs", cin * cout * k * k * hw_out / groups)
        self.add("weight_bytes", 4 * (cin * cout * k * k / groups + 2 * cout))
        self.add("ops", 1)

    def se(self, ch, se_ch, hw, mask) -> None:
        self.add("se_macs", 2 * ch * se_ch, mask)
        self.add("mid_bytes", 4 * 2 * ch * hw, mask)
        self.add("weight_bytes", 4 * (2 * ch * se_ch + ch + se_ch), mask)
        self.add("ops", 2, mask)

    def mid(self, elems, mask=None) -> None:
        self.add("mid_bytes", 4 * elems, mask)


_RC = {f: i for i, f in enumerate(ROW_FIELDS)}
_HS_CODES = [ACTIVATIONS.index(a) for a in _HSW]
_AGREE_NUM: dict[tuple, bool] = {}  # ``_AGREE`` keyed by a structure's numeric form (``_agree_numeric``)


class _Take:
    """``seq[idx[j]]`` for j, without reading the others (specs built on demand)."""

    def __init__(self, seq, idx: np.ndarray) -> None:
        self.seq, self.idx = seq, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j):
        return self.seq[int(self.idx[j])]


class _Rows:
    """Columns of n block specs at input shapes h x w (every field read once per spec), or of
    their numeric rows (``numeric``: ``search_space.arch.ROW_FIELDS`` per row, no Python per row)."""

    def __init__(self, specs, h: np.ndarray, w: np.ndarray, vals: list | None = None,
                 numeric: np.ndarray | None = None) -> None:
        self.specs = specs
        self._R = numeric
        if numeric is not None:
            R, c = numeric, _RC
            self.cin, self.cout, self.mid, self.k, self.se, self.groups = (
                R[:, c[f]] for f in ("in_ch", "out_ch", "mid_ch", "kernel", "se_ch", "groups"))
            self.h, self.w = h, w
            self.sh, self.sw = R[:, c["sh"]], R[:, c["sw"]]
            pc = R[:, c["padding"]]
            pad = [PADDINGS[x] for x in pc.tolist()] if pc.any() else None
            self.ho = _vout(h, self.k, self.sh, pad)
            self.wo = _vout(w, self.k, self.sw, pad)
            act = R[:, c["act"]]
            self.hs = (act == _HS_CODES[0]) | (act == _HS_CODES[1])
            self.res = R[:, c["residual"]] != 0
            self.s2 = np.maximum(self.sh, self.sw) > 1
            self._opts = None
            return
        if vals is None:  # else the specs' spec_fields (LatencyModel's cache keys hold them)
            vals = [spec_fields(s) for s in specs]
        cols = list(zip(*vals))
        c = _SPEC_COL
        ints = np.array([cols[c[f]] for f in ("in_ch", "out_ch", "mid_ch", "kernel", "se_ch", "groups")],
                        dtype=np.int64).reshape(6, len(specs))
        self.cin, self.cout, self.mid, self.k, self.se, self.groups = ints
        self.h, self.w = h, w
        st = cols[c["stride"]]
        if all(type(x) is int for x in st):
            self.sh = self.sw = np.array(st, dtype=np.int64)
        else:
            pairs = np.array([(x, x) if type(x) is int else (int(x[0]), int(x[1])) for x in st], dtype=np.int64)
            self.sh, self.sw = pairs[:, 0], pairs[:, 1]
        pad = cols[c["padding"]]
        self.ho = _vout(h, self.k, self.sh, pad)
        self.wo = _vout(w, self.k, self.sw, pad)
        acts = np.array(cols[c["act"]])
        self.hs = (acts == "hswish") | (acts == "swish")
        self.res = np.array(cols[c["residual"]], dtype=bool)
        self.s2 = np.maximum(self.sh, self.sw) > 1
        self._opts = cols[c["opts"]]
        self._struct = [(v[c["type"]], v[c["stride"]], v[c["kernel"]], v[c["groups"]], v[c["opts"]], v[c["padding"]])
                        for v in vals]

    def opt(self, key: str, default: int = 0) -> np.ndarray:
        if self._R is not None:
            oc = self._R[:, _RC["opts"]]
            if not oc.any():
                return np.full(len(oc), default, dtype=np.int64)
            table = np.array([dict(o).get(key, default) if o else default for o in OPTS], dtype=np.int64)
            return table[oc]
        if not any(self._opts):
            return np.full(len(self._opts), default, dtype=np.int64)
        return np.array([dict(o).get(key, default) if o else default for o in self._opts], dtype=np.int64)


def _v_mbconv(r: _Rows, a: _VAcc) -> None:
    mid = np.where(r.mid != 0, r.mid, r.cin)
    hw, hwo = r.h * r.w, r.ho * r.wo
    ex = (mid != r.cin) | (r.opt("pw") != 0)
    a.pw(r.cin, mid, hw, r.groups, ex)
    a.mid(mid * hw, ex)
    a.act(r.hs, mid * hw, ex)
    a.dw(mid, r.k, r.s2, hwo)
    a.mid(mid * hwo)
    a.act(r.hs, mid * hwo)
    se = r.se != 0
    a.se(mid, r.se, hwo, se)
    a.mid(mid * hwo, se)
    a.pw(mid, r.cout, hwo, r.groups)
    a.mid(r.cout * hwo, r.res)


def _v_dwsep(r: _Rows, a: _VAcc) -> None:
    hwo = r.ho * r.wo
    a.dw(r.cin, r.k, r.s2, hwo)
    a.mid(r.cin * hwo)
    a.act(r.hs, r.cin * hwo)
    se = r.se != 0
    a.se(r.cin, r.se, hwo, se)
    a.mid(r.cin * hwo, se)
    a.pw(r.cin, r.cout, hwo, r.groups)
    a.act(r.hs, r.cout * hwo)


def _v_sandglass(r: _Rows, a: _VAcc) -> None:
    hidden = np.where(r.mid != 0, r.mid, np.maximum(1, r.cin // 6))
    hw, hwo = r.h * r.w, r.ho * r.wo
    dw1, dw2 = r.opt("dw1", 1) != 0, r.opt("dw2", 1) != 0
    a.dw(r.cin, r.k, np.zeros(len(hw), bool), hw, dw1)
    a.mid(r.cin * hw, dw1)
    a.act(r.hs, r.cin * hw, dw1)
    a.pw(r.cin, hidden, hw, r.groups)
    a.mid(hidden * hw)
    a.pw(hidden, r.cout, hw, r.groups)
    a.act(r.hs, r.cout * hw)
    a.mid(r.cout * hw, dw2)
    a.dw(r.cout, r.k, r.s2, hwo, dw2)
    a.mid(r.cout * hwo, r.res)


def _v_shufflev2(r: _Rows, a: _VAcc) -> None:
    hw, hwo = r.h * r.w, r.ho * r.wo
    mid = np.where(r.mid != 0, r.mid, r.cout // 2)
    s1 = ~r.s2
    cin = np.where(s1, r.cin // 2, r.cin)
    a.dw(r.cin, r.k, r.s2, hwo, r.s2)
    a.mid(r.cin * hwo, r.s2)
    a.pw(r.cin, mid, hwo, 1, r.s2)
    a.act(r.hs, mid * hwo, r.s2)
    a.pw(cin, mid, hw)
    a.mid(mid * hw)
    a.act(r.hs, mid * hw)
    a.dw(mid, r.k, r.s2, hwo)
    a.mid(mid * hwo)
    a.pw(mid, mid, hwo)
    a.act(r.hs, mid * hwo)
    a.mid(2 * r.cout * hwo)


# analytic (params, macs) of the families priced generically, on arrays (``search_space.blocks``' cost())
def _c_conv(r: _Rows):
    wts = r.cout * (r.cin // r.groups) * r.k * r.k
    return wts + 2 * r.cout, wts * r.ho * r.wo


def _c_maxpool(r: _Rows):
    z = np.zeros(len(r.cin), dtype=np.int64)
    return z, z


def _c_fire(r: _Rows):
    e = r.cout // 2
    hw = r.h * r.w
    ho = _vout(r.h, r.k, np.ones_like(r.k), None)
    wo = _vout(r.w, r.k, np.ones_like(r.k), None)
    w1, w2, w3 = r.mid * r.cin, e * r.mid, e * r.mid * r.k * r.k
    return (w1 + r.mid) + (w2 + e) + (w3 + e), w1 * hw + w2 * hw + w3 * ho * wo


def _c_shufflev1(r: _Rows):
    g1 = np.where(r.opt("gpw1") != 0, 1, r.groups)
    hw, hwo = r.h * r.w, r.ho * r.wo
    w1 = r.mid * (r.cin // g1)
    w2 = r.mid * r.k * r.k
    bo = np.where((r.sh != 1) | (r.sw != 1), r.cout - r.cin, r.cout)
    w3 = bo * (r.mid // r.groups)
    return (w1 + 2 * r.mid) + (w2 + 2 * r.mid) + (w3 + 2 * bo), w1 * hw + w2 * hwo + w3 * hwo


def _c_xception(r: _Rows):
    hw = r.h * r.w
    skip = (r.cin != r.cout) | (r.sh != 1) | (r.sw != 1)
    one = np.ones_like(r.k)
    sho = _vout(r.h, one, r.sh, ["valid"] * len(one))
    swo = _vout(r.w, one, r.sw, ["valid"] * len(one))
    wsk = r.cout * r.cin
    params = np.where(skip, wsk + 2 * r.cout, 0)
    macs = np.where(skip, wsk * sho * swo, 0)
    reps = r.opt("reps", 2)
    ho = _vout(r.h, r.k, one, None)
    wo = _vout(r.w, r.k, one, None)
    for j in range(int(reps.max()) if len(reps) else 0):
        # the j-th separable conv: (in, mid) first, (mid, mid) between, (mid, out) last; reps 1: (in, out)
        cin = np.where(j == 0, r.cin, r.mid)
        cout = np.where(j == reps - 1, r.cout, r.mid)
        on = j < reps
        wd = cin * r.k * r.k
        wp = cout * cin
        params = params + np.where(on, wd, 0) + np.where(on, wp + 2 * cout, 0)
        macs = macs + np.where(on, wd * ho * wo, 0) + np.where(on, wp * hw, 0)
    return params, macs


V_DECOMPOSE = {"mbconv": _v_mbconv, "dwsep": _v_dwsep, "sandglass": _v_sandglass, "shufflev2": _v_shufflev2}
V_COST = {"conv": _c_conv, "maxpool": _c_maxpool, "fire": _c_fire, "shufflev1": _c_shufflev1,
          "xception": _c_xception}


def _bits(r: _Rows) -> np.ndarray:
    bits = np.zeros(len(r.cin), dtype=np.int64)
    for j, b in enumerate((r.se > 0, r.res, r.mid == 0, r.mid == r.cin, r.mid == r.cout, r.cin == r.cout,
                           2 * r.cin == r.cout, r.cin % 2 == 1, r.cout % 2 == 1)):
        bits |= b.astype(np.int64) << j
    return bits


def _agree_first(kind: str, spec, cin: int, h: int, w: int) -> bool:
    sig = Signature(kind, spec, cin, h, w)
    v = _AGREE.get(_structure(spec))
    if v is None:
        a = _Acc()
        DECOMPOSE[kind](spec, h, w, a)
        v = _macs_agree(sig, a)
    return v


def _agree_numeric(kind: str, r: _Rows, in_ch: np.ndarray) -> np.ndarray | None:
    """``_agree_rows`` from numeric rows: a row's structure (type, stride, kernel, groups, options,
    padding and which channel counts coincide, as ``_structure``) as integers, one code per row;
    None when the codes would not fit in 62 bits."""
    R, c = r._R, _RC
    cols = [R[:, c["type"]], r.sh, r.sw, r.k, r.groups, R[:, c["opts"]], R[:, c["padding"]], _bits(r)]
    if len(in_ch) <= 64:  # a few rows: one dict look-up each
        ok = np.empty(len(in_ch), bool)
        for i, key in enumerate(zip(*(x.tolist() for x in cols))):
            ok[i] = _agree_cached(key, kind, r, i, in_ch)
        return ok
    radix = [int(x.max()) + 1 for x in cols]
    if any(x.min() < 0 for x in cols) or np.prod([float(x) for x in radix]) >= 2.0 ** 62:
        return None
    code = np.zeros(len(in_ch), dtype=np.int64)
    for x, q in zip(cols, radix):
        code = code * q + x
    _, first, inv = np.unique(code, return_index=True, return_inverse=True)
    ok = np.empty(len(first), bool)
    for u, i in enumerate(first):
        ok[u] = _agree_cached(tuple(int(x[i]) for x in cols), kind, r, i, in_ch)
    return ok[inv.ravel()]


def _agree_cached(key: tuple, kind: str, r: "_Rows", i: int, in_ch: np.ndarray) -> bool:
    """Row ``i``'s structure agreement, from ``_AGREE_NUM`` by its numeric ``key`` or decided now
    (``_agree_first``) and kept (at most 100,000 keys)."""
    v = _AGREE_NUM.get(key)
    if v is None:
        v = _agree_first(kind, r.specs[i], int(in_ch[i]), int(r.h[i]), int(r.w[i]))
        if len(_AGREE_NUM) < 100_000:
            _AGREE_NUM[key] = v
    return v


def _agree_rows(kind: str, r: _Rows, idx: np.ndarray, in_ch: np.ndarray) -> np.ndarray:
    """``_macs_agree`` per row (decided once per structure, as there)."""
    if r._R is not None:
        ok = _agree_numeric(kind, r, in_ch)
        if ok is not None:
            return ok
        c = _RC
        r._struct = [(t, sh if sh == sw else (sh, sw), k, g, OPTS[o], PADDINGS[p]) for t, sh, sw, k, g, o, p in zip(
            *(r._R[:, c[f]].tolist() for f in ("type", "sh", "sw", "kernel", "groups", "opts", "padding")))]
    ids = _STRUCT_IDS
    st_ids = np.array([ids.get(t) if t in ids else ids.setdefault(t, len(ids)) for t in r._struct], dtype=np.int64)
    codes, first, inv = np.unique(st_ids * 1024 + _bits(r), return_index=True, return_inverse=True)
    ok = np.empty(len(codes), bool)
    for u, i in enumerate(first):
        ok[u] = _agree_first(kind, r.specs[i], int(in_ch[i]), int(r.h[i]), int(r.w[i]))
    return ok[inv.ravel()]


def _v_stem(specs: list, cin: np.ndarray, h: np.ndarray, w: np.ndarray, a: _VAcc) -> np.ndarray:
    """Stem rows (``_stem``); returns the output bytes' element count."""
    g = __import__("operator").attrgetter("out_ch", "kernel")
    cout, k = np.array([g(s) for s in specs], dtype=np.int64).reshape(len(specs), 2).T
    st = [s.stride for s in specs]
    pairs = np.array([(x, x) if type(x) is int else (int(x[0]), int(x[1])) for x in st], dtype=np.int64)
    pad = [getattr(s, "padding", "same") for s in specs]
    ho, wo = _vout(h, k, pairs[:, 0], pad), _vout(w, k, pairs[:, 1], pad)
    hs = np.array([s.act in _HSW for s in specs])
    pool = np.array([bool(s.pool) for s in specs])
    a.dense(cin, cout, k, ho * wo)
    a.act(hs, cout * ho * wo)
    a.mid(cout * ho * wo, pool)
    a.add("ops", 1, pool)
    three, two = np.full(len(k), 3), np.full(len(k), 2)
    ho2 = np.where(pool, _vout(ho, three, two, None), ho)
    wo2 = np.where(pool, _vout(wo, three, two, None), wo)
    return cout * ho2 * wo2


def _v_head(specs: list, cin: np.ndarray, h: np.ndarray, w: np.ndarray, ncls: np.ndarray, a: _VAcc) -> np.ndarray:
    """Head rows (``_head``); returns the output element count."""
    g = __import__("operator").attrgetter("last_ch", "hidden_ch")
    first: dict = {}  # the distinct head objects (a batch has many rows of few heads)
    inv = np.fromiter((first.setdefault(id(s), (len(first), s))[0] for s in specs), np.int64, len(specs))
    heads = [s for _, s in first.values()]
    last, hidden = np.array([g(s) for s in heads], dtype=np.int64).reshape(len(heads), 2).T[:, inv]
    hs = np.array([s.act in _HSW for s in heads])[inv]
    conv = np.array([getattr(s, "classifier", "linear") == "conv" for s in heads])[inv]
    hw = h * w
    has_last = last != 0
    a.pw(cin, last, hw, 1, has_last)
    a.act(hs, last * hw, has_last)
    a.mid(last * hw, has_last)
    ch = np.where(has_last, last, cin)
    a.add("ops", 1)
    a.pw(ch, ncls, hw, 1, conv)
    a.mid(ncls * hw, conv)
    lin = ~conv
    hid = lin & (hidden != 0)
    a.pw(ch, hidden, 1, 1, hid)
    a.act(hs, hidden, hid)
    ch = np.where(hid, hidden, ch)
    a.pw(ch, ncls, 1, 1, lin)
    return ncls


def features_cols(kinds, specs, cin: np.ndarray, h: np.ndarray, w: np.ndarray,
                  ncls: np.ndarray, vals: list | None = None, numeric: np.ndarray | None = None,
                  align: int = ALIGN) -> np.ndarray:
    """``layer_features`` of many layers given as columns (kind, spec, input channels, H, W, classes
    of a head), one numpy pass per block family; a family without an array form goes through
    ``layer_features`` row by row.  ``kinds``: names or a ``Kinds``.  ``vals``: each block spec's
    ``spec_fields``, when the caller has them already; ``numeric``: each block's numeric row
    (``search_space.arch.ROW_FIELDS``; rows of stems and heads are not read), and then ``specs``
    is only indexed for the rare rows that need a spec object (it may build them on demand).  ``align``: the
    target's ``pw_align``."""
    n = len(kinds)
    out = np.zeros((n, N_FEATURES))
    if not n:
        return out
    for kind, idx in as_kinds(kinds).groups().items():
        if numeric is not None and kind not in ("stem", "head"):
            ss = _Take(specs, idx)
        elif hasattr(specs, "objects"):
            ss = specs.objects(idx)
        else:
            ss = [specs[i] for i in idx.tolist()]
        hh, ww, cc = h[idx], w[idx], cin[idx]
        dec, cost = V_DECOMPOSE.get(kind), V_COST.get(kind)
        a = _VAcc(len(idx), align)
        a.add("in_bytes", 4 * cc * hh * ww)
        a.add("one", 1)
        if kind == "stem":
            a.add("out_bytes", 4 * _v_stem(ss, cc, hh, ww, a))
        elif kind == "head":
            a.add("out_bytes", 4 * _v_head(ss, cc, hh, ww, ncls[idx], a))
        elif dec is None and cost is None:
            for i in idx.tolist():
                out[i] = layer_features(Signature(kind, specs[i], int(cin[i]), int(h[i]), int(w[i])), align)
            continue
        else:
            r = _Rows(ss, hh, ww, None if vals is None or numeric is not None else [vals[i] for i in idx.tolist()],
                      None if numeric is None else numeric[idx])
            if dec is not None:
                dec(r, a)
                ok = _agree_rows(kind, r, idx, cc)
                if not ok.all():
                    for j in np.flatnonzero(~ok):  # variants the decomposition does not know: generic
                        a.F[:, j] = layer_features(Signature(kind, ss[j], int(cc[j]), int(hh[j]), int(ww[j])), align)
                        a.F[_IDX["out_bytes"], j] = 0.0
            else:
                params, macs = cost(r)
                a.add("dense_macs", macs)
                a.add("weight_bytes", 4 * params)
                a.add("ops", 3)
            a.add("out_bytes", 4 * r.cout * r.ho * r.wo)
        out[idx] = a.F.T
    return out


def features_many(sigs: list, align: int = ALIGN) -> np.ndarray:
    """``layer_features`` of many signatures (rows), by ``features_cols``."""
    n = len(sigs)
    return features_cols([s.kind for s in sigs], [s.spec for s in sigs],
                         np.fromiter((s.in_ch for s in sigs), np.int64, n), np.fromiter((s.h for s in sigs), np.int64, n),
                         np.fromiter((s.w for s in sigs), np.int64, n),
                         np.fromiter((s.num_classes or 1000 for s in sigs), np.int64, n), align=align)
