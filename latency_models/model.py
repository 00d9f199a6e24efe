"""``LatencyModel``: a lookup table of measured layers + a learned predictor + network overhead.

A target file (``latency_models/targets/<name>.json``) holds everything a model needs::

    {"format": "edgenas-latency-target", "version": 1, "target": "pixel-cpu",
     "meta": {device, runtime, threads, resolutions, date, repeats, made_by, made_from, notes...},
     "table": {"any": {key: {ms, spread, n}}, "224": {...}},      # measured layers
     "predictor": {...},                                         # latency_models.predictor
     "error": {...}}                                             # held-out error, how measured

Prediction of a network: each layer (``search_space.arch.signatures``) costs its table entry if
the table has its key (at the network's input resolution first), else the regressor's estimate;
in a network a layer costs ``scale * that + features . layer_coefs`` (``scale`` per layer kind where the
target has ``kind_scale``; the in-network term, fitted on whole-network measurements where they
show one) and the network the sum plus ``overhead_ms``.  A target with a network term
(``predictor.NetworkTerm``, fitted on whole networks measured end-to-end) prices the network from
per-layer rows instead (the layer costs by kind, the layer features), summed over its layers.

Per-layer costs are cached by (resolution, classes) and the layer's code: one int64 made of its
spec's intern id (``search_space.arch``: equal specs share one, assigned when the spec is created)
and its input H x W (a head's also its input channels).  A batch's codes come from numpy (the
blocks' ids read in one C-level pass, kernels and strides from the intern table's numeric rows, the
H x W of all archs stepped one block position at a time), so a fresh arch costs no Python step per
layer; a search that meets the same layers again pays a dict lookup per layer.  The distinct codes
new to the model are priced together (features from the numeric rows, ``features.features_cols``;
one regressor call; the residual trees as tables over feature bins), so ``predict`` and
``predict_many`` are one path and agree value for value.  Archs whose specs have no id (past the
intern table's limit) take the older per-layer walk (``_lookup_walk``), to the same floats.
"""
from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from array import array
from itertools import repeat
from operator import attrgetter

from latency_models.features import _SPEC_COL, Kinds, as_kinds, features_cols, pw_align_of, spec_fields
from latency_models.predictor import Predictor
from latency_models.table import LatencyTable
from search_space.arch import BLOCKS, ROW_FIELDS, TYPE_NAMES, Arch, BlockSpec, Signature, signatures
from search_space.errors import TargetError

FORMAT = "edgenas-latency-target"
_TYPE, _IN_CH, _KERNEL, _STRIDE, _PADDING = (_SPEC_COL[f] for f in ("type", "in_ch", "kernel", "stride", "padding"))
VERSION = 1

# A layer's code (one int64; ``LatencyModel._codes``): its spec's intern id (``search_space.arch``,
# ``_iid``) and input H x W, and for a head its input channels; cached costs are keyed by it.
_HWB = 14                     # bits of H and of W
_HWM = (1 << _HWB) - 1
_STEM = 1 << 61
_HEAD = 2 << 61
_IDB = 33                     # bits of a block's or stem's id (bits 28..60)
_HIDB, _HCB = 17, 16          # a head's id (bits 44..60) and input channels (bits 28..43)
_IID = attrgetter("_iid")
_IDS = attrgetter("_ids")
_RT, _RIN, _ROUT, _RK, _RSH, _RSW, _RPAD = (ROW_FIELDS.index(f) for f in
                                          ("type", "in_ch", "out_ch", "kernel", "sh", "sw", "padding"))
_BR = {"buf": np.zeros((4096, len(ROW_FIELDS)), np.int64), "n": 0}  # numpy copy of search_space.arch.BLOCKS.rows


def block_rows() -> np.ndarray:
    """``search_space.arch.BLOCKS.rows`` as an (ids x ROW_FIELDS) int64 array: the rows added
    since the last call are copied into a buffer that grows by doubling."""
    W = len(ROW_FIELDS)
    buf, have = _BR["buf"], _BR["n"]
    n = len(BLOCKS.rows) // W
    if n > have:
        if n > len(buf):
            big = np.zeros((max(n, 2 * len(buf)), W), np.int64)
            big[:have] = buf[:have]
            buf = _BR["buf"] = big
        buf[have:n] = np.frombuffer(BLOCKS.rows[have * W:n * W], dtype=np.int64).reshape(-1, W)
        _BR["n"] = n
    return buf[:n]


def _conv_out(size: np.ndarray, k: np.ndarray, s: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """``search_space.arch.conv_out`` on arrays, padding as its index in ``PADDINGS``."""
    same = (size + 2 * (k // 2) - k) // s + 1
    valid = (size - k) // s + 1
    ceil = -(-(size - k) // s) + 1
    ceil = np.where((ceil - 1) * s >= size, ceil - 1, ceil)
    return np.where(pad == 0, same, np.where(pad == 1, valid, ceil))


def _pairwise(V: np.ndarray, r: np.ndarray) -> np.ndarray:
    """numpy's pairwise sum (``pairwise_sum_DOUBLE``, n <= 128 terms) of the rows ``V[r[i]]``
    for each i: under 8 terms one by one from 0; else 8 running sums over blocks of 8, combined
    as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the remaining terms one by one."""
    k, n = r.shape
    r = np.ascontiguousarray(r.T)
    take = V.take
    if n < 8:
        res = np.zeros((k, V.shape[1]))
        for i in range(n):
            res += take(r[i], axis=0)
        return res
    acc = [take(r[j], axis=0) for j in range(8)]
    m = n - n % 8
    for i in range(8, m, 8):
        for j in range(8):
            acc[j] += take(r[i + j], axis=0)
    res = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for i in range(m, n):
        res += take(r[i], axis=0)
    return res


class _Offset:
    """``specs[a + i]`` for i (a batch's rows priced in steps)."""

    def __init__(self, specs, a: int) -> None:
        self.specs, self.a = specs, a

    def __getitem__(self, i: int):
        return self.specs[self.a + i]

    def objects(self, idx: np.ndarray) -> list:
        return self.specs.objects(idx + self.a)


class _LayerSpecs:
    """The spec of each new layer of a batch, built on demand (blocks from their intern ids)."""

    def __init__(self, bids: np.ndarray, others: list) -> None:
        self.bids, self.others = bids, others

    def __getitem__(self, i: int):
        if i < len(self.bids):
            return BlockSpec(*BLOCKS.values[int(self.bids[i])])
        return self.others[i - len(self.bids)]

    def objects(self, idx: np.ndarray) -> list:
        """``[self[i] for i in idx]``."""
        nb, others = len(self.bids), self.others
        if len(idx) and idx.min() >= nb:
            return [others[i] for i in (idx - nb).tolist()]
        return [self[i] for i in idx.tolist()]


class LatencyModel:
    MAX_CACHE = 2_000_000  # cached layer costs before the cache starts over

    def __init__(self, name: str, table: LatencyTable, predictor: Predictor | None,
                 meta: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
                 path: str | None = None) -> None:
        self.name = name
        self.table = table
        self.predictor = predictor
        self.meta = meta or {}
        self.error = error or {}
        self.path = path
        self.scale = predictor.scale if predictor else 1.0
        self.overhead_ms = predictor.overhead_ms if predictor else 0.0
        self.calibration = self._calibration_scale(self.meta, path)   # latency_models.calibrate (1.0: none)
        self.pw_align = pw_align_of(self.meta, f"{path or name}: meta")   # the layer features' 1x1 channel flag
        self._tblocks: list | None = []  # (table section, block layer code, ms); None: match blocks by key string
        self._shapes = self._table_shapes()
        self._tcodes: dict = {}          # table resolution -> (sorted block codes, their ms)
        self._stem_out: dict = {}        # (stem id, H, W) -> the stem's output (H, W)
        # the network-level term (where fitted): per cached layer a row of its inputs
        self.term = predictor.network_term if predictor else None
        self._reset_cache()

    @staticmethod
    def _calibration_scale(meta: dict, where) -> float:
        """``meta.calibration.scale``: the factor ``latency_models.calibrate`` measured for this machine now
        (every prediction is multiplied by it); 1.0 when the file has none."""
        cal = meta.get("calibration") if isinstance(meta, dict) else None
        if cal is None:
            return 1.0
        v = cal.get("scale") if isinstance(cal, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.2 <= v <= 5:   # (NaN fails the range)
            raise TargetError(f"{where}: meta.calibration.scale: got {v!r}; allowed: a number in [0.2, 5] "
                              "(written by python -m latency_models.calibrate)")
        return float(v)

    def _table_shapes(self) -> set | None:
        """``_shape_key`` of every table entry: a layer whose shape key is not there cannot be in
        the table, and skips building its key string (most new layers of a large space).  None (no
        filter) if a key does not parse."""
        from search_space.arch import signature_from_key
        from search_space.errors import EdgenasError

        out = set()
        for r, k, e in self.table.items():
            try:
                s = signature_from_key(k)
            except EdgenasError:
                self._tblocks = None
                return None
            out.add(self._shape_key(s.kind, s.spec, s.in_ch, s.h, s.w))
            if s.kind in ("stem", "head") or self._tblocks is None:
                continue
            if s.key != k or s.in_ch != s.spec.in_ch:
                continue  # no layer's key is this one: no layer can meet this entry
            if s.spec._iid < 0 or not (0 <= s.h <= _HWM and 0 <= s.w <= _HWM):
                self._tblocks = None  # cannot be coded: blocks are matched by their key strings
                continue
            self._tblocks.append((r, s.spec._iid << 28 | s.h << _HWB | s.w, e.ms))
        return out

    def _table_codes(self, table_res) -> tuple[np.ndarray, np.ndarray]:
        """(sorted block layer codes, ms) of the table entries a layer at ``table_res`` meets (its
        resolution's section first, as ``LatencyTable.get``)."""
        got = self._tcodes.get(table_res)
        if got is None:
            d = {c: ms for r, c, ms in self._tblocks if r is None}
            if table_res is not None:
                d.update({c: ms for r, c, ms in self._tblocks if r == table_res})
            keys = np.array(sorted(d), dtype=np.int64)
            got = self._tcodes[table_res] = (keys, np.array([d[k] for k in keys.tolist()], dtype=float))
        return got

    @staticmethod
    def _shape_key(kind: str, spec, cin: int, h: int, w: int) -> tuple:
        """What a table lookup must match before its key string is built: kind, input shape and
        the layer's output width and kernel."""
        return (kind, cin, h, w, getattr(spec, "out_ch", 0) or getattr(spec, "last_ch", 0), getattr(spec, "kernel", 0))

    def __repr__(self) -> str:
        return f"LatencyModel({self.name!r}, {len(self.table)} table entries)"

    _PROCESS_LOCAL = ("_cache", "_wcache", "_ids", "_alive", "_n", "_cost", "_V", "_tblocks", "_shapes", "_tcodes",
                      "_stem_out")

    def __getstate__(self) -> dict:
        """Pickled without its caches: layer codes hold this process's intern ids."""
        return {k: v for k, v in self.__dict__.items() if k not in self._PROCESS_LOCAL}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._tblocks = []
        self._shapes = self._table_shapes()
        self._tcodes, self._stem_out = {}, {}
        self._reset_cache()

    # -- per-layer costs ------------------------------------------------------------------------
    @staticmethod
    def _resolution(res) -> tuple:
        """(input height, input width, the cache's resolution key) of an int or (h, w) resolution."""
        if isinstance(res, int):
            return res, res, res
        h0, w0 = res
        return h0, w0, tuple(res)

    def _reset_cache(self) -> None:
        self._cache: dict[tuple, dict] = {}  # (res, classes) -> {layer code: row}
        self._wcache: dict[tuple, list] = {}  # walk: (res, spec or its field values, h, w[, in_ch, classes]) -> [row, out_h, out_w]
        self._ids: dict[tuple, list] = {}    # (id(BlockSpec), res, h, w) -> the same [row, out_h, out_w]
        self._alive: list = []               # the BlockSpecs in _ids: their ids cannot be reused meanwhile
        self._n = 0                          # priced layers: rows of _cost (and _V)
        self._cost = np.zeros(1024)
        self._V = np.zeros((1024, self.term.width)) if self.term is not None else None

    SMALL = 8  # batches up to this many archs find their layer codes in Python (no numpy overhead)

    def _lookup(self, archs: Sequence[Arch], res, num_classes: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(rows of every layer of every arch, in order; segment starts per arch).  Each layer has a
        code (an int64: its spec's intern id, its input H x W; ``_codes_np`` for a batch with numpy,
        ``_codes_walk`` for a few archs); the codes not cached yet are priced together
        (``_price_codes``: each distinct code once) and cached.  Archs that cannot be coded (a spec
        past the intern limit, sizes past 14 bits) take the per-layer walk (``_lookup_walk``)."""
        if self._n > self.MAX_CACHE:  # bound memory in long searches
            self._reset_cache()
        h0, w0, rkey = self._resolution(res)
        got = None
        if isinstance(h0, np.integer) and isinstance(w0, np.integer):
            h0, w0 = int(h0), int(w0)
        if type(h0) is int and type(w0) is int and 0 <= h0 <= _HWM and 0 <= w0 <= _HWM:
            got = (self._codes_walk if len(archs) <= self.SMALL else self._codes_np)(archs, h0, w0)
        if got is None:
            return self._lookup_walk(archs, res, num_classes)
        codes, starts, objs = got
        ck = (rkey, num_classes)
        cache = self._cache.get(ck)
        if cache:
            rows = np.fromiter(map(cache.get, codes.tolist(), repeat(-1)), np.int64, len(codes))
            miss = rows < 0
            if not miss.any():
                return rows, starts
            new, inv = np.unique(codes[miss], return_inverse=True)
            rows[miss] = self._n + inv.ravel()
        else:
            new, inv = np.unique(codes, return_inverse=True)
            rows = self._n + inv.ravel()
        base = self._price_codes(new, rkey, num_classes, objs, codes, starts)
        self._cache.setdefault(ck, {}).update(zip(new.tolist(), range(base, base + len(new))))
        return rows, starts

    def _codes_walk(self, archs: Sequence[Arch], h0: int, w0: int):
        """(layer codes, starts per arch, (stems, heads) by id) of a few archs, in Python; None if
        one cannot be coded."""
        codes: list[int] = []
        starts = np.empty(len(archs), dtype=np.int64)
        stems: dict = {}
        heads: dict = {}
        sout = self._stem_out
        for n, a in enumerate(archs):
            starts[n] = len(codes)
            st = a.stem
            sid = st._iid
            if sid < 0:
                return None
            stems.setdefault(sid, st)
            codes.append(_STEM | sid << 28 | h0 << _HWB | w0)
            hw = sout.get((sid, h0, w0))
            if hw is None:
                hw = sout[(sid, h0, w0)] = st.out_hw(h0, w0)
            h, w = hw
            for b in a.blocks:
                i = b._iid
                if i < 0 or h < 0 or w < 0:
                    return None
                codes.append(i << 28 | h << _HWB | w)
                h, w = b.out_hw(h, w)
            hd = a.head
            hid, cin = hd._iid, a.blocks[-1].out_ch
            if not (0 <= hid < 1 << _HIDB and cin < 1 << _HCB and h >= 0 and w >= 0):
                return None
            heads.setdefault(hid, hd)
            codes.append(_HEAD | hid << 44 | cin << 28 | h << _HWB | w)
        return np.array(codes, dtype=np.int64), starts, (stems, heads)

    def _codes_np(self, archs: Sequence[Arch], h0: int, w0: int):
        """``_codes_walk`` with numpy: the blocks' intern ids read in one C-level pass, their kernel,
        strides and padding from the intern table's numeric rows, the H x W of every layer stepped
        through all archs at once, one block position at a time."""
        A = len(archs)
        try:
            ids = list(map(_IDS, archs))
        except AttributeError:  # an Arch made without __post_init__
            ids = [array("q", [a.stem._iid, *map(_IID, a.blocks), a.head._iid]).tobytes() for a in archs]
        n_layers = np.fromiter(map(len, ids), np.int64, A) >> 3
        flat = np.frombuffer(b"".join(ids), np.int64)
        L = len(flat)
        starts = np.cumsum(n_layers) - n_layers
        lens = n_layers - 2
        hpos = starts + lens + 1
        sid, hid = flat[starts], flat[hpos]
        mask = np.ones(L, bool)
        mask[starts] = False
        mask[hpos] = False
        bid = flat[mask]
        nb = len(bid)
        if not nb or flat.min() < 0 or hid.max() >= 1 << _HIDB:
            return None
        R = block_rows()
        # stems: each distinct one's output size once
        us, first = np.unique(sid, return_index=True)
        stems = {int(i): archs[j].stem for i, j in zip(us.tolist(), first.tolist())}
        sout = self._stem_out
        souts = []
        for i, st in stems.items():
            hw = sout.get((i, h0, w0))
            if hw is None:
                hw = sout[(i, h0, w0)] = st.out_hw(h0, w0)
            souts.append(hw)
        souts = np.array(souts, dtype=np.int64).reshape(-1, 2)
        sj = np.searchsorted(us, sid)
        h, w = souts[sj, 0], souts[sj, 1]
        # blocks: (depth x archs) layout, one step per block position; a position past an arch's
        # last block is a 1x1 stride-1 'same' window (the identity)
        D = int(lens.max())
        bstart = np.cumsum(lens) - lens
        validT = np.arange(D)[:, None] < lens[None, :]
        bT = bid[np.where(validT, bstart[None, :] + np.arange(D)[:, None], 0)]
        K = np.where(validT, R[:, _RK].take(bT), 1)
        SH = np.where(validT, R[:, _RSH].take(bT), 1)
        SW = np.where(validT, R[:, _RSW].take(bT), 1)
        PAD = np.where(validT, R[:, _RPAD].take(bT), 0)
        shift = int(SH.min()) >= 1 and int(SW.min()) >= 1 and int(SH.max()) <= 2 and int(SW.max()) <= 2
        Dk = -(K & 1)  # 2 * (k // 2) - k
        HinT = np.empty((D, A), np.int64)
        anypad = bool(PAD.any())
        square = np.array_equal(h, w) and np.array_equal(SH, SW)  # then W follows H everywhere
        WinT = HinT if square else np.empty((D, A), np.int64)
        S1H, S1W = SH - 1, SW - 1
        for j in range(D):
            HinT[j] = h
            if not square:
                WinT[j] = w
            if shift:  # strides 1 and 2: floor division by shifting
                hn = ((h + Dk[j]) >> S1H[j]) + 1
                wn = hn if square else ((w + Dk[j]) >> S1W[j]) + 1
            else:  # padding 'same'
                hn = (h + Dk[j]) // SH[j] + 1
                wn = hn if square else (w + Dk[j]) // SW[j] + 1
            if anypad:
                odd = np.flatnonzero(PAD[j])
                if len(odd):
                    p, ko = PAD[j, odd], K[j, odd]
                    hn[odd] = _conv_out(h[odd], ko, SH[j, odd], p)
                    if not square:
                        wn[odd] = _conv_out(w[odd], ko, SW[j, odd], p)
            h, w = hn, wn
        valid = validT.T
        bh = HinT.T[valid]
        bw = bh if square else WinT.T[valid]
        cin = R[:, _ROUT].take(bid[bstart + lens - 1])
        if bh.min() < 0 or bw.min() < 0 or h.min() < 0 or w.min() < 0 or cin.max() >= 1 << _HCB:
            return None
        codes = np.empty(L, np.int64)
        codes[starts] = _STEM | sid << 28 | h0 << _HWB | w0
        codes[hpos] = _HEAD | hid << 44 | cin << 28 | h << _HWB | w
        codes[mask] = bid << 28 | bh << _HWB | bw
        uh, hfirst = np.unique(hid, return_index=True)
        heads = {int(i): archs[j].head for i, j in zip(uh.tolist(), hfirst.tolist())}
        return codes, starts, (stems, heads)

    @staticmethod
    def _mix(kind, cin, h, w, out, k) -> np.ndarray:
        """One int64 per (kind code, input channels, H, W, output width, kernel): equal tuples give
        equal codes (unequal ones rarely do: a hit is checked by the layer's key string)."""
        c = np.asarray(kind, np.int64)
        for x, m in ((cin, 65537), (h, 16411), (w, 16411), (out, 65537), (k, 257)):
            c = c * m + np.asarray(x, np.int64)
        return c

    def _shape_hits(self, others: list, cin: np.ndarray, h: np.ndarray, w: np.ndarray, nst: int) -> np.ndarray:
        """For stem and head rows (``others``: stems first): whether their ``_shape_key`` may be in
        the table (a superset: the caller looks the key string up)."""
        if getattr(self, "_shape_mix", None) is None:
            t = [x for x in self._shapes if x[0] in ("stem", "head")]
            self._shape_mix = np.sort(self._mix([1 if x[0] == "stem" else 2 for x in t], *zip(*[x[1:] for x in t]))) \
                if t else np.zeros(0, np.int64)
        if not len(self._shape_mix):
            return np.zeros(len(others), bool)
        objs: dict = {}
        ids = np.fromiter((objs.setdefault(id(o), len(objs)) for o in others), np.int64, len(others))
        firsts = {}
        for o in others:
            firsts.setdefault(id(o), o)
        attrs = np.array([self._shape_key("", o, 0, 0, 0)[4:] for o in firsts.values()], np.int64).reshape(-1, 2)
        kind = np.where(np.arange(len(others)) < nst, 1, 2)
        c = self._mix(kind, cin, h, w, attrs[ids, 0], attrs[ids, 1])
        at = np.minimum(np.searchsorted(self._shape_mix, c), len(self._shape_mix) - 1)
        return self._shape_mix[at] == c

    def _where_code(self, code: int, codes: np.ndarray, starts: np.ndarray) -> str:
        """Where the first layer with ``code`` sits in its arch (for error messages)."""
        tag = code >> 61
        if tag == 1:
            return "stem"
        if tag == 2:
            return "head"
        i = int(np.flatnonzero(codes == code)[0])
        n = int(np.searchsorted(starts, i, side="right")) - 1
        return f"arch.blocks[{i - int(starts[n]) - 1}]"

    def _price_codes(self, u: np.ndarray, rkey, num_classes: int, objs: tuple, codes: np.ndarray,
                     starts: np.ndarray) -> int:
        """Price the layers of the distinct codes ``u`` (sorted: blocks, then stems, then heads) as
        ``_price`` does: table entries first (blocks by code, ``_table_codes``), one vectorized
        regressor call for the rest; append them to the cost rows; returns the first new row."""
        n = len(u)
        tag = u >> 61
        nbk = int(np.searchsorted(tag, 1))
        nst = int(np.searchsorted(tag, 2)) - nbk
        bid = u[:nbk] >> 28
        h, w = (u >> _HWB) & _HWM, u & _HWM
        stems, heads = objs
        others = [stems[i] for i in ((u[nbk:nbk + nst] >> 28) & ((1 << _IDB) - 1)).tolist()]
        others += [heads[i] for i in ((u[nbk + nst:] >> 44) & ((1 << _HIDB) - 1)).tolist()]
        R = np.zeros((n, len(ROW_FIELDS)), np.int64)
        R[:nbk] = block_rows()[bid]
        names = list(TYPE_NAMES) + ["stem", "head"]
        kc = R[:, _RT].copy()
        kc[nbk:nbk + nst] = len(names) - 2
        kc[nbk + nst:] = len(names) - 1
        kinds = Kinds(names, kc)
        cin = R[:, _RIN].copy()
        cin[nbk:nbk + nst] = [st.in_ch for st in others[:nst]]
        cin[nbk + nst:] = (u[nbk + nst:] >> 28) & ((1 << _HCB) - 1)
        specs = _LayerSpecs(bid, others)
        table_res = rkey if isinstance(rkey, int) else (rkey[0] if rkey[0] == rkey[1] else None)
        base = np.zeros(n)
        hit = np.zeros(n, bool)
        slow = range(nbk, n)  # stems and heads: by key string
        if self._tblocks is None:
            slow = range(n)
        elif nbk and self._tblocks:
            keys, ms = self._table_codes(table_res)
            if len(keys):
                at = np.minimum(np.searchsorted(keys, u[:nbk]), len(keys) - 1)
                hb = keys[at] == u[:nbk]
                hit[:nbk] = hb
                base[:nbk][hb] = ms[at[hb]]
        shapes = self._shapes
        if shapes is not None and self._tblocks is not None and n > nbk:  # stems and heads: shape filter first
            slow = nbk + np.flatnonzero(self._shape_hits(others, cin[nbk:], h[nbk:], w[nbk:], nst))
        for q in slow:
            q = int(q)
            kind = names[kc[q]]
            spec = specs[q]
            cq, hq, wq = int(cin[q]), int(h[q]), int(w[q])
            if shapes is None or self._shape_key(kind, spec, cq, hq, wq) in shapes:
                entry = self.table.get(Signature(kind, spec, cq, hq, wq, num_classes if kind == "head" else 0).key,
                                       table_res)
                if entry is not None:
                    hit[q] = True
                    base[q] = entry.ms
        miss = np.flatnonzero(~hit)
        p = self.predictor

        def sig(q: int) -> Signature:
            kind = names[kc[q]]
            return Signature(kind, specs[q], int(cin[q]), int(h[q]), int(w[q]), num_classes if kind == "head" else 0)

        if len(miss):
            if p is None:
                q = int(miss[0])
                raise TargetError(f"target {self.name}: no table entry for {sig(q).key} "
                                  f"({self._where_code(int(u[q]), codes, starts)}) and no predictor in the target file")
            bad = [j for j, k in enumerate(names) if not p.can_price(k)]
            if bad:
                wrong = miss[np.isin(kc[miss], bad)]
                if len(wrong):
                    q = int(wrong[0])
                    raise TargetError(f"target {self.name}: cannot price block type {names[kc[q]]!r} at "
                                      f"{self._where_code(int(u[q]), codes, starts)} ({sig(q).key}): no table entry "
                                      f"and no regressor; regressors for: {', '.join(p.kinds())}")
        ncls = np.full(n, num_classes, np.int64)
        return self._append(kinds, base, miss, lambda sl: features_cols(
            kinds[sl], _Offset(specs, sl.start), cin[sl], h[sl], w[sl], ncls[sl], numeric=R[sl],
            align=self.pw_align), self.CHUNK)

    CHUNK = 65536  # new layers priced per step: its arrays stay small enough to be reused, not mapped afresh

    def _append(self, kinds, base: np.ndarray, miss, features, chunk: int | None = None) -> int:
        """Cost rows of new layers (table ms in ``base``; the rows ``miss`` priced by the
        regressor on ``features(rows)``, ``rows`` a slice), appended to ``_cost`` (and ``_V``),
        ``chunk`` rows at a time (every row's cost is computed on its own: the same floats);
        returns the first row."""
        n = len(base)
        p = self.predictor
        term = self.term
        need_x = len(miss) or term is not None or (p is not None and p.net_coef.any())
        ks = p.kind_scale if p is not None else None
        b0 = self._n
        if b0 + n > len(self._cost):
            size = max(2 * len(self._cost), b0 + n)
            self._cost = np.concatenate([self._cost, np.zeros(size - len(self._cost))])
            if term is not None:
                self._V = np.vstack([self._V, np.zeros((size - len(self._V), term.width))])
        is_miss = np.zeros(n, bool)
        is_miss[miss] = True
        step = chunk or max(n, 1)
        for a in range(0, n, step):
            sl = slice(a, min(n, a + step))
            k = kinds[sl]
            extra = 0.0
            X = None
            if need_x:
                X = features(sl)
                m = np.flatnonzero(is_miss[sl])
                if len(m) == len(k):
                    base[sl] = p.predict_rows(k, X)
                elif len(m):
                    base[a + m] = p.predict_rows(k[m], X[m])
                if p is not None:
                    extra = p.in_network(k, X)
            scale = k.lookup(ks, self.scale).astype(float) if ks else self.scale
            cost = scale * base[sl] + extra
            self._cost[b0 + sl.start:b0 + sl.stop] = cost
            if term is not None:
                term.layer_vectors(k, cost, X, out=self._V[b0 + sl.start:b0 + sl.stop])
        self._n = b0 + n
        return b0

    def _lookup_walk(self, archs: Sequence[Arch], res, num_classes: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(rows of every layer of every arch, in order; segment starts per arch): one walk over
        the layers; the layers not yet cached are priced together (``_price``) and cached.  A
        block's cache key holds its field values (``spec_fields``, one C-level call: a frozen dataclass hashes its
        fields in Python on every lookup); the same BlockSpec object again costs an int-keyed one.
        A cache value is a list [row, out_h, out_w]: a layer met first in this batch gets a
        provisional negative row, set in place once priced (no second hashing of its key)."""
        if self._n > self.MAX_CACHE or len(self._ids) > self.MAX_CACHE:  # bound memory in long searches
            self._reset_cache()
        h0, w0, rkey = self._resolution(res)
        cache, idmap = self._wcache, self._ids
        setdefault = cache.setdefault
        new: list[tuple] = []    # (cache key, kind, spec, in_ch, h, w, stem/head/its arch, value) not yet priced
        again: list[tuple] = []  # (id key, spec, value) of other BlockSpec objects met for those
        flat: list[int] = []
        starts = np.empty(len(archs), dtype=np.int64)
        try:
            for n, a in enumerate(archs):
                starts[n] = len(flat)
                st = a.stem
                ck = (rkey, st, h0, w0)
                v = cache.get(ck)
                if v is None:
                    v = cache[ck] = [-1 - len(new), *st.out_hw(h0, w0)]
                    new.append((ck, "stem", st, st.in_ch, h0, w0, "stem", v))
                i, h, w = v
                flat.append(i)
                for b in a.blocks:
                    ik = (id(b), rkey, h, w)
                    v = idmap.get(ik)
                    if v is None:
                        vals = spec_fields(b)
                        ck = (rkey, vals, h, w)
                        pend = [-1 - len(new), h, w]
                        v = setdefault(ck, pend)  # one hashing of the key, new or not
                        if v is pend:
                            new.append((ck, vals[_TYPE], b, vals[_IN_CH], h, w, a, v))  # first: popped on error
                            k, s = vals[_KERNEL], vals[_STRIDE]
                            if type(s) is int and vals[_PADDING] == "same":
                                d = 2 * (k // 2) - k
                                v[1] = (h + d) // s + 1
                                v[2] = (w + d) // s + 1
                            else:
                                v[1], v[2] = b.out_hw(h, w)
                        else:
                            again.append((ik, b, v))
                    i, h, w = v
                    flat.append(i)
                ck = (rkey, a.head, a.out_ch, h, w, num_classes)
                v = cache.get(ck)
                if v is None:
                    v = cache[ck] = [-1 - len(new), 1, 1]
                    new.append((ck, "head", a.head, a.out_ch, h, w, "head", v))
                flat.append(v[0])
            base = self._price(new, rkey, num_classes) if new else 0
        except BaseException:
            for t in new:  # nothing half-priced stays behind
                cache.pop(t[0], None)
            raise
        rows = np.array(flat, dtype=np.int64)
        if new:
            neg = rows < 0
            rows[neg] = base - 1 - rows[neg]
            alive = self._alive
            for q, t in enumerate(new):
                t[7][0] = base + q
                if type(t[6]) is not str:  # a block: known by its object's id from now on
                    idmap[(id(t[2]), rkey, t[4], t[5])] = t[7]
                    alive.append(t[2])
        for ik, b, v in again:
            if ik not in idmap:
                idmap[ik] = v
                self._alive.append(b)
        return rows, starts

    @staticmethod
    def _vals(new: list[tuple]) -> list:
        """The blocks' field values (``features.spec_fields``) from their cache keys."""
        return [t[0][1] for t in new]

    @staticmethod
    def _where(t: tuple) -> str:
        return t[6] if isinstance(t[6], str) else f"arch.blocks[{t[6].blocks.index(t[2])}]"

    def _price(self, new: list[tuple], rkey, num_classes: int) -> int:
        """Price new layers (table lookups first, then one vectorized regressor call for the rest),
        append them to the cost rows; returns the first new row."""
        n = len(new)
        kinds = [t[1] for t in new]
        table_res = rkey if isinstance(rkey, int) else (rkey[0] if rkey[0] == rkey[1] else None)
        base = np.zeros(n)
        miss = []
        shapes = self._shapes
        for q, (_, kind, spec, cin, h, w, _, _) in enumerate(new):
            entry = None
            if shapes is None or self._shape_key(kind, spec, cin, h, w) in shapes:
                sig = Signature(kind, spec, cin, h, w, num_classes if kind == "head" else 0)
                entry = self.table.get(sig.key, table_res)
            if entry is None:
                miss.append(q)
            else:
                base[q] = entry.ms
        p = self.predictor
        if miss:
            t = new[miss[0]]
            where = self._where(t)
            if p is None:
                sig = Signature(t[1], t[2], t[3], t[4], t[5], num_classes if t[1] == "head" else 0)
                raise TargetError(f"target {self.name}: no table entry for {sig.key} ({where}) "
                                  "and no predictor in the target file")
            cannot = {k for k in {kinds[q] for q in miss} if not p.can_price(k)}
            for q in (miss if cannot else ()):
                if kinds[q] in cannot:
                    t = new[q]
                    where = self._where(t)
                    sig = Signature(t[1], t[2], t[3], t[4], t[5], num_classes if t[1] == "head" else 0)
                    raise TargetError(f"target {self.name}: cannot price block type {sig.kind!r} at {where} "
                                      f"({sig.key}): no table entry and no regressor; regressors for: "
                                      f"{', '.join(p.kinds())}")
        return self._append(as_kinds(kinds), base, miss, lambda sl: features_cols(
            kinds, [t[2] for t in new], np.fromiter((t[3] for t in new), np.int64, n),
            np.fromiter((t[4] for t in new), np.int64, n), np.fromiter((t[5] for t in new), np.int64, n),
            np.full(n, num_classes, np.int64), vals=self._vals(new), align=self.pw_align))  # one step: sl is every row

    # -- public API -------------------------------------------------------------------------------
    def _networks(self, archs: Sequence[Arch], resolution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, starts, network ms) of the archs.  Python's cyclic garbage collector is paused
        meanwhile: the walk allocates a few small tuples per layer (no cycles among them), and the
        collections they would trigger took a third of the time of pricing fresh archs."""
        was = gc.isenabled()
        gc.disable()
        try:
            rows, starts = self._lookup(archs, resolution)
        finally:
            if was:
                gc.enable()
        if self.term is not None:
            ms = self.term.predict(self._layer_sums(rows, starts))
        else:
            ms = np.add.reduceat(self._cost[rows], starts)
        if self.calibration != 1.0:
            return rows, starts, (ms + self.overhead_ms) * self.calibration
        return rows, starts, ms + self.overhead_ms

    def _layer_sums(self, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Per network the sum of its layers' rows of ``_V``: the floats of
        ``np.add.reduceat(self._V[rows], starts, axis=0)`` (other orders of adding round
        differently, and the network term's trees can tell), computed for all networks of one
        length at once.  numpy adds a segment's first row to the pairwise sum of the others
        (``_pairwise``); segments longer than 129 rows go to reduceat itself."""
        V = self._V
        A = len(starts)
        if A <= self.SMALL:
            return np.add.reduceat(V[rows], starts, axis=0)
        lens = np.diff(np.append(starts, len(rows)))
        out = np.empty((A, V.shape[1]))
        for L in np.unique(lens).tolist():
            who = np.flatnonzero(lens == L)
            if L > 129 or L < 1:
                for a in who.tolist():
                    out[a] = np.add.reduceat(V[rows[starts[a]:starts[a] + L]], [0], axis=0)[0]
                continue
            r = rows[starts[who][:, None] + np.arange(L)[None, :]]  # (networks, L)
            out[who] = V.take(r[:, 0], axis=0) + _pairwise(V, r[:, 1:])
        return out

    def predict(self, arch: Arch, resolution: int = 224) -> float:
        """Latency of ``arch`` at input ``resolution`` in ms (batch 1, 1000 classes)."""
        return float(self._networks([arch], resolution)[2][0])

    def predict_many(self, archs: Iterable[Arch], resolution: int = 224) -> np.ndarray:
        """``predict`` of every arch (equal to it, value for value), vectorized: the layers no
        earlier call met are priced in one batch."""
        archs = archs if isinstance(archs, list) else list(archs)
        if not archs:
            return np.zeros(0)
        return self._networks(archs, resolution)[2]

    def network_inputs(self, archs: Sequence[Arch], resolution: int = 224) -> np.ndarray:
        """Per network the sum of its layers' network-term input rows (column 0: the layer sum in
        ms); the model must have a network term (fitting starts from ``NetworkTerm.identity``)."""
        if self.term is None:
            raise TargetError(f"target {self.name}: no network term")
        rows, starts = self._lookup(list(archs), resolution)
        return self._layer_sums(rows, starts)

    def breakdown(self, arch: Arch, resolution: int = 224) -> list[tuple[str, float]]:
        """(signature key, ms) per layer; a last ("network overhead", ms) row when the target has
        one, so that the rows sum to ``predict`` (up to rounding).  With a network term, each
        layer's cost is scaled by the network's factor (the term's network ms / the plain sum of
        its layer costs): the rows show where the network's time goes, in its predicted total."""
        rows, starts, ms = self._networks([arch], resolution)
        cost = self._cost[rows]
        c = self.calibration
        f = float((ms[0] / c - self.overhead_ms) / cost.sum()) if self.term is not None else 1.0
        out = [(s.key, c * f * float(x)) for s, x in zip(signatures(arch, resolution), cost)]
        if self.overhead_ms:
            out.append(("network overhead", c * self.overhead_ms))
        return out

    def source_of(self, arch: Arch, resolution: int = 224) -> list[str]:
        """'table' or 'predictor' per layer (for reports and tests)."""
        table_res = resolution if isinstance(resolution, int) else None
        return ["table" if self.table.get(s.key, table_res) is not None else "predictor"
                for s in signatures(arch, resolution)]

    # -- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "target": self.name,
            "meta": self.meta,
            "error": self.error,
            "predictor": self.predictor.to_dict() if self.predictor else None,
            "table": self.table.to_dict(),
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.replace(path)

    @staticmethod
    def read_file(path: str | Path) -> dict[str, Any]:
        """A target file's JSON after the checks every reader needs (exists, JSON, format, version,
        name); its predictor and table are not read (``build --refit`` refits a file whose predictor
        an older version of the features wrote)."""
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise TargetError(f"{where}: target file does not exist")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TargetError(f"{where}: corrupt target file (not JSON: {exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise TargetError(f"{where}: format {got!r} is not a latency target; allowed: {FORMAT}")
        if d.get("version") != VERSION:
            raise TargetError(f"{where}: version {d.get('version')!r} is not supported; allowed: {VERSION}")
        name = d.get("target")
        if not isinstance(name, str) or not name:
            raise TargetError(f"{where}.target: got {name!r}; allowed: the target's name")
        return d

    @classmethod
    def from_file(cls, path: str | Path) -> "LatencyModel":
        where = str(path)
        d = cls.read_file(path)
        name = d["target"]
        table = LatencyTable.from_dict(d.get("table", {}), f"{where}.table")
        pred = d.get("predictor")
        predictor = Predictor.from_dict(pred, f"{where}.predictor") if pred is not None else None
        if predictor is None and not len(table):
            raise TargetError(f"{where}: neither table entries nor a predictor")
        return cls(name, table, predictor, d.get("meta") or {}, d.get("error") or {}, where)
