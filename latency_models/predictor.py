"""Learned per-layer latency: a non-negative linear regressor per layer kind on ``features``.

Each kind (``stem``, ``head``, ``mbconv``, ``dwsep``, ...) with enough measurements gets its own
coefficients; every other kind uses the ``generic`` coefficients, fitted on all layers.  Weights are
non-negative (more MACs or bytes never make a layer faster), fitted by scikit-learn's
``LinearRegression(positive=True)`` on relative error (sample weight 1 / y^2), so a 0.1 ms block
counts as much as a 10 ms one.  A network's latency is ``scale * sum(layers) + ms`` (the
per-network overhead term, fitted on whole-network measurements where they exist).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from latency_models.features import FEATURES, N_FEATURES, SCALE, Kinds, as_kinds  # noqa: F401
from search_space.errors import TargetError


def fit_linear(X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, ridge: float = 1e-6) -> np.ndarray:
    """Non-negative weights minimising the (weighted) squared relative error of X @ coef vs y.

    X is in scaled units (``features.SCALE``).  A tiny ridge row per feature keeps unused
    features at zero and the solution unique.
    """
    from sklearn.linear_model import LinearRegression

    X = np.asarray(X, float)
    y = np.asarray(y, float)
    w = (1.0 / np.maximum(y, 1e-6) ** 2) * (1.0 if weight is None else np.asarray(weight, float))
    if ridge:
        k = X.shape[1]
        X = np.vstack([X, np.eye(k) * np.sqrt(ridge)])
        y = np.concatenate([y, np.zeros(k)])
        w = np.concatenate([w, np.ones(k)])
    reg = LinearRegression(positive=True, fit_intercept=False)
    reg.fit(X, y, sample_weight=w)
    return np.asarray(reg.coef_, float)


class Predictor:
    """Coefficients per kind (on scaled features) plus the network overhead term."""

    def __init__(self, coefs: dict[str, np.ndarray], scale: float = 1.0, overhead_ms: float = 0.0,
                 fitted_on: dict[str, Any] | None = None, net_coef: np.ndarray | None = None) -> None:
        self.coefs = {k: np.asarray(v, float) for k, v in coefs.items()}
        self.scale = float(scale)
        self.overhead_ms = float(overhead_ms)
        # in-network extra cost per layer (e.g. activations that no longer stay in cache), on features
        self.net_coef = np.zeros(N_FEATURES) if net_coef is None else np.asarray(net_coef, float)
        self.fitted_on = fitted_on or {}
        self.residual: "TreeResidual | None" = None
        self.kind_scale: dict[str, float] = {}  # in-network scale per layer kind (``scale`` for the others)
        self.network_term: "NetworkTerm | None" = None  # whole-network factor, where fitted

    def in_network(self, kinds: Sequence[str], X: np.ndarray) -> np.ndarray:
        """Extra in-network ms of layers with unscaled features X (zero unless fitted)."""
        if not self.net_coef.any():
            return np.zeros(len(X))
        return (np.asarray(X, float) * SCALE) @ self.net_coef

    def kinds(self) -> list[str]:
        return sorted(self.coefs)

    def coef_for(self, kind: str) -> np.ndarray | None:
        c = self.coefs.get(kind)
        return c if c is not None else self.coefs.get("generic")

    def can_price(self, kind: str) -> bool:
        return self.coef_for(kind) is not None

    def predict_rows(self, kinds: Iterable[str], X: np.ndarray) -> np.ndarray:
        """Per-layer ms for unscaled feature rows ``X`` of the given kinds (vectorized by kind)."""
        kinds = as_kinds(kinds)
        X0 = np.asarray(X, float)
        out = np.zeros(len(kinds))
        groups = kinds.groups()
        for k, idx in groups.items():
            c = self.coef_for(k)
            if c is None:
                raise TargetError(f"block type {k!r}: this target has no regressor for it; "
                                  f"allowed: {', '.join(self.kinds())}")
            # rowdot(X0[idx] * SCALE, c), reading only the columns with a weight: the same floats
            rows = X0 if len(groups) == 1 else X0[idx]
            v = np.zeros(len(idx))
            for j in np.flatnonzero(c):
                v = v + (rows[:, j] * SCALE[j]) * c[j]
            out[idx] = v  # row by row the same floats, whatever the batch
        if self.residual is not None and len(out):
            out = out * np.exp(self.residual.log_ratio_T(self.residual.design_T(kinds, X0, out)))
        return out

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "linear-positive",
            "features": list(FEATURES),
            "coefs": {k: [float(f"{x:.6g}") for x in v] for k, v in sorted(self.coefs.items())},
            "network": {"scale": round(self.scale, 6), "overhead_ms": round(self.overhead_ms, 6),
                        "layer_coefs": [float(f"{x:.6g}") for x in self.net_coef],
                        **({"kind_scale": {k: round(v, 6) for k, v in sorted(self.kind_scale.items())}}
                           if self.kind_scale else {})},
            "fitted_on": self.fitted_on,
            **({"residual": self.residual.to_dict()} if self.residual is not None else {}),
            **({"network_term": self.network_term.to_dict()} if self.network_term is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Predictor":
        if not isinstance(d, dict) or d.get("kind") != "linear-positive":
            got = d.get("kind") if isinstance(d, dict) else type(d).__name__
            raise TargetError(f"{where}.kind: got {got!r}; allowed: linear-positive")
        if d.get("features") != list(FEATURES):
            raise TargetError(f"{where}.features: do not match this version's features; allowed: {', '.join(FEATURES)}")
        coefs = d.get("coefs")
        if not isinstance(coefs, dict):
            raise TargetError(f"{where}.coefs: got {type(coefs).__name__}; allowed: a mapping kind -> list of numbers")
        out = {}
        for k, v in coefs.items():
            if (not isinstance(v, list) or len(v) != N_FEATURES
                    or not all(isinstance(x, (int, float)) and x >= 0 for x in v)):
                raise TargetError(f"{where}.coefs.{k}: allowed: {N_FEATURES} non-negative numbers")
            out[k] = np.array(v, float)
        net = d.get("network", {})
        if not isinstance(net, dict):
            raise TargetError(f"{where}.network: allowed: a mapping with scale, overhead_ms")
        nc = net.get("layer_coefs")
        if nc is not None and (not isinstance(nc, list) or len(nc) != N_FEATURES
                               or not all(isinstance(x, (int, float)) and x >= 0 for x in nc)):
            raise TargetError(f"{where}.network.layer_coefs: allowed: {N_FEATURES} non-negative numbers")
        p = cls(out, net.get("scale", 1.0), net.get("overhead_ms", 0.0), d.get("fitted_on"),
                None if nc is None else np.array(nc, float))
        ks = net.get("kind_scale", {})
        if not isinstance(ks, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in ks.values()):
            raise TargetError(f"{where}.network.kind_scale: allowed: a mapping layer kind -> non-negative number")
        p.kind_scale = {str(k): float(v) for k, v in ks.items()}
        if d.get("residual") is not None:
            p.residual = TreeResidual.from_dict(d["residual"], f"{where}.residual")
        if d.get("network_term") is not None:
            p.network_term = NetworkTerm.from_dict(d["network_term"], f"{where}.network_term")
        return p


def fit_predictor(kinds: Sequence[str], X: np.ndarray, y: np.ndarray, min_rows: int = 5,
                  own_kinds: Iterable[str] | None = None, fitted_on: dict[str, Any] | None = None) -> Predictor:
    """Fit ``generic`` coefficients on all layer rows and a kind's own on its rows when it has at
    least ``min_rows`` (restricted to ``own_kinds`` if given).  X unscaled, y in ms."""
    kinds = list(kinds)
    Xs = np.asarray(X, float) * SCALE
    y = np.asarray(y, float)
    coefs = {"generic": fit_linear(Xs, y)}
    for k in sorted(set(kinds)):
        idx = [i for i, kk in enumerate(kinds) if kk == k]
        if len(idx) >= min_rows and (own_kinds is None or k in own_kinds):
            coefs[k] = fit_linear(Xs[idx], y[idx])
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    return Predictor(coefs, fitted_on={**(fitted_on or {}), "layers": counts})


NET_FEATURES = ("in_bytes", "out_bytes", "mid_bytes", "weight_bytes", "ops")


def fit_network_model(pred_sums: np.ndarray, feat_sums: np.ndarray, measured: np.ndarray,
                      features: Sequence[str] = NET_FEATURES) -> tuple[float, np.ndarray, float]:
    """(scale, per-feature in-network coefs (all FEATURES, zeros elsewhere), overhead_ms) with
    measured ~= scale * pred_sum + feat_sum . coefs + overhead, all >= 0, on relative error.
    ``feat_sums`` are the networks' unscaled feature sums."""
    idx = [FEATURES.index(f) for f in features]
    G = np.asarray(feat_sums, float) * SCALE
    A = np.column_stack([np.asarray(pred_sums, float), G[:, idx], np.ones(len(G))])
    coef = fit_linear(A, np.asarray(measured, float), ridge=1e-4)
    net = np.zeros(N_FEATURES)
    net[idx] = coef[1:-1]
    return float(coef[0]), net, float(coef[-1])


def fit_network_model_by_kind(kind_sums: np.ndarray, kinds: Sequence[str], feat_sums: np.ndarray,
                              measured: np.ndarray, features: Sequence[str] = NET_FEATURES,
                              shrink: float = 1.0) -> tuple[float, dict[str, float], np.ndarray, float]:
    """As ``fit_network_model`` with one in-network scale per layer kind (columns of ``kind_sums``:
    each network's summed layer costs of that kind), each shrunk towards the common scale by a
    ridge of weight ``shrink`` (a kind few networks hold stays near it).  Returns (common scale,
    {kind: scale}, in-network coefs, overhead_ms)."""
    s0, _, _ = fit_network_model(np.asarray(kind_sums, float).sum(1), feat_sums, measured, features)
    idx = [FEATURES.index(f) for f in features]
    G = np.asarray(feat_sums, float) * SCALE
    K = np.asarray(kind_sums, float)
    A = np.column_stack([K, G[:, idx], np.ones(len(G))])
    y = np.asarray(measured, float)
    w = 1.0 / y
    k = K.shape[1]
    R = np.zeros((k, A.shape[1]))
    R[np.arange(k), np.arange(k)] = np.sqrt(shrink)
    from scipy.optimize import lsq_linear

    M = np.vstack([A * w[:, None], R])
    b = np.concatenate([y * w, np.sqrt(shrink) * np.full(k, s0)])
    coef = lsq_linear(M, b, bounds=(0.0, np.inf)).x
    net = np.zeros(N_FEATURES)
    net[idx] = coef[k:-1]
    return s0, {kk: float(c) for kk, c in zip(kinds, coef[:k])}, net, float(coef[-1])


def fit_network_terms(pred_sums: np.ndarray, measured: np.ndarray, scale: bool = True) -> tuple[float, float]:
    """(scale, overhead_ms) with measured ~= scale * pred_sum + overhead_ms, overhead >= 0, fitted on
    relative error; ``scale=False`` fits the overhead alone."""
    p = np.asarray(pred_sums, float)
    m = np.asarray(measured, float)
    w = 1.0 / m ** 2
    if scale:
        X = np.stack([p, np.ones_like(p)], 1)
        from sklearn.linear_model import LinearRegression

        reg = LinearRegression(positive=True, fit_intercept=False).fit(X, m, sample_weight=w)
        s, c = (float(v) for v in reg.coef_)
        return s, c
    c = float(np.sum(w * (m - p)) / np.sum(w))
    return 1.0, max(0.0, c)


# --------------------------------------------------------------------------------------------
# Optional non-linear correction: gradient-boosted trees on the log residual of the linear model
# --------------------------------------------------------------------------------------------
class TreeResidual:
    """ms = linear(x) * exp(trees(z)), z = [log1p(scaled features * 1e3), log(linear), one-hot kind].

    Fitted with scikit-learn's ``HistGradientBoostingRegressor`` (squared error on the log ratio);
    its trees are stored as plain arrays (feature, threshold, left, right, leaf value) so that a
    target file stays JSON and loads without pickles."""

    def __init__(self, kinds: list[str], baseline: float, trees: list[dict[str, list]]) -> None:
        self.kinds = list(kinds)
        self.baseline = float(baseline)
        self.trees = [{k: np.asarray(v) for k, v in t.items()} for t in trees]
        self._packed = None
        self._binned = None

    def design(self, kinds: Sequence[str], X: np.ndarray, lin: np.ndarray) -> np.ndarray:
        Z = np.log1p(np.maximum(np.asarray(X, float) * SCALE * 1e3, 0.0))
        col = {c: i for i, c in enumerate(self.kinds)}
        codes = as_kinds(kinds).lookup(col, -1)
        onehot = (codes[:, None] == np.arange(len(self.kinds))[None, :]).astype(float)
        return np.column_stack([Z, np.log(np.maximum(lin, 1e-6)), onehot])

    def _pack(self):
        """All trees as one flat node array (node ids offset per tree), leaves pointing to
        themselves, and the depth of the deepest tree: every tree walks one level per step."""
        if self._packed is None:
            sizes = [len(t["leaf"]) for t in self.trees]
            off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            feat = np.concatenate([t["feature"] for t in self.trees]).astype(np.int64)
            thr = np.concatenate([t["threshold"] for t in self.trees]).astype(float)
            leaf = np.concatenate([t["leaf"] for t in self.trees]).astype(bool)
            left = np.concatenate([t["left"] + o for t, o in zip(self.trees, off)]).astype(np.int64)
            right = np.concatenate([t["right"] + o for t, o in zip(self.trees, off)]).astype(np.int64)
            ids = np.arange(len(leaf))
            left, right = np.where(leaf, ids, left), np.where(leaf, ids, right)
            feat, thr = np.where(leaf, 0, feat), np.where(leaf, np.inf, thr)  # a leaf goes "left" to itself
            value = np.concatenate([t["value"] for t in self.trees]).astype(float)
            depth = 0
            for t in self.trees:  # longest root-to-leaf path
                stack, d = [(0, 0)], 0
                while stack:
                    n, k = stack.pop()
                    if t["leaf"][n]:
                        d = max(d, k)
                    else:
                        stack += [(int(t["left"][n]), k + 1), (int(t["right"][n]), k + 1)]
                depth = max(depth, d)
            self._packed = (off, feat, thr, left, right, value, depth)
        return self._packed

    def design_T(self, kinds: Sequence[str], X: np.ndarray, lin: np.ndarray) -> np.ndarray:
        """``design(kinds, X, lin).T`` (one row per column of z), the same floats."""
        X = np.asarray(X, float)
        N = X.shape[1]
        ZT = np.empty((N + 1 + len(self.kinds), len(X)))
        t = X * SCALE  # as ``design`` computes it (the same operations, memory order and floats), in place
        t *= 1e3
        np.maximum(t, 0.0, out=t)
        np.log1p(t, out=t)
        ZT[:N] = t.T
        ZT[N] = np.log(np.maximum(lin, 1e-6))
        codes = as_kinds(kinds).lookup({c: i for i, c in enumerate(self.kinds)}, -1)
        for j in range(len(self.kinds)):
            ZT[N + 1 + j] = codes == j
        return ZT

    def _bins(self):
        """The forest as tables over bins of z, or None where it cannot be (a table would be too
        large).  Per used feature f of z: its thresholds G_f (sorted, unique) anywhere in the
        forest; a row's bin b_f is how many lie below its value.  Per tree: for each of its
        features a map from b_f to its own bin (how many of its own thresholds lie below) times a
        stride, and a table of its leaf values over the combinations of its own bins: z <= t_j
        (t_j the j-th of its thresholds on f) exactly when its own bin is <= j, so the table gives
        each row the leaf the tree's walk reaches."""
        if self._binned is None:
            self._binned = self._make_bins() or False
        return self._binned or None

    def _make_bins(self):
        leafs = [np.asarray(t["leaf"], bool) for t in self.trees]
        fa = np.concatenate([t["feature"][~m] for t, m in zip(self.trees, leafs)]).astype(np.int64)
        ta = np.concatenate([t["threshold"][~m] for t, m in zip(self.trees, leafs)]).astype(float)
        if np.isnan(ta).any():
            return None
        feats = np.unique(fa)
        G = [np.unique(ta[fa == f]) for f in feats]
        fpos = {int(f): i for i, f in enumerate(feats)}
        plans = []
        for t, leaf in zip(self.trees, leafs):
            f_t, th_t = t["feature"][~leaf].astype(np.int64), t["threshold"][~leaf].astype(float)
            fl = np.unique(f_t)
            F = [np.unique(th_t[f_t == f]) for f in fl]
            sizes = [len(x) + 1 for x in F]
            if np.prod([float(z) for z in sizes]) > 1 << 16:
                return None
            strides = np.cumprod([1] + sizes[:-1]).astype(np.int64)
            luts = [(fpos[int(f)], (np.concatenate([[0], np.searchsorted(Fi, G[fpos[int(f)]], side="right")])
                                    * st).astype(np.intp)) for f, Fi, st in zip(fl, F, strides)]
            size = int(np.prod(sizes))
            codes = np.arange(size)
            lb = np.array([(codes // st) % z for st, z in zip(strides, sizes)]).reshape(len(fl), size)
            kpos = np.zeros(len(leaf), np.intp)
            jn = np.zeros(len(leaf), np.intp)
            for i in np.flatnonzero(~leaf):
                k = int(np.searchsorted(fl, t["feature"][i]))
                kpos[i], jn[i] = k, int(np.searchsorted(F[k], t["threshold"][i]))
            node = np.zeros(size, np.intp)
            left, right = np.asarray(t["left"], np.intp), np.asarray(t["right"], np.intp)
            for _ in range(len(leaf)):
                lf = leaf[node]
                if lf.all():
                    break
                go_left = lb[kpos[node], codes] <= jn[node]
                node = np.where(lf, node, np.where(go_left, left[node], right[node]))
            else:
                return None
            plans.append((luts, np.asarray(t["value"], float)[node]))
        # pairs of features that several trees split on: one combined bin per row (b_a * |bins_b| + b_b),
        # then one look-up per tree instead of two (the look-ups' integer sums are the same)
        nbin = [len(g) + 1 for g in G]
        maps = [dict(luts) for luts, _ in plans]
        pairs: list[tuple[int, int]] = []
        while True:
            count: dict = {}
            for mp in maps:
                ks = sorted(k for k in mp if type(k) is int)
                for i, a in enumerate(ks):
                    for b in ks[i + 1:]:
                        if nbin[a] * nbin[b] <= 4096:
                            count[(a, b)] = count.get((a, b), 0) + 1
            if not count:
                break
            (a, b), c = max(count.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
            if c < 2:
                break
            key = ("pair", len(pairs))
            pairs.append((a, b))
            for mp in maps:
                if a in mp and b in mp:
                    la, lb = mp.pop(a), mp.pop(b)
                    mp[key] = (la[:, None] + lb[None, :]).ravel()  # at b_a * nbin[b] + b_b
        plans = [(list(mp.items()), table) for mp, (_, table) in zip(maps, plans)]
        return feats, G, plans, pairs, nbin

    def log_ratio(self, Z: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """baseline + the sum of every tree's leaf value for each row of Z (tree by tree, in order:
        a row's sum does not depend on the batch); ``log_ratio_T`` on its columns."""
        return self.log_ratio_T(np.asarray(Z, float).T)

    def log_ratio_T(self, ZT: np.ndarray, chunk: int = 32768) -> np.ndarray:
        """``log_ratio`` of the rows of ``ZT.T``: each row's bin per used feature once, then per
        tree a few table look-ups (``_bins``); a forest without tables walks its trees."""
        n = ZT.shape[1]
        out = np.full(n, self.baseline)
        if not self.trees or not n:
            return out
        plan = self._bins() if n > 64 else None  # a few rows: walking is cheaper than the bins' set-up
        if plan is None:
            return self._walk(ZT.T)
        feats, G, plans, pairs, nbin = plan
        zero = None
        for a in range(0, n, chunk):
            gb = []
            for f, g in zip(feats.tolist(), G):
                z = ZT[f, a:a + chunk]
                if len(g) > 250:
                    b = np.searchsorted(g, z, side="left")  # NaN sorts last: above every threshold
                else:
                    b = np.zeros(len(z), np.uint8)  # counted in bytes (less memory to stream), used as indices
                    for th in g:
                        np.add(b, z > th, out=b)
                    b = b.astype(np.intp)
                    nan = np.isnan(z)
                    if nan.any():
                        b[nan] = len(g)  # z <= t is false for NaN: the walk goes right
                gb.append(b)
            pc = [gb[p] * nbin[q] + gb[q] for p, q in pairs]
            acc = out[a:a + chunk]
            for luts, table in plans:
                if luts:
                    fi, lut = luts[0]
                    idx = lut[gb[fi] if type(fi) is int else pc[fi[1]]]
                    for fi, lut in luts[1:]:
                        idx += lut[gb[fi] if type(fi) is int else pc[fi[1]]]
                else:
                    if zero is None or len(zero) != len(acc):
                        zero = np.zeros(len(acc), np.intp)
                    idx = zero
                acc = acc + table[idx]
            out[a:a + chunk] = acc
        return out

    def _walk(self, Z: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """``log_ratio`` by walking all trees at once, one level per step."""
        out = np.full(len(Z), self.baseline)
        if not self.trees or not len(Z):
            return out
        off, feat, thr, left, right, value, depth = self._pack()
        for a in range(0, len(Z), chunk):
            z = np.asarray(Z[a:a + chunk], float)
            node = np.broadcast_to(off, (len(z), len(off))).copy()  # (rows, trees)
            rows = np.arange(len(z))[:, None]
            for _ in range(depth):
                go_left = z[rows, feat[node]] <= thr[node]
                node = np.where(go_left, left[node], right[node])
            v = value[node]
            acc = out[a:a + chunk]
            for t in range(v.shape[1]):  # tree by tree: a row's sum does not depend on the batch
                acc = acc + v[:, t]
            out[a:a + chunk] = acc
        return out

    @classmethod
    def fit(cls, kinds: Sequence[str], X: np.ndarray, lin: np.ndarray, y: np.ndarray, seed: int = 0,
            trees: int = 200, depth: int | None = None, learning_rate: float = 0.1) -> "TreeResidual":
        """``trees`` boosting rounds of at most 15 leaves (and ``depth`` levels when given)."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        model = cls(sorted(set(kinds)), 0.0, [])
        Z = model.design(kinds, X, lin)
        gbm = HistGradientBoostingRegressor(max_iter=trees, learning_rate=learning_rate, max_leaf_nodes=15,
                                            max_depth=depth, min_samples_leaf=5, l2_regularization=1.0,
                                            random_state=seed, early_stopping=False)
        gbm.fit(Z, np.log(np.maximum(y, 1e-6) / np.maximum(lin, 1e-6)))
        model.baseline = float(np.ravel(gbm._baseline_prediction)[0])
        for (pred,) in gbm._predictors:
            n = pred.nodes
            model.trees.append({"feature": n["feature_idx"].astype(int), "threshold": n["num_threshold"].astype(float),
                                "left": n["left"].astype(int), "right": n["right"].astype(int),
                                "leaf": n["is_leaf"].astype(bool), "value": n["value"].astype(float)})
        check = model.log_ratio(Z)
        if not np.allclose(check, gbm.predict(Z), atol=1e-6):
            raise RuntimeError("tree export does not reproduce scikit-learn's predictions")
        return model

    @classmethod
    def from_sklearn(cls, gbm, Z: np.ndarray) -> "TreeResidual":
        """A fitted ``HistGradientBoostingRegressor``'s trees as plain arrays (checked on ``Z``)."""
        model = cls([], float(np.ravel(gbm._baseline_prediction)[0]), [])
        for (pred,) in gbm._predictors:
            n = pred.nodes
            model.trees.append({"feature": n["feature_idx"].astype(int), "threshold": n["num_threshold"].astype(float),
                                "left": n["left"].astype(int), "right": n["right"].astype(int),
                                "leaf": n["is_leaf"].astype(bool), "value": n["value"].astype(float)})
        if not np.allclose(model.log_ratio(Z), gbm.predict(Z), atol=1e-6):
            raise RuntimeError("tree export does not reproduce scikit-learn's predictions")
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gbm-log-residual", "kinds": self.kinds, "baseline": self.baseline,
                "trees": [{"feature": t["feature"].tolist(), "threshold": [float(x) for x in t["threshold"]],
                           "left": t["left"].tolist(), "right": t["right"].tolist(),
                           "leaf": [int(x) for x in t["leaf"]], "value": [float(f"{x:.9g}") for x in t["value"]]}
                          for t in self.trees]}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "TreeResidual":
        try:
            if d.get("kind") != "gbm-log-residual":
                raise ValueError
            trees = [{"feature": np.array(t["feature"], int), "threshold": np.array(t["threshold"], float),
                      "left": np.array(t["left"], int), "right": np.array(t["right"], int),
                      "leaf": np.array(t["leaf"], bool), "value": np.array(t["value"], float)} for t in d["trees"]]
            r = cls(list(d["kinds"]), float(d["baseline"]), [])
            r.trees = trees
            r._pack()
            r._bins()
            return r
        except (AttributeError, KeyError, TypeError, ValueError):
            raise TargetError(f"{where}: allowed: a gbm-log-residual mapping with kinds, baseline, trees") from None


# --------------------------------------------------------------------------------------------
# Network-level term: whole-network latency from the network's layers, fitted on whole networks
# --------------------------------------------------------------------------------------------
# The network term's ridge penalties (on standardised z).  z holds each feature's sum twice (absolute and
# per ms of S) next to log S: nearly collinear columns, so a penalty near 0 (least squares) fits large
# weights of opposite sign that cancel on the training networks and not on networks unlike them (a term
# fitted with 0.01 priced SqueezeNet and MobileNetV1 27-37% high, their layers all measured); from 1 up.
RIDGE_ALPHAS = np.logspace(0, 5, 21)


def rowdot(A: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A @ w accumulated column by column: each row's value does not depend on the other rows
    (a BLAS product may round differently with the batch size), so predict == predict_many."""
    A = np.asarray(A, float)
    out = np.zeros(len(A))
    for j in np.flatnonzero(np.asarray(w)):
        out = out + A[:, j] * w[j]
    return out


class NetworkTerm:
    """A network's latency from its layers' costs, fitted on whole networks measured end-to-end:

        lin = sum_kinds kind_scale[k] * S_k + (summed scaled layer features) . coefs + overhead_ms
        ms  = lin * exp(intercept + z . weights + trees(z))

    S_k is the summed cost (table, else regressor) of the network's layers of kind k (kinds the
    term was not fitted on share the ``other`` column), the layer features those of
    ``latency_models.features`` (the in-network extra cost of memory traffic and operators), all
    of ``kind_scale``, ``coefs``, ``overhead_ms`` >= 0.  The second factor is an optional
    correction of the log residual: a ridge fit (``weights``) and boosted trees (``trees``,
    scikit-learn's ``HistGradientBoostingRegressor`` stored as plain arrays) on network features z
    (``design``: log S, each kind's share of S, log1p of the summed features, absolute and per ms
    of S).  Everything is computed from per-network sums of one row per layer
    (``layer_vectors``), so that pricing a network needs only additions over its layers."""

    def __init__(self, kinds: Sequence[str], kind_scale: np.ndarray, coefs: np.ndarray, overhead_ms: float = 0.0,
                 intercept: float = 0.0, weights: np.ndarray | None = None, trees: "TreeResidual | None" = None,
                 fitted_on: dict[str, Any] | None = None) -> None:
        self.kinds = list(kinds)
        self._col = {k: i for i, k in enumerate(self.kinds)}
        self.kind_scale = np.asarray(kind_scale, float)
        self.coefs = np.asarray(coefs, float)
        self.overhead_ms = float(overhead_ms)
        self.intercept = float(intercept)
        self.weights = None if weights is None else np.asarray(weights, float)
        self.trees = trees
        self.fitted_on = fitted_on or {}

    @classmethod
    def identity(cls, kinds: Sequence[str]) -> "NetworkTerm":
        """ms = S, the plain layer sum (the starting point of a fit)."""
        return cls(kinds, np.ones(len(kinds) + 1), np.zeros(N_FEATURES))

    @property
    def width(self) -> int:
        """Length of a layer vector: cost, one column per kind and ``other``, the features."""
        return 2 + len(self.kinds) + N_FEATURES

    @property
    def n_design(self) -> int:
        return 2 + len(self.kinds) + 2 * N_FEATURES

    def layer_vectors(self, kinds: Sequence[str], cost: np.ndarray, X: np.ndarray,
                      out: np.ndarray | None = None) -> np.ndarray:
        """Per-layer rows (cost, cost in its kind's column, unscaled features): their sums over a
        network's layers are all the term needs.  ``out``: an (n x width) array to fill."""
        n = len(cost)
        if out is None:
            V = np.zeros((n, self.width))
        else:
            V = out
            V[:, 1:2 + len(self.kinds)] = 0.0
        V[:, 0] = cost
        other = len(self.kinds)
        cols = as_kinds(kinds).lookup(self._col, other).astype(np.int64)
        V[np.arange(n), 1 + cols] = cost
        V[:, 2 + len(self.kinds):] = X
        return V

    def design(self, V: np.ndarray) -> np.ndarray:
        """Network features z from summed layer vectors (one row per network)."""
        V = np.atleast_2d(np.asarray(V, float))
        S = np.maximum(V[:, :1], 1e-9)
        shares = V[:, 1:2 + len(self.kinds)] / S
        F = np.maximum(V[:, 2 + len(self.kinds):] * SCALE, 0.0)
        return np.column_stack([np.log(S), shares, np.log1p(F * 1e3), np.log1p(F * 1e3 / S)])

    def linear(self, V: np.ndarray) -> np.ndarray:
        V = np.atleast_2d(np.asarray(V, float))
        nk = len(self.kinds)
        return (rowdot(V[:, 1:2 + nk], self.kind_scale) + rowdot(V[:, 2 + nk:] * SCALE, self.coefs)
                + self.overhead_ms)

    def predict(self, V: np.ndarray) -> np.ndarray:
        """Network ms from summed layer vectors (rows: networks)."""
        lin = self.linear(V)
        if self.weights is None and self.trees is None:
            return lin
        Z = self.design(V)
        r = self.intercept + (rowdot(Z, self.weights) if self.weights is not None else 0.0)
        if self.trees is not None:
            r = r + self.trees.log_ratio(Z)
        return lin * np.exp(r)

    @classmethod
    def fit(cls, kinds: Sequence[str], V: np.ndarray, measured: np.ndarray, by_kind: bool = True,
            residual: str = "none", trees: int = 50, seed: int = 0, shrink: float = 1.0,
            fitted_on: dict[str, Any] | None = None) -> "NetworkTerm":
        """Fit on summed layer vectors ``V`` (rows: networks) and their measured ms.  ``by_kind``:
        one in-network scale per kind (shrunk towards the common one), else one for all;
        ``residual``: 'none', 'ridge' or 'trees' (ridge, then ``trees`` boosting rounds)."""
        V = np.asarray(V, float)
        y = np.asarray(measured, float)
        nk = len(kinds)
        K, F = V[:, 1:2 + nk], V[:, 2 + nk:]
        names = list(FEATURES)
        if by_kind:
            _, ks, nc, oh = fit_network_model_by_kind(K, list(kinds) + ["other"], F, y, NET_FEATURES, shrink)
            kscale = np.array([ks[k] for k in list(kinds) + ["other"]])
        else:
            sc, nc, oh = fit_network_model(V[:, 0], F, y, NET_FEATURES)
            kscale = np.full(nk + 1, sc)
        term = cls(kinds, kscale, nc, oh, fitted_on=dict(fitted_on or {}, by_kind=by_kind, residual=residual,
                                                         in_network_features=[n for n in names if n in NET_FEATURES]))
        if residual == "none":
            return term
        from sklearn.linear_model import RidgeCV

        Z = term.design(V)
        r = np.log(y / term.linear(V))
        mu, sd = Z.mean(0), Z.std(0)
        sd[sd < 1e-9] = np.inf  # a constant column gets weight 0
        ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit((Z - mu) / sd, r)
        term.weights = np.where(np.isfinite(ridge.coef_ / sd), ridge.coef_ / sd, 0.0)
        term.intercept = float(ridge.intercept_ - (mu * term.weights).sum())
        term.fitted_on["ridge_alpha"] = float(ridge.alpha_)
        if residual == "trees":
            from sklearn.ensemble import HistGradientBoostingRegressor

            left = r - (term.intercept + rowdot(Z, term.weights))
            gbm = HistGradientBoostingRegressor(max_iter=trees, learning_rate=0.05, max_leaf_nodes=6, max_depth=3,
                                                min_samples_leaf=10, l2_regularization=1.0, random_state=seed,
                                                early_stopping=False).fit(Z, left)
            term.trees = TreeResidual.from_sklearn(gbm, Z)
            term.fitted_on["trees"] = trees
        elif residual != "ridge":
            raise ValueError(f"residual: got {residual!r}; allowed: none, ridge, trees")
        return term

    def to_dict(self) -> dict[str, Any]:
        g = lambda x: float(f"{x:.12g}")  # noqa: E731
        return {"kind": "network-term", "kinds": self.kinds, "kind_scale": [g(x) for x in self.kind_scale],
                "coefs": [g(x) for x in self.coefs], "overhead_ms": g(self.overhead_ms),
                "intercept": g(self.intercept),
                **({"weights": [g(x) for x in self.weights]} if self.weights is not None else {}),
                **({"trees": self.trees.to_dict()} if self.trees is not None else {}),
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "NetworkTerm":
        if not isinstance(d, dict) or d.get("kind") != "network-term":
            got = d.get("kind") if isinstance(d, dict) else type(d).__name__
            raise TargetError(f"{where}.kind: got {got!r}; allowed: network-term")
        kinds = d.get("kinds")
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise TargetError(f"{where}.kinds: got {kinds!r}; allowed: a list of layer kinds")

        def numbers(field: str, n: int | None, nonneg: bool, required: bool = True):
            v = d.get(field)
            if v is None and not required:
                return None
            one = not isinstance(v, list)
            vals = [v] if one else v
            ok = (all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
                      and (x >= 0 or not nonneg) for x in vals) and (n is None and one or not one and len(vals) == n))
            if not ok:
                what = (f"{n} finite" if n is not None else "a finite") + (" non-negative" if nonneg else "")
                raise TargetError(f"{where}.{field}: got {v!r:.60}; allowed: {what} number{'s' if n else ''}")
            return np.array(vals, float) if not one else float(vals[0])

        ks = numbers("kind_scale", len(kinds) + 1, True)
        coefs = numbers("coefs", N_FEATURES, True)
        oh = numbers("overhead_ms", None, True)
        b = numbers("intercept", None, False)
        w = numbers("weights", 2 + len(kinds) + 2 * N_FEATURES, False, required=False)
        trees = TreeResidual.from_dict(d["trees"], f"{where}.trees") if d.get("trees") is not None else None
        return cls(kinds, ks, coefs, oh, b, w, trees, d.get("fitted_on") or {})
