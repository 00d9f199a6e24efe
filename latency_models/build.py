"""Measure this machine and write a target measured here: ``local-cpu`` (ONNX Runtime) or
``local-tflite`` (LiteRT with XNNPACK, the phone's kernels run on this CPU).

    python -m latency_models.build --target local-cpu [--space mobile-unified]
        [--backend onnxruntime|torch] [--threads 1] [--blocks 400] [--nets 12] [--passes 3]
    python -m latency_models.build --target local-tflite --blocks 120 --nets 8 --zoo none --passes 2

1. Design: sample ``--pool`` archs of the space (seeded), collect the distinct layers (stem, blocks,
   head) they meet at each ``--resolutions``, plus every layer of the zoo networks (``--zoo``), and
   choose ``--blocks`` of the space's layers stratified by (kind, input size, stride, kernel,
   activation, SE), round robin over strata.  Whole networks: the zoo networks and ``--nets``
   other random archs of the space.
2. Measure (``latency_models.profile``): each pass runs in a fresh process and times every item
   against the reference block; results are appended to a partial file as they come, so a killed
   build resumes where it stopped.  A layer's cost is the minimum over passes of its relative cost,
   minus the cost of one backend call, times the reference's median time.
3. Fit the per-kind regressors on the measured layers (held-out: a seeded 20% of layers), the
   network terms (scale, overhead) on the zoo networks, and judge whole-network error on the
   random archs (not fitted on).  Write the target file with how it was made and the drift seen.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from latency_models.features import ALIGN, PW_ALIGNS, SCALE, features_many, layer_features, pw_align_of
from latency_models.fitting import error_stats
from latency_models.model import LatencyModel
from latency_models.predictor import (NET_FEATURES, TreeResidual, fit_network_model, fit_network_model_by_kind,
                                      fit_predictor)
from latency_models.profile import (BACKENDS, MIN_RESOLUTION, REFERENCE, cache_dir, check_at_least, check_positive,
                                    check_timing_options, machine_info, measure_items, runtime_version)
from latency_models.table import Entry, LatencyTable
from search_space.arch import signatures
from search_space.errors import EdgenasError, OneLineParser, TargetError, cli_entry, field_error

REPO = Path(__file__).resolve().parents[1]
BUILDABLE = {"local-cpu": "onnxruntime", "local-tflite": "tflite"}  # target -> default backend
# the residual forest: 60 trees of depth <= 4 price a new layer ~10x faster than 200 unbounded ones
# (the search's inner loop pays it per new layer) at the same held-out layer error (8.6-10.0% vs
# 8.7-9.2% MAPE over three 80/20 splits of the 978 layers of the 2026-11-29 build; linear alone 13-16%)
TREES = {"trees": 60, "depth": 4, "learning_rate": 0.2}


def _stratum(sig) -> tuple:
    s = sig.spec
    if sig.kind == "stem":
        return (sig.kind, sig.h, s.kernel, s.act, s.pool)
    if sig.kind == "head":
        return (sig.kind, sig.h, s.last_ch > 0, s.hidden_ch > 0, s.act)
    return (sig.kind, sig.h, s.stride, s.kernel, s.act, s.se_ch > 0)


def design(space, resolutions: list[int], n_blocks: int, n_nets: int, pool: int, seed: int,
           zoo_mode: str = "all", net_max_mmacs: float = 0.0) -> tuple[list, list]:
    """(layer signatures, (arch, resolution, label) networks) to measure; random networks above
    ``net_max_mmacs`` million MACs (when > 0) are sampled again (slow converters, e.g. LiteRT)."""
    from search_space import zoo

    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(pool)]
    must: dict[str, Any] = {}
    if zoo_mode != "none":
        names = ([f"{n}@{w}" for n, w in space.zoo_entries()] if zoo_mode == "space"
                 else [f"{n}@1.0" for n in zoo.names()])
        zoo_archs = [(zoo.get(n.split("@")[0], float(n.split("@")[1])), n) for n in names]
    else:
        zoo_archs = []
    for a, _ in zoo_archs:
        for r in resolutions:
            for s in signatures(a, r):
                must.setdefault(s.key, s)
    strata: dict[tuple, dict[str, Any]] = defaultdict(dict)
    for a in archs:
        for r in resolutions:
            for s in signatures(a, r):
                k = s.key
                if k in must:
                    continue
                strata[_stratum(s)][k] = s  # stems too: a space may hold hundreds of them
    chosen: dict[str, Any] = {}
    lists = {st: sorted(d.items()) for st, d in sorted(strata.items(), key=lambda kv: str(kv[0]))}
    for st in lists:
        rng.shuffle(lists[st])
    while len(chosen) < n_blocks and any(lists.values()):
        order = list(lists)
        rng.shuffle(order)  # every stratum gets a fair chance when there are more strata than blocks
        for st in order:
            if lists[st] and len(chosen) < n_blocks:
                k, s = lists[st].pop()
                chosen[k] = s
    layers = list(must.values()) + list(chosen.values())
    nets = [(a, resolutions[-1], label) for a, label in zoo_archs]
    net_rng = random.Random(seed + 1)
    from search_space.profile import profile

    for i in range(n_nets):
        for _ in range(1000):
            a = space.sample(net_rng)
            if net_max_mmacs <= 0 or profile(a, resolutions[-1])["macs"] <= 1e6 * net_max_mmacs:
                break
        nets.append((a, resolutions[-1], f"{space.name}#{i}"))
    return layers, nets


def _read_partial(path: Path) -> list[dict]:
    """Rows of a partial file; a last line cut short by a kill is dropped (and cut from the file)."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise TargetError(f"{path}: corrupt line {i + 1}; delete the file to start over") from None
            path.write_text("".join(line + "\n" for line in lines[:-1]))
    if text and not text.endswith("\n") and len(rows) == len(lines):
        path.write_text(text + "\n")
    return rows


def measure(items: list[tuple[str, Any, str]], partial: Path, passes: int, backend: str, threads: int,
            rounds: int, deadline: float, chunk: int = 8, log=print) -> list[dict]:
    """Run the passes, appending to ``partial``; returns every measurement row (old and new)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm import tqdm

    rows = _read_partial(partial)
    done = {(r["pass"], r["key"]) for r in rows}
    total = passes * len(items)
    bar = tqdm(total=total, initial=sum(1 for p in range(passes) for _, _, k in items if (p, k) in done),
               desc="measuring", unit="item", file=sys.stderr)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a") as fh:
        for p in range(passes):
            todo = [(kind, item) for kind, item, key in items if (p, key) not in done]
            if not todo:
                continue
            if time.time() > deadline:
                log(f"time limit reached: pass {p + 1} of {passes} not measured")
                break
            with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:  # a fresh process per pass
                for i in range(0, len(todo), chunk):
                    if time.time() > deadline:
                        log(f"time limit reached during pass {p + 1}")
                        break
                    res = ex.submit(measure_items, todo[i:i + chunk], backend, threads, rounds).result()
                    for r in res:
                        r["pass"] = p
                        fh.write(json.dumps(r) + "\n")
                        rows.append(r)
                    fh.flush()
                    bar.update(len(res))
    bar.close()
    return rows


def aggregate(rows: list[dict]) -> dict[str, Any]:
    """Min over passes of each key's relative cost; the reference's absolute time and drift."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r)
    refs = [r["ref_ms"] for r in rows]
    ref_ms = statistics.median(refs)
    per_pass = defaultdict(list)
    for r in rows:
        per_pass[r["pass"]].append(r["ref_ms"])
    pass_meds = [statistics.median(v) for _, v in sorted(per_pass.items())]
    q05, q95 = np.percentile(refs, [5, 95])
    drift = {"reference_ms_median": round(ref_ms, 4), "reference_ms_p5_p95": [round(q05, 4), round(q95, 4)],
             "reference_ms_per_pass": [round(x, 4) for x in pass_meds],
             "spread_p5_p95_pct": round(100 * (q95 - q05) / ref_ms, 1)}
    best = {}
    for k, rs in by_key.items():
        b = min(rs, key=lambda r: r["rel"])
        best[k] = {"rel": b["rel"], "spread": b["spread"], "n": sum(r["n"] for r in rs), "passes": len(rs)}
    null_rel = best.pop("null", {"rel": 0.0})["rel"]
    return {"best": best, "ref_ms": ref_ms, "null_rel": null_rel, "drift": drift}


def measured_items(rows: list[dict]) -> tuple[list, list]:
    """(layer signatures, (arch, resolution, label) networks) of the measurement rows, from their keys
    alone (``signature_from_key``, ``Arch.from_string``): a refit needs no design, so a change of
    the space's sampling since the measurements cannot lose any of them."""
    from search_space.arch import Arch, signature_from_key

    layers, nets, seen = [], [], set()
    for r in rows:
        k = r["key"]
        if k in seen or r["kind"] == "null":
            continue
        seen.add(k)
        if r["kind"] == "layer":
            layers.append(signature_from_key(k))
        elif r["kind"] == "net":
            text, _, res = k.rpartition("@")
            nets.append((Arch.from_string(text), int(res), k))
    return layers, nets


def repo_path(p) -> Path:
    """A path as given, or, when it is relative and not found from here, relative to the repository
    (target files record their measurement files repo-relative)."""
    p = Path(p)
    return p if p.is_absolute() or p.exists() else REPO / p


def partial_paths(spec: str, field: str = "--partial",
                  allowed: str = "the target's measurements file(s)") -> list[Path]:
    """The measurement files of a comma-separated list (as given, else repository-relative); a
    missing or repeated one is an error naming it."""
    paths = [repo_path(x.strip()) for x in str(spec).split(",") if x.strip()]
    if not paths:
        raise TargetError(f"{field}: empty; allowed: one or more measurement files, comma-separated")
    seen = set()
    for path in paths:
        if not path.is_file():
            raise TargetError(f"{field}: {path} does not exist; allowed: {allowed}")
        if path.resolve() in seen:
            raise TargetError(f"{field}: {path} is named twice; allowed: each file once")
        seen.add(path.resolve())
    return paths


def combine_partials(per_file: list[list[dict]]) -> list[dict]:
    """The rows of several partial files (``_read_partial`` of each, in order); a later file's rows of
    a key replace every earlier file's rows of that key (a file measured later re-measures those
    items: one session's conditions for each layer, never a minimum across sessions).  Every file's
    call-overhead (``null``) row is kept: ``aggregate`` takes the smallest."""
    kept: list[list[dict]] = []
    later: set = set()
    for rows in reversed(per_file):
        kept.append([r for r in rows if r["key"] not in later])
        later |= {r["key"] for r in rows if r["kind"] != "null"}
    return [r for rows in reversed(kept) for r in rows]


def _repo_rel(path: Path) -> str:
    return str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def refit(target_file: Path, partials: list[Path], out: Path, seed: int = 0, save: bool = True,
          old: dict | None = None, pw_align: int | None = None) -> LatencyModel:
    """Fit ``target_file``'s measurements (its partial file(s): the build's, plus any layers measured
    later with ``--measure-layers-of``) again with this version's model, keeping how they were made
    (meta); the target's error is recomputed.  ``save=False``: only return it (the CLI saves once,
    after the network term, so a failed step never leaves a half-made target).  ``pw_align``: the layer
    features' 1x1 channel flag (``features.PW_ALIGNS``; default: the file's ``meta.pw_align``, else 8)."""
    old = old or LatencyModel.read_file(target_file)  # its meta and error: the predictor is fitted anew
    pw_align_of(old.get("meta") or {}, f"{target_file}: meta")  # a bad value named before anything is read
    per_file = [_read_partial(Path(p)) for p in partials]
    rows = combine_partials(per_file)
    if not rows:
        raise TargetError(f"--partial {','.join(map(str, partials))}: no measurements")
    layers, nets = measured_items(rows)
    agg = aggregate(rows)
    where = ",".join(_repo_rel(Path(p)) for p in partials)
    old_meta, old_error = old.get("meta") or {}, old.get("error") or {}
    old_meta = {k: v for k, v in old_meta.items() if k != "calibration"}   # a refit is of the measurements, not of a day
    meta = dict(old_meta, refit={"date": _dt.datetime.now().isoformat(timespec="seconds"),
                                 "from": where, "rows": len(rows),
                                 "made_by": "python -m latency_models.build " + " ".join(sys.argv[1:])})
    meta["measurements"] = dict(old_meta.get("measurements", {}), partial_file=where, rows=len(rows))
    if pw_align is not None:
        meta["pw_align"] = pw_align
    if len(partials) > 1:  # the table's time scale is the pooled files' (``aggregate``): the meta says so
        meta["reference"] = dict(old_meta.get("reference", {}), ms=round(agg["ref_ms"], 4))
        meta["drift"] = agg["drift"]
        meta["call_overhead_ms"] = round(agg["null_rel"] * agg["ref_ms"], 4)
        meta["repeats"] = dict(old_meta.get("repeats", {}), passes_per_file={
            _repo_rel(Path(p)): len({r["pass"] for r in got}) for p, got in zip(partials, per_file)})
    model = fit_target(layers, nets, agg, meta, seed=seed, name=old["target"])
    if "error_sources" in old_error:  # what was found about the measurements themselves (at the build)
        model.error["error_sources"] = dict(old_error["error_sources"], **({"as_of": (
            "the build's measurements (its own layers and passes); the layer figures of this file are in "
            "layers_held_out")} if len(partials) > 1 else {}))
    if save:
        model.save(out)
    return model


def fit_layer_regressor(kinds, X: np.ndarray, y: np.ndarray, seed: int, trees: bool, min_rows: int = 15):
    """The per-kind regressor on measured layers (rows ``X``, ms ``y``), with the residual forest
    (``TREES``) when ``trees``."""
    predictor = fit_predictor(kinds, X, y, min_rows=min_rows, fitted_on={"measured_layers": len(y)})
    if trees:
        predictor.residual = TreeResidual.fit(kinds, X, predictor.predict_rows(kinds, X), y, seed, **TREES)
    return predictor


def fit_target(layers, nets, agg, meta: dict, min_rows: int = 15, seed: int = 0,
               name: str = "local-cpu", network_model: str = "common") -> LatencyModel:
    best, ref_ms, null_rel = agg["best"], agg["ref_ms"], agg["null_rel"]
    align = pw_align_of(meta, "build: meta")
    entries, kinds, X, y = {}, [], [], []
    for s in layers:
        k = s.key
        if k not in best:
            continue
        b = best[k]
        ms = max(1e-4, (b["rel"] - null_rel) * ref_ms)
        entries[k] = Entry(ms, b["spread"] * ms, b["n"])
        kinds.append(s.kind)
        X.append(layer_features(s, align))
        y.append(ms)
    if len(y) < 3:
        raise TargetError("build: fewer than 3 layers measured; run it again (it resumes) or raise --blocks")
    X, y = np.array(X), np.array(y)
    # held-out layers: a seeded 20%
    idx = list(range(len(y)))
    random.Random(seed).shuffle(idx)
    n_held = max(1, len(idx) // 5)
    held, train = idx[:n_held], idx[n_held:]
    kt, kh = [kinds[i] for i in train], [kinds[i] for i in held]
    p_train = fit_predictor(kt, X[train], y[train], min_rows=min_rows)
    linear_err = error_stats(p_train.predict_rows(kh, X[held]), y[held])
    use_trees = len(y) >= 50
    if use_trees:
        p_train.residual = TreeResidual.fit(kt, X[train], p_train.predict_rows(kt, X[train]), y[train], seed, **TREES)
    layer_err = error_stats(p_train.predict_rows(kh, X[held]), y[held])
    if use_trees and layer_err["mape_pct"] >= linear_err["mape_pct"]:  # the forest must earn its place
        use_trees, layer_err = False, dict(linear_err, note="residual forest not used: no better on held-out layers "
                                            f"({layer_err['mape_pct']}% with it)")
    predictor = fit_layer_regressor(kinds, X, y, seed, use_trees, min_rows)
    table = LatencyTable(entries)
    model = LatencyModel(name, table, predictor, meta)
    # in-network terms: fitted on all measured networks; error by leave-one-network-out
    measured = []
    for a, r, label in nets:
        key = f"{a.to_string()}@{r}"
        if key in best:
            measured.append((a, r, label, best[key]["rel"] * ref_ms))
    error: dict[str, Any] = {"layers_held_out": {"split": f"random.Random({seed}) 20% of measured layers",
                                                 **layer_err},
                             "layers_held_out_linear_only": linear_err}
    if len(measured) >= 3:
        sums = np.array([model.predict(a, r) for a, r, _, _ in measured])
        feats = np.array([np.sum([layer_features(s, align) for s in signatures(a, r)], axis=0)
                          for a, r, _, _ in measured])
        true = np.array([m[3] for m in measured])
        kinds_all = sorted({s.kind for a, r, _, _ in measured for s in signatures(a, r)})
        ksums = np.zeros((len(measured), len(kinds_all)))
        for i, (a, r, _, _) in enumerate(measured):
            for s, (_, ms) in zip(signatures(a, r), model.breakdown(a, r)):
                ksums[i, kinds_all.index(s.kind)] += ms

        def fit_net(keep):
            if network_model == "kind":
                return fit_network_model_by_kind(ksums[keep], kinds_all, feats[keep], true[keep])
            sc, nc, oh = fit_network_model(sums[keep], feats[keep], true[keep])
            return sc, {}, nc, oh

        def net_pred(i, fitted):
            sc, ks, nc, oh = fitted
            scale = np.array([ks.get(k, sc) for k in kinds_all]) if ks else np.full(len(kinds_all), sc)
            return float(ksums[i] @ scale) + float((feats[i] * SCALE) @ nc) + oh

        loo = [net_pred(i, fit_net([j for j in range(len(measured)) if j != i])) for i in range(len(measured))]
        error["network_model"] = {"kind": "per-kind in-network scale (shrunk to a common one)" if network_model == "kind"
                                  else "one in-network scale", "terms": "scale x layers + " + ", ".join(NET_FEATURES)
                                  + " + overhead_ms"}
        error["networks_leave_one_out"] = error_stats(loo, true)
        error["networks_without_in_network_terms"] = error_stats(sums, true)
        sc, ks, nc, oh = fit_net(list(range(len(measured))))
        predictor.scale, predictor.kind_scale, predictor.net_coef, predictor.overhead_ms = sc, ks, nc, oh
        predictor.fitted_on["measured_networks"] = len(measured)
        model = LatencyModel(name, table, predictor, meta)
        error["networks_fitted"] = error_stats(model.predict_many([m[0] for m in measured], measured[0][1]), true)
    error["note"] = ("measured here, relative to the reference block; `python -m latency_models.validate "
                     f"--target {name}` re-measures fresh random archs")
    model.error = error
    return model


# candidate network terms (by_kind, residual, boosting rounds), chosen by cross-validation over the measured
# networks (on the 350 quiet networks of 2026-11-29, 5-fold CV within +/-10%, 978 table layers: 50 rounds 86.3%,
# 200 88.6%; with the 7,579 layers of session 5 and --crossfit: 86.0% / 89.1%, see the target's error.network_term)
NET_CANDIDATES = ((False, "none", 0), (True, "none", 0), (True, "ridge", 0), (True, "trees", 50),
                  (True, "trees", 200))
CV_FOLDS = 5


NETWORK_TIMES = ("own", "build")  # what a network term is fitted on (``fit_network_term``'s ``time``)


def read_networks(path: Path, ref_ms: float | None = None, resolution: int = 224) -> tuple[list, np.ndarray, list[str]]:
    """(archs, measured ms, labels) of a ``latency_models.measure_nets`` file: each network's own
    median time (thread CPU time at one thread) when ``ref_ms`` is None, else its cost relative to
    the reference block x ``ref_ms`` (the build's time scale).  On the 250 networks of
    2026-11-29 the relative figure was the noisier (5-fold CV of the network term 79% within
    +/-10% against 87% on the networks' own times): under load the 1 ms reference block slowed by
    up to 10% more than whole networks did, and the ratio carries that into every network."""
    from latency_models.measure_nets import one_runtime, read_rows
    from search_space.arch import Arch

    rows = read_rows(path)
    one_runtime(rows, path)
    rows = [r for r in rows if int(r.get("resolution", 224)) == resolution]
    if not rows:
        raise TargetError(f"--networks {path}: no measured networks at {resolution}; allowed: a file written by "
                          "python -m latency_models.measure_nets")
    try:
        archs = [Arch.from_string(r["arch"]) for r in rows]
        ms = np.array([float(r["ms"]) if ref_ms is None else float(r["rel"]) * ref_ms for r in rows])
    except (KeyError, TypeError, ValueError) as exc:
        raise TargetError(f"--networks {path}: not a measure_nets file ({type(exc).__name__}: {exc})") from None
    return archs, ms, [f"{r.get('space')}#{r.get('seed')}/{r.get('index')}" for r in rows]


def read_networks_files(spec: str, resolution: int = 224, ref_ms: float | None = None) -> tuple[list, np.ndarray, str]:
    """``read_networks`` of each file of a comma-separated list (own times, or with ``ref_ms`` each
    network's relative cost x ``ref_ms``), joined; and the list as the target's meta records it
    (paths relative to the repository).  A network measured in two files is an error: its copies
    would sit on both sides of the term's cross-validation."""
    paths = partial_paths(spec, "--networks", "latency_models.measure_nets files, comma-separated")
    archs, ms, seen = [], [], {}
    for path in paths:
        a, m, _ = read_networks(path, ref_ms, resolution)
        for x in a:
            key = x.to_string()
            if key in seen:
                raise TargetError(f"--networks: {key[:60]}... is measured in {seen[key]} and again in {path}; "
                                  "allowed: each network in one file")
            seen[key] = path
        archs += a
        ms.append(m)
    return archs, np.concatenate(ms), ",".join(_repo_rel(p) for p in paths)


def _has_validation_rows(source: str) -> bool:
    """Whether any measure_nets file of ``source`` (comma-separated) holds rows written from saved
    validation measurements (``measure_nets --from-validation``: each such row names its ``from``)."""
    from latency_models.measure_nets import read_rows

    for p in str(source).split(","):
        path = repo_path(p.strip())
        if p.strip() and path.is_file() and any("from" in r for r in read_rows(path)):
            return True
    return False


def _label(by_kind: bool, residual: str, rounds: int = 0) -> str:
    return (("per-kind scale" if by_kind else "one scale") + ("" if residual == "none" else f" + {residual}")
            + (f" x{rounds}" if residual == "trees" and rounds != 50 else ""))


def _as_saved(predictor, where: str):
    """``predictor`` as a target file holds it (coefficients rounded on saving)."""
    from latency_models.predictor import Predictor

    return Predictor.from_dict(json.loads(json.dumps(predictor.to_dict())), where)


def _crossfit_inputs(model: LatencyModel, p, archs: list, resolution: int, folds, seed: int) -> np.ndarray:
    """Summed layer vectors of each fold's networks priced as a fresh arch is: by a model whose table
    and regressor never saw that fold's networks' layers (``p``: the pricing setup, identity term)."""
    from search_space.arch import signature_from_key

    entries = model.table.entries
    trees = model.predictor.residual is not None
    keys = list(entries)  # every table layer's signature and features once, not once per fold
    sigs = [signature_from_key(k) for k in keys]
    X_all, y_all = features_many(sigs, model.pw_align), np.array([entries[k].ms for k in keys])
    Vx = np.zeros((len(archs), p.network_term.width))
    for _, te in folds:
        hold = {s.key for i in te for s in signatures(archs[i], resolution)}
        rows = np.array([k not in hold for k in keys])
        keep = {k: entries[k] for k, r in zip(keys, rows) if r}
        q = fit_layer_regressor([s.kind for s, r in zip(sigs, rows) if r], X_all[rows], y_all[rows], seed, trees)
        q = _as_saved(q, "cross-fit")
        q.network_term = p.network_term
        m = LatencyModel(model.name, LatencyTable(keep), q, model.meta)
        Vx[te] = m.network_inputs([archs[i] for i in te], resolution)
    return Vx


def fit_network_term(model: LatencyModel, archs: list, measured: np.ndarray, source: str, seed: int = 0,
                     resolution: int = 224, log=print, time: str = "own", crossfit: bool = False) -> LatencyModel:
    """Replace ``model``'s in-network terms by a ``NetworkTerm`` fitted on whole networks measured
    end-to-end (``archs``, ``measured`` ms; see ``predictor.NetworkTerm``).  Which form (one or
    per-kind scale, residual correction none / ridge / ridge + trees) is chosen by
    ``CV_FOLDS``-fold cross-validation over the networks (seeded; the share within +/-10% first,
    then MAPE); the figures go into ``error.network_term``.  ``time``: what ``measured`` is, 'own'
    (each network's own median time, ``read_networks(path)``) or 'build' (relative to the
    reference block, in the build's time scale); validate scores the model on the same.
    ``crossfit``: the cross-validation prices each held-out fold's networks with layers cross-fitted
    (``_crossfit_inputs``: table and regressor without that fold's layers, as for a fresh arch), and
    the candidates are fitted either on table-priced or on cross-fitted layer costs (twice the forms)."""
    from sklearn.model_selection import KFold

    from latency_models.predictor import NetworkTerm

    if len(archs) < CV_FOLDS:
        raise TargetError(f"--networks {source}: {len(archs)} measured networks at {resolution}; allowed: at least "
                          f"{CV_FOLDS} (the network term is chosen by {CV_FOLDS}-fold cross-validation)")

    # the layer model as the target file will hold it (coefficients rounded on saving): the term is
    # fitted on, and its figures computed from, the layer costs a loaded model computes
    p = _as_saved(model.predictor, "refit")
    p.scale, p.kind_scale, p.net_coef, p.overhead_ms = 1.0, {}, np.zeros_like(p.net_coef), 0.0
    kinds = sorted(set(p.fitted_on.get("layers", {})) | {"stem", "head"})
    p.network_term = NetworkTerm.identity(kinds)
    base = LatencyModel(model.name, model.table, p, model.meta, model.error, model.path)
    V = base.network_inputs(archs, resolution)
    S = V[:, 0]
    cv: dict[str, Any] = {"plain layer sum (no term)": error_stats(S, measured)}
    folds = list(KFold(CV_FOLDS, shuffle=True, random_state=seed).split(V))
    Vx = _crossfit_inputs(model, p, archs, resolution, folds, seed) if crossfit else V
    if crossfit:
        cv["plain layer sum, cross-fitted layers"] = error_stats(Vx[:, 0], measured)
    regimes = {"table": V, "cross-fitted": Vx} if crossfit else {"table": V}
    best = None
    for regime, Vr in regimes.items():
        for by_kind, residual, rounds in NET_CANDIDATES:
            pred = np.zeros(len(S))
            kw = {"trees": rounds} if residual == "trees" else {}
            for tr, te in folds:
                pred[te] = NetworkTerm.fit(kinds, Vr[tr], measured[tr], by_kind, residual, seed=seed,
                                           **kw).predict(Vx[te])
            e = error_stats(pred, measured)
            label = _label(by_kind, residual, rounds) + ("" if regime == "table" or not crossfit
                                                         else ", fitted on cross-fitted layers")
            cv[label] = e
            log(f"  network term {label:28s} {CV_FOLDS}-fold CV: MAPE {e['mape_pct']}%, within "
                f"10% {e['within_10pct']:.1%}, max {e['max_err_pct']}%, Spearman {e['spearman']}")
            if best is None or (e["within_10pct"], -e["mape_pct"]) > (best[4]["within_10pct"], -best[4]["mape_pct"]):
                best = (regime, by_kind, residual, rounds, e, label)
    regime, by_kind, residual, rounds, _, chosen = best
    kw = {"trees": rounds} if residual == "trees" else {}
    extra = {"layers": regime, "cv_held_out_layers": "cross-fitted"} if crossfit else {}
    p.network_term = NetworkTerm.fit(kinds, regimes[regime], measured, by_kind, residual, seed=seed, **kw,
                                     fitted_on={"networks": len(S), "from": source, "time": time, **extra})
    p.fitted_on["network_term_networks"] = len(S)
    p = _as_saved(p, "refit")
    out = LatencyModel(model.name, model.table, p, model.meta, model.error, model.path)
    fitted = out.predict_many(archs, resolution)
    err = dict(model.error)
    for k in ("network_model", "networks_leave_one_out", "networks_without_in_network_terms", "networks_fitted"):
        err.pop(k, None)
    err["network_term"] = {
        "how": (f"predictor.NetworkTerm ({chosen}) fitted on {len(S)} whole networks measured "
                f"end-to-end ({source}; "
                + ("never the zoo networks; the validation archs only of the sets in those files (rows written by "
                   "measure_nets --from-validation: no longer fresh)" if _has_validation_rows(source)
                   else "never the validation archs or the zoo networks")
                + "); the form chosen by "
                f"{CV_FOLDS}-fold cross-validation over them"
                + (" (held-out networks priced with cross-fitted layers, as a fresh arch is)" if crossfit else "")),
        "cross_validation": {"folds": CV_FOLDS, "seed": seed, **cv, "chosen": chosen},
        "fitted": error_stats(fitted, measured)}
    out.error = err
    return out


def measure_network_layers(args) -> int:
    """``--measure-layers-of``: the distinct layers (stem, blocks, head at their input shapes) of
    the measured networks in ``args.measure_layers_of`` that the target file (``--refit`` if given,
    else the shipped one) has no table entry for, measured with the build's protocol into
    ``--partial``.  Such layers come from random archs of the space (the networks the search
    prices), not from the build's stratified design: the regressor learns the layers it will meet."""
    if not args.partial:
        raise TargetError("--partial: required with --measure-layers-of; allowed: a new or resumable .jsonl file")
    target_file = repo_path(args.refit or REPO / "latency_models" / "targets" / f"{args.target}.json")
    model = LatencyModel.from_file(target_file)
    partial = Path(args.partial)
    backend = model.meta.get("runtime", BUILDABLE.get(model.name, "onnxruntime"))  # timed as the table was
    threads = int(model.meta.get("threads", args.threads))
    if args.measure_layers_of == "table":  # every layer of the table again, in this session's conditions
        from search_space.arch import signature_from_key

        layers = [signature_from_key(k) for k in sorted(model.table.entries)]
        what = f"{len(layers)} layers of {target_file.name}'s table, again"
    else:
        layers, n_nets = _layers_missing(model, repo_path(args.measure_layers_of), backend, threads)
        what = f"{len(layers)} layers of {n_nets} networks not in {target_file.name}'s table"
    print(f"{what}; partial file {partial}")
    measure([("null", None, "null")] + [("layer", s, s.key) for s in layers], partial, args.passes, backend,
            threads, args.rounds, time.time() + 60 * args.max_minutes)
    print(f"then: python -m latency_models.build --refit {_repo_rel(target_file)} --partial "
          f"{model.meta.get('measurements', {}).get('partial_file', '<its measurements>')},{_repo_rel(partial)}")
    return 0


def _layers_missing(model: LatencyModel, src: Path, backend: str, threads: int) -> tuple[list, int]:
    """The distinct layers of the networks of measure_nets file ``src`` that ``model``'s table lacks,
    and how many networks the file holds (one runtime, ``backend`` x ``threads``)."""
    from latency_models.measure_nets import one_runtime, read_rows
    from search_space.arch import Arch

    if not src.is_file():
        raise TargetError(f"--measure-layers-of: {src} does not exist; allowed: a latency_models.measure_nets file "
                          "or 'table'")
    rows = read_rows(src)
    if not rows:
        raise TargetError(f"--measure-layers-of {src}: no networks; allowed: a latency_models.measure_nets file")
    one_runtime(rows, src, backend, threads)
    seen, layers = set(model.table.entries), []
    for line, r in enumerate(rows, 1):
        try:
            arch = Arch.from_string(r["arch"])
        except (KeyError, TypeError, EdgenasError) as exc:
            raise TargetError(f"--measure-layers-of {src}:{line}: not a measure_nets row "
                              f"({type(exc).__name__}: {exc})") from None
        for s in signatures(arch, int(r.get("resolution", 224))):
            if s.key not in seen:
                seen.add(s.key)
                layers.append(s)
    return layers, len(rows)


@cli_entry
def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m latency_models.build",
                       description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--space", default="mobile-unified")
    ap.add_argument("--backend", default=None, help="default: the target's (local-cpu onnxruntime, "
                    "local-tflite tflite)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resolutions", default="224", help="comma-separated input resolutions")
    ap.add_argument("--blocks", type=int, default=400, help="layers of the space to measure")
    ap.add_argument("--nets", type=int, default=12, help="random whole networks to measure")
    ap.add_argument("--pool", type=int, default=1000, help="archs sampled to find the space's layers")
    ap.add_argument("--zoo", default="all", choices=("all", "space", "none"), help="zoo layers/networks to measure")
    ap.add_argument("--net-max-mmacs", type=float, default=0.0, help="random networks above this many million "
                    "MACs are sampled again (0: no limit)")
    ap.add_argument("--passes", type=int, default=3, help="fresh processes; min of medians over them")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=30.0)
    ap.add_argument("--out", default=None, help="target file (default latency_models/targets/<target>.json)")
    ap.add_argument("--partial", default=None, help="resumable measurements (default in the cache dir)")
    ap.add_argument("--fresh", action="store_true", help="discard earlier partial measurements")
    ap.add_argument("--networks", default=None, help="with --refit: fit the network term on these whole networks "
                    "(latency_models.measure_nets files, comma-separated; default: the target's meta.network_term_from, if any)")
    ap.add_argument("--network-time", choices=NETWORK_TIMES, default=None, help="with --refit: the time the network "
                    "term is fitted on (and validate scores on): 'own', each network's median time when measured, or "
                    "'build', its cost relative to the reference block x the target's reference ms, which cancels "
                    "the machine's speed drift between measurements (default: the target's meta.network_term_time, "
                    "else 'own')")
    ap.add_argument("--refit", default=None, metavar="TARGET_FILE", help="measure nothing: fit this target's "
                    "measurements (--partial, default its meta's) again with this version's model, into --out "
                    "(with --measure-layers-of: the target whose table is read)")
    ap.add_argument("--crossfit", action=argparse.BooleanOptionalAction, default=None, help="with --refit: choose "
                    "the network term by a cross-validation that prices held-out networks with cross-fitted layers, "
                    "as fresh archs are (default: the target's meta.network_term_crossfit)")
    ap.add_argument("--pw-align", type=int, choices=PW_ALIGNS, default=None, help="the layer features' 1x1 "
                    "channel flag: 1x1 MACs on channel counts not a multiple of this are a feature of their own "
                    "(16: ONNX Runtime's NCHWc block with AVX-512; default 8 for a new build, the target's "
                    "meta.pw_align, else 8, for --refit)")
    ap.add_argument("--measure-layers-of", default=None, metavar="NETWORKS_FILE", help="measure the layers of these "
                    "networks (a latency_models.measure_nets file) that the target's table lacks, into --partial "
                    "(resumable), or 'table': every layer of its table again; then fit them in with --refit TARGET_FILE "
                    "--partial <its files>,<this one> (a later file's measurement of a layer replaces an earlier one)")
    args = ap.parse_args(argv)
    # every count is checked before anything is measured or written (the default --out is a shipped target)
    check_timing_options(args.threads, args.rounds)
    check_at_least("--passes", args.passes, 1)
    check_at_least("--blocks", args.blocks, 0)
    check_at_least("--nets", args.nets, 0)
    check_at_least("--pool", args.pool, 1)
    check_positive("--max-minutes", args.max_minutes)
    if not args.net_max_mmacs >= 0:
        raise field_error(TargetError, "--net-max-mmacs", args.net_max_mmacs, "a number >= 0 (0: no limit)")
    try:
        resolutions = sorted({int(x) for x in args.resolutions.split(",")})
    except ValueError:
        raise field_error(TargetError, "--resolutions", args.resolutions, "comma-separated integers") from None
    if min(resolutions) < MIN_RESOLUTION:
        raise field_error(TargetError, "--resolutions", args.resolutions,
                          f"comma-separated integers >= {MIN_RESOLUTION}")
    if args.network_time is not None and (args.measure_layers_of or not args.refit):
        raise TargetError(f"--network-time {args.network_time}: only with --refit (and networks to fit, measuring "
                          f"nothing); allowed: --refit TARGET_FILE [--networks FILES] --network-time "
                          f"{'|'.join(NETWORK_TIMES)}")
    if args.measure_layers_of:
        if args.pw_align is not None:
            raise TargetError(f"--pw-align {args.pw_align}: not with --measure-layers-of (it measures, fitting nothing); "
                              "allowed: --refit TARGET_FILE --pw-align N, or a new build")
        return measure_network_layers(args)
    if args.crossfit is not None and not args.refit:
        raise TargetError(f"--{'' if args.crossfit else 'no-'}crossfit: only with --refit; allowed: --refit TARGET_FILE "
                          "[--crossfit|--no-crossfit]")
    if args.networks is not None and not args.refit:
        raise TargetError(f"--networks {args.networks}: only with --refit; allowed: --refit TARGET_FILE --networks FILE")
    if args.refit:
        src = Path(args.refit)
        old = LatencyModel.read_file(src)
        partial = partial_paths(args.partial or (old.get("meta") or {}).get("measurements", {}).get("partial_file") or "")
        out = Path(args.out) if args.out else src
        model = refit(src, partial, out, args.seed, save=False, old=old, pw_align=args.pw_align)
        nets = args.networks if args.networks is not None else model.meta.get("network_term_from")
        if nets is None and args.network_time is not None:
            raise TargetError(f"--network-time {args.network_time}: {src} has no network term to fit (no "
                              "meta.network_term_from); allowed: with --networks FILES")
        if nets is not None:
            res = int(max(model.meta.get("resolutions") or [224]))
            time_basis = args.network_time or model.meta.get("network_term_time") or "own"
            if time_basis not in NETWORK_TIMES:
                raise field_error(TargetError, f"{src}: meta.network_term_time", time_basis, NETWORK_TIMES)
            ref_ms = None
            if time_basis == "build":
                said = "--network-time build" if args.network_time else f"{src}: meta.network_term_time build"
                try:
                    ref_ms = float((model.meta.get("reference") or {}).get("ms") or 0.0)
                except (TypeError, ValueError):
                    ref_ms = 0.0
                if not ref_ms > 0:  # also NaN
                    raise TargetError(f"{said}: {src} has no valid meta.reference.ms (the reference block's time); "
                                      "allowed: --network-time own")
            archs, ms, where = read_networks_files(nets, res, ref_ms)
            model.meta["network_term_from"] = where
            model.meta["network_term_time"] = time_basis
            crossfit = bool(model.meta.get("network_term_crossfit")) if args.crossfit is None else args.crossfit
            model.meta["network_term_crossfit"] = crossfit
            model = fit_network_term(model, archs, ms, where, args.seed, res, time=time_basis, crossfit=crossfit)
        model.save(out)
        for k, v in model.error.items():
            print(f"  {k}: {v}")
        print(f"wrote {out} ({len(model.table)} table entries)")
        return 0
    if args.target not in BUILDABLE:
        raise field_error(TargetError, "--target", args.target, tuple(BUILDABLE))
    args.backend = args.backend or BUILDABLE[args.target]
    if args.backend not in BACKENDS:
        raise field_error(TargetError, "--backend", args.backend, BACKENDS)
    from search_space.space import load_space

    space = load_space(args.space)
    t0 = time.time()
    deadline = t0 + 60 * args.max_minutes
    layers, nets = design(space, resolutions, args.blocks, args.nets, args.pool, args.seed, args.zoo,
                          args.net_max_mmacs)
    items = [("null", None, "null")] + [("layer", s, s.key) for s in layers] + \
            [("net", (a, r), f"{a.to_string()}@{r}") for a, r, _ in nets]
    tag = f"{args.target}-{space.name}-{args.backend}-t{args.threads}-s{args.seed}-b{args.blocks}-n{args.nets}-cpuclock"
    partial = Path(args.partial) if args.partial else cache_dir() / "latency" / f"{tag}.partial.jsonl"
    if args.fresh and partial.is_file():
        partial.unlink()
    print(f"{len(layers)} layers + {len(nets)} networks x {args.passes} passes; partial file {partial}")
    before = len(_read_partial(partial))
    rows = measure(items, partial, args.passes, args.backend, args.threads, args.rounds, deadline)
    agg = aggregate(rows)
    info = machine_info(args.backend, args.threads)
    meta = {
        "device": f"{info['cpu']} ({info['cores']} cores, shared VM)", "runtime": args.backend,
        "runtime_version": runtime_version(info), "threads": args.threads,
        "clock": "thread CPU time" if args.threads == 1 else "wall time",
        "resolutions": resolutions, "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "repeats": {"passes": args.passes, "rounds": args.rounds, "rule": "min over passes of the median over rounds"},
        "reference": {"key": REFERENCE.key, "ms": round(agg["ref_ms"], 4)},
        "call_overhead_ms": round(agg["null_rel"] * agg["ref_ms"], 4),
        "drift": agg["drift"],
        "made_by": "python -m latency_models.build " + " ".join(argv if argv is not None else sys.argv[1:]),
        "made_from": {"space": space.name, "seed": args.seed, "layers": len(layers), "networks": len(nets),
                      "zoo": args.zoo},
        "measurements": {"partial_file": str(partial), "rows": len(rows), "measured_this_run": len(rows) - before},
        "build_minutes_this_run": round((time.time() - t0) / 60, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "pw_align": args.pw_align or ALIGN,
    }
    model = fit_target(layers, nets, agg, meta, seed=args.seed, name=args.target)
    out = Path(args.out) if args.out else REPO / "latency_models" / "targets" / f"{args.target}.json"
    model.save(out)
    print(f"reference {agg['ref_ms']:.3f} ms, drift p5..p95 {agg['drift']['spread_p5_p95_pct']}%, "
          f"call overhead {meta['call_overhead_ms']} ms")
    for k, v in model.error.items():
        print(f"  {k}: {v}")
    print(f"wrote {out} ({len(model.table)} table entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
