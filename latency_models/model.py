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
target has ``kind_scale``; the in-network term, fitted on
whole-network measurements where they show one) and the network the sum plus ``overhead_ms``.  Per-layer costs are cached by (resolution,
layer spec, input shape), so a search that meets the same blocks again pays a dict lookup.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from latency_models.features import layer_features
from latency_models.predictor import Predictor
from latency_models.table import LatencyTable
from search_space.arch import Arch, signatures
from search_space.errors import TargetError

FORMAT = "edgenas-latency-target"
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
        self._cache: dict[tuple, tuple] = {}   # (res, spec, h, w[, ...]) -> (ms, out_h, out_w)
        self._ids: dict[int, tuple] = {}       # id(BlockSpec) -> (spec, {(res, h, w): cache value})
        self.scale = predictor.scale if predictor else 1.0
        self.overhead_ms = predictor.overhead_ms if predictor else 0.0
        self._shapes = self._table_shapes()

    def _table_shapes(self) -> set | None:
        """(kind, in_ch, H, W) of every table entry: a layer whose shape is not there cannot be in
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
            out.add((s.kind, s.in_ch, s.h, s.w))
        return out

    def __repr__(self) -> str:
        return f"LatencyModel({self.name!r}, {len(self.table)} table entries)"

    # -- per-layer costs ------------------------------------------------------------------------
    @staticmethod
    def _cache_key(res, sig) -> tuple:
        if sig.kind == "head":
            return (res, sig.spec, sig.in_ch, sig.h, sig.w, sig.num_classes)
        return (res, sig.spec, sig.h, sig.w)

    def _fill(self, items: Sequence[tuple[Arch, Any]], num_classes: int = 1000) -> None:
        """Price every layer of the given (arch, resolution) pairs not yet in the cache: table
        lookups first, then one vectorized regressor call for the rest."""
        if len(self._cache) > self.MAX_CACHE:  # bound memory in very long searches
            self._cache.clear()
            self._ids.clear()
        new_keys, new_sigs, new_base = [], [], []  # every newly priced layer
        miss_idx, miss_where = [], []              # those the table lacks
        seen = set()
        for arch, res in items:
            rkey = res if isinstance(res, int) else tuple(res)
            table_res = rkey if isinstance(rkey, int) else (rkey[0] if rkey[0] == rkey[1] else None)
            for i, sig in enumerate(signatures(arch, res, num_classes)):
                ck = self._cache_key(rkey, sig)
                if ck in self._cache or ck in seen:
                    continue
                seen.add(ck)
                shapes = self._shapes
                if shapes is not None and (sig.kind, sig.in_ch, sig.h, sig.w) not in shapes:
                    entry = None
                else:
                    entry = self.table.get(sig.key, table_res)
                new_keys.append(ck)
                new_sigs.append(sig)
                new_base.append(entry.ms if entry is not None else 0.0)
                if entry is None:
                    miss_idx.append(len(new_sigs) - 1)
                    miss_where.append("stem" if sig.kind == "stem" else "head" if sig.kind == "head"
                                      else f"arch.blocks[{i - 1}]")
        if not new_sigs:
            return
        if miss_idx and self.predictor is None:
            sig = new_sigs[miss_idx[0]]
            raise TargetError(f"target {self.name}: no table entry for {sig.key} ({miss_where[0]}) "
                              "and no predictor in the target file")
        for j, where in zip(miss_idx, miss_where):
            sig = new_sigs[j]
            if not self.predictor.can_price(sig.kind):
                raise TargetError(f"target {self.name}: cannot price block type {sig.kind!r} at {where} "
                                  f"({sig.key}): no table entry and no regressor; regressors for: "
                                  f"{', '.join(self.predictor.kinds())}")
        base = np.array(new_base)
        need_x = bool(miss_idx) or (self.predictor is not None and self.predictor.net_coef.any())
        if need_x:
            X = np.stack([layer_features(s) for s in new_sigs])
            kinds = [s.kind for s in new_sigs]
            if miss_idx:
                base[miss_idx] = self.predictor.predict_rows([kinds[j] for j in miss_idx], X[miss_idx])
            extra = self.predictor.in_network(kinds, X) if self.predictor is not None else 0.0
        else:
            extra = 0.0
        ks = self.predictor.kind_scale if self.predictor is not None else None
        if ks:  # a per-kind in-network scale where fitted, the common one elsewhere
            scale = np.array([ks.get(s.kind, self.scale) for s in new_sigs])
        else:
            scale = self.scale
        cost = scale * base + extra
        for ck, v, sig in zip(new_keys, cost, new_sigs):
            self._cache[ck] = (float(v), *sig.out_hw)  # the output shape rides along: no recomputation

    def _layers_sum(self, arch: Arch, res) -> float | None:
        """Sum of cached layer costs, or None if any is missing (the hot path)."""
        cache = self._cache
        if isinstance(res, int):
            h = w = res
            rkey = res
        else:
            h, w = res
            rkey = tuple(res)
        v = cache.get((rkey, arch.stem, h, w))
        if v is None:
            return None
        total, h, w = v
        ids = self._ids
        for b in arch.blocks:
            # identity fast path: the same BlockSpec object again costs an int-keyed lookup
            # (a frozen dataclass hashes all its fields on every dict lookup)
            e = ids.get(id(b))
            v = e[1].get((rkey, h, w)) if e is not None else None
            if v is None:
                v = cache.get((rkey, b, h, w))
                if v is None:
                    return None
                if e is None:
                    if len(ids) > self.MAX_CACHE:
                        ids.clear()
                    ids[id(b)] = (b, {(rkey, h, w): v})  # holds b: its id cannot be reused meanwhile
                else:
                    e[1][(rkey, h, w)] = v
            c, h, w = v
            total += c
        v = cache.get((rkey, arch.head, arch.blocks[-1].out_ch, h, w, 1000))
        if v is None:
            return None
        return total + v[0]

    # -- public API -------------------------------------------------------------------------------
    def predict(self, arch: Arch, resolution: int = 224) -> float:
        """Latency of ``arch`` at input ``resolution`` in ms (batch 1, 1000 classes)."""
        s = self._layers_sum(arch, resolution)
        if s is None:
            self._fill([(arch, resolution)])
            s = self._layers_sum(arch, resolution)
        return s + self.overhead_ms

    def predict_many(self, archs: Iterable[Arch], resolution: int = 224) -> np.ndarray:
        archs = list(archs)
        out = np.empty(len(archs))
        missing = []
        for i, a in enumerate(archs):
            s = self._layers_sum(a, resolution)
            if s is None:
                missing.append(i)
            else:
                out[i] = s
        if missing:
            self._fill([(archs[i], resolution) for i in missing])
            for i in missing:
                out[i] = self._layers_sum(archs[i], resolution)
        return out + self.overhead_ms

    def breakdown(self, arch: Arch, resolution: int = 224) -> list[tuple[str, float]]:
        """(signature key, ms) per layer; a last ("network overhead", ms) row when the target has
        one, so that the rows sum to ``predict``."""
        self._fill([(arch, resolution)])
        rkey = resolution if isinstance(resolution, int) else tuple(resolution)
        rows = [(s.key, self._cache[self._cache_key(rkey, s)][0])
                for s in signatures(arch, resolution)]
        if self.overhead_ms:
            rows.append(("network overhead", self.overhead_ms))
        return rows

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
