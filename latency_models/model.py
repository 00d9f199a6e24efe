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

Per-layer costs are cached by (resolution, layer spec, input shape), so a search that meets the
same blocks again pays a dict lookup; the layers of a batch that are new to the model are priced
together (``features.features_cols``, one regressor call), so ``predict`` and ``predict_many`` are
one path and agree value for value.
"""
from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from latency_models.features import _SPEC_COL, features_cols, spec_fields
from latency_models.predictor import Predictor
from latency_models.table import LatencyTable
from search_space.arch import Arch, signatures
from search_space.errors import TargetError

FORMAT = "edgenas-latency-target"
_TYPE, _IN_CH, _KERNEL, _STRIDE, _PADDING = (_SPEC_COL[f] for f in ("type", "in_ch", "kernel", "stride", "padding"))
VERSION = 1


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
        self._shapes = self._table_shapes()
        # the network-level term (where fitted): per cached layer a row of its inputs
        self.term = predictor.network_term if predictor else None
        self._reset_cache()

    def _table_shapes(self) -> set | None:
        """``_shape_key`` of every table entry: a layer whose shape key is not there cannot be in
        the table, and skips building its key string (most new layers of a large space).  None (no
        filter) if a key does not parse."""
        from search_space.arch import signature_from_key
        from search_space.errors import EdgenasError

        out = set()
        for _, k, _ in self.table.items():
            try:
                s = signature_from_key(k)
            except EdgenasError:
                return None
            out.add(self._shape_key(s.kind, s.spec, s.in_ch, s.h, s.w))
        return out

    @staticmethod
    def _shape_key(kind: str, spec, cin: int, h: int, w: int) -> tuple:
        """What a table lookup must match before its key string is built: kind, input shape and
        the layer's output width and kernel."""
        return (kind, cin, h, w, getattr(spec, "out_ch", 0) or getattr(spec, "last_ch", 0), getattr(spec, "kernel", 0))

    def __repr__(self) -> str:
        return f"LatencyModel({self.name!r}, {len(self.table)} table entries)"

    # -- per-layer costs ------------------------------------------------------------------------
    def _reset_cache(self) -> None:
        self._cache: dict[tuple, list] = {}  # (res, spec or its field values, h, w[, in_ch, classes]) -> [row, out_h, out_w]
        self._ids: dict[tuple, list] = {}    # (id(BlockSpec), res, h, w) -> the same [row, out_h, out_w]
        self._alive: list = []               # the BlockSpecs in _ids: their ids cannot be reused meanwhile
        self._n = 0                          # priced layers: rows of _cost (and _V)
        self._cost = np.zeros(1024)
        self._V = np.zeros((1024, self.term.width)) if self.term is not None else None

    def _lookup(self, archs: Sequence[Arch], res, num_classes: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(rows of every layer of every arch, in order; segment starts per arch): one walk over
        the layers; the layers not yet cached are priced together (``_price``) and cached.  A
        block's cache key holds its field values (``spec_fields``, one C-level call: a frozen dataclass hashes its
        fields in Python on every lookup); the same BlockSpec object again costs an int-keyed one.
        A cache value is a list [row, out_h, out_w]: a layer met first in this batch gets a
        provisional negative row, set in place once priced (no second hashing of its key)."""
        if self._n > self.MAX_CACHE or len(self._ids) > self.MAX_CACHE:  # bound memory in long searches
            self._reset_cache()
        if isinstance(res, int):
            h0 = w0 = res
            rkey = res
        else:
            h0, w0 = res
            rkey = tuple(res)
        cache, idmap = self._cache, self._ids
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
        from search_space.arch import Signature

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
        term = self.term
        extra = 0.0
        if miss or term is not None or (p is not None and p.net_coef.any()):
            X = features_cols(kinds, [t[2] for t in new], np.fromiter((t[3] for t in new), np.int64, n),
                              np.fromiter((t[4] for t in new), np.int64, n),
                              np.fromiter((t[5] for t in new), np.int64, n), np.full(n, num_classes, np.int64),
                              vals=self._vals(new))
            if miss:
                base[miss] = p.predict_rows([kinds[q] for q in miss], X[miss])
            if p is not None:
                extra = p.in_network(kinds, X)
        ks = p.kind_scale if p is not None else None
        scale = np.array([ks.get(k, self.scale) for k in kinds]) if ks else self.scale
        cost = scale * base + extra
        b0 = self._n
        if b0 + n > len(self._cost):
            size = max(2 * len(self._cost), b0 + n)
            self._cost = np.concatenate([self._cost, np.zeros(size - len(self._cost))])
            if term is not None:
                self._V = np.vstack([self._V, np.zeros((size - len(self._V), term.width))])
        self._cost[b0:b0 + n] = cost
        if term is not None:
            self._V[b0:b0 + n] = term.layer_vectors(kinds, cost, X)
        self._n = b0 + n
        return b0

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
            ms = self.term.predict(np.add.reduceat(self._V[rows], starts, axis=0))
        else:
            ms = np.add.reduceat(self._cost[rows], starts)
        return rows, starts, ms + self.overhead_ms

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
        return np.add.reduceat(self._V[rows], starts, axis=0)

    def breakdown(self, arch: Arch, resolution: int = 224) -> list[tuple[str, float]]:
        """(signature key, ms) per layer; a last ("network overhead", ms) row when the target has
        one, so that the rows sum to ``predict`` (up to rounding).  With a network term, each
        layer's cost is scaled by the network's factor (the term's network ms / the plain sum of
        its layer costs): the rows show where the network's time goes, in its predicted total."""
        rows, starts, ms = self._networks([arch], resolution)
        cost = self._cost[rows]
        f = float((ms[0] - self.overhead_ms) / cost.sum()) if self.term is not None else 1.0
        out = [(s.key, f * float(c)) for s, c in zip(signatures(arch, resolution), cost)]
        if self.overhead_ms:
            out.append(("network overhead", self.overhead_ms))
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

    @classmethod
    def from_file(cls, path: str | Path) -> "LatencyModel":
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
        table = LatencyTable.from_dict(d.get("table", {}), f"{where}.table")
        pred = d.get("predictor")
        predictor = Predictor.from_dict(pred, f"{where}.predictor") if pred is not None else None
        if predictor is None and not len(table):
            raise TargetError(f"{where}: neither table entries nor a predictor")
        return cls(name, table, predictor, d.get("meta") or {}, d.get("error") or {}, where)
