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

from typing import Callable

import numpy as np

from search_space.arch import BlockSpec, Head, Signature, Stem, out_hw, stride_hw
from search_space.errors import TargetError

FEATURES = (
    "pw_macs",        # 1x1 convs and fully connected layers
    "dw3_macs",       # depthwise convs, kernel <= 3
    "dw5_macs",       # depthwise convs, kernel 5
    "dw7_macs",       # depthwise convs, kernel >= 7
    "dws2_macs",      # extra term: depthwise MACs of stride-2 depthwise convs
    "dense_macs",     # kxk full (or grouped) convs, k > 1
    "se_macs",        # squeeze-and-excitation FCs
    "dwu_macs",       # extra term: depthwise MACs on channel counts not a multiple of 8
    "pwu_macs",       # extra term: 1x1 / dense MACs with in or out channels not a multiple of 8
    "in_bytes",       # activation bytes read by the layer
    "out_bytes",      # activation bytes written at its output
    "mid_bytes",      # intermediate activation bytes (written + read inside the layer)
    "weight_bytes",   # parameters, fp32
    "hswish_elems",   # elements through h-swish / swish (relu-like ones are ~free)
    "ops",            # conv / linear operators (per-op dispatch overhead)
    "one",            # per-layer constant
)
N_FEATURES = len(FEATURES)
ALIGN = 8
_IDX = {n: i for i, n in enumerate(FEATURES)}
SCALE = np.array([1e-6 if n.endswith("macs") else 1e-6 if n.endswith("bytes") else
                  1e-6 if n.endswith("elems") else 1.0 for n in FEATURES])  # keep numbers O(1)


class _Acc:
    """Accumulates operator costs of one layer."""

    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v = [0.0] * N_FEATURES

    def add(self, name: str, value: float) -> None:
        self.v[_IDX[name]] += value

    def act(self, act: str, elems: float) -> None:
        if act in ("hswish", "swish"):
            self.add("hswish_elems", elems)

    def pw(self, cin: int, cout: int, hw: int, groups: int = 1) -> None:
        self.add("pw_macs", cin * cout * hw / groups)
        if cin % ALIGN or cout % ALIGN:  # optimised kernels (e.g. ONNX Runtime's NCHWc) need aligned channels
            self.add("pwu_macs", cin * cout * hw / groups)
        self.add("weight_bytes", 4 * (cin * cout / groups + 2 * cout))
        self.add("ops", 1)

    def dw(self, ch: int, k: int, stride, hw_out: int) -> None:
        macs = ch * k * k * hw_out
        self.add("dw3_macs" if k <= 3 else "dw5_macs" if k <= 5 else "dw7_macs", macs)
        if max(stride_hw(stride)) > 1:
            self.add("dws2_macs", macs)
        if ch % ALIGN:
            self.add("dwu_macs", macs)
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


def layer_features(sig: Signature) -> np.ndarray:
    """The feature vector (unscaled) of one signature."""
    a = _Acc()
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
                a = _Acc()
                a.add("in_bytes", 4 * sig.in_ch * h * w)
                a.add("one", 1)
                _generic(sig.spec, h, w, a)
        else:
            _generic(sig.spec, h, w, a)
        ho, wo = sig.out_hw
        a.add("out_bytes", 4 * sig.spec.out_ch * ho * wo)
    return np.array(a.v)


_MAC_NAMES = [i for i, n in enumerate(FEATURES) if n.endswith("macs") and n not in ("dws2_macs", "dwu_macs", "pwu_macs")]


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


def feature_matrix(sigs) -> np.ndarray:
    return np.stack([layer_features(s) for s in sigs]) if sigs else np.zeros((0, N_FEATURES))


def total_macs(sig: Signature) -> float:
    v = layer_features(sig)
    return float(sum(v[i] for i in _MAC_NAMES))  # conv+linear
