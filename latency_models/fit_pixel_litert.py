"""A candidate ``pixel-cpu`` target built on the phone's kernels: every layer measured here with
LiteRT (XNNPACK, the TFLite CPU path the Pixel numbers were taken with), mapped to the Pixel 1 big
core by a learned per-operator-type scaling.

    python -m latency_models.fit_pixel_litert [--data ../shared/data] [--passes 3] [--rounds 7]
        [--measurements FILE] [--out latency_models/targets/candidates/pixel-cpu-litert.json]

1. Measure (``latency_models.mobile_backends``, backend ``tflite``, 1 thread, thread CPU time,
   interleaved with the reference block, minimum over ``--passes`` fresh processes): the 71 layers
   of the ProxylessNAS Pixel table (``luts/proxylessnas_mobile.yaml``) and every layer of the networks
   that have a published Pixel 1 row (``published_latency.csv``, device
   ``pixel1-cpu-1bigcore-tflite-fp32``), plus those whole networks.  Results go to
   ``--measurements`` (JSON) as they come; a rerun measures only what is missing.
2. Fit.  A layer of operator type t (stem, head, mbconv k3/k5/k7, mbconv with SE, dwsep, shufflev2,
   sandglass, other) costs ``(g + d_t) * litert_ms`` on the Pixel, ``g`` a shared scale and ``d_t``
   a per-type correction shrunk towards 0 by a ridge (chosen by leave-one-group-out on the training
   rows); a network costs its layers plus ``overhead_ms``; an isolated table operator costs its
   layer plus a table-only constant (its harness overhead).  Rows are weighted for relative error;
   the table's operators together weigh 1/10 of the network rows, and rows of the MobileNetV2 paper
   (older TFLite) get one extra scale, as in ``latency_models.fit_pixel``.
3. Judge on the same held-out split as ``latency_models.fit_pixel`` (its ``split``), plus
   leave-one-group-out over all groups, next to the current ``pixel-cpu`` file's recorded error and
   a single-scale model (no per-type terms).  The candidate file records both figures.

The candidate prices a layer of any Arch as ``(g + d_t) x`` its LiteRT cost: measured layers are
table entries (already in Pixel ms), others come from a per-type linear regressor fitted on the
scaled measured layers (``latency_models.predictor.fit_predictor``).  It is written outside
``targets/`` (``targets/candidates/``) so that it is not a target until someone moves it.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

import numpy as np

from latency_models.features import layer_features
from latency_models.fit_pixel import SOURCE_SCALES, TABLE_WEIGHT, errors
from latency_models.fitting import (DATA, DEVICE, OLD_TFLITE_SOURCE, leave_one_group_out, published_rows, split,
                                    split_note)
from search_space.arch import Signature, signatures
from search_space.errors import DataError, OneLineParser, cli_entry

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "latency_models" / "targets" / "candidates" / "pixel-cpu-litert.json"
CURRENT = REPO / "latency_models" / "targets" / "pixel-cpu.json"
TYPES = ("stem", "head", "mbconv_k3", "mbconv_k5", "mbconv_k7", "mbconv_se", "dwsep", "shufflev2", "sandglass",
         "other")
RIDGES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
CHUNK = 24


def op_type(sig: Signature) -> str:
    """The operator type whose Pixel/LiteRT-here ratio a layer shares."""
    if sig.kind in ("stem", "head"):
        return sig.kind
    s = sig.spec
    if sig.kind == "mbconv":
        if s.se_ch:
            return "mbconv_se"
        return f"mbconv_k{min(7, max(3, s.kernel))}"
    return sig.kind if sig.kind in TYPES else "other"


# --------------------------------------------------------------------------------------------
# What to measure
# --------------------------------------------------------------------------------------------
def proxyless_table(data: Path):
    from latency_models.table import import_proxylessnas

    path = data / "luts" / "proxylessnas_mobile.yaml"
    if not path.is_file():
        raise DataError(f"{path}: the ProxylessNAS Pixel table does not exist")
    table = import_proxylessnas(path)
    return [(table.sigs[k], e.ms) for _, k, e in table.items()]


def network_archs(rows) -> dict[str, tuple[Any, int]]:
    from search_space import zoo

    out = {}
    for r in rows:
        out[f"{r.zoo}@{r.width}@{r.resolution}"] = (zoo.get(r.zoo, r.width), r.resolution)
    return out


def items_to_measure(table_ops, nets) -> list[tuple[str, Any]]:
    seen, items = set(), []
    for sig, _ in table_ops:
        if sig.key not in seen:
            seen.add(sig.key)
            items.append(("layer", sig))
    for arch, res in nets.values():
        for s in signatures(arch, res):
            if s.key not in seen:
                seen.add(s.key)
                items.append(("layer", s))
    for arch, res in nets.values():
        items.append(("net", (arch, res)))
    return items


def item_key(item) -> str:
    kind, x = item
    return x.key if kind == "layer" else f"{x[0].to_string()}@{x[1]}"


def _load(path: Path) -> dict[str, dict]:
    if path.is_file():
        return json.loads(path.read_text()).get("items", {})
    return {}


def _save(path: Path, store: dict[str, dict], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "items": store}, indent=0, sort_keys=True) + "\n")
    tmp.replace(path)


def measure(items, path: Path, passes: int, rounds: int, log=print) -> dict[str, dict]:
    """Per key: ms (minimum of the per-pass medians, relative x reference), rels, ref_ms, undelegated."""
    from latency_models import mobile_backends as MB
    from latency_models.profile import machine_info, measure_items

    store = _load(path)
    meta = {"backend": "tflite", "threads": 1, **MB.versions("tflite"),
            "machine": {k: v for k, v in machine_info("torch", 1).items() if k in ("cpu", "cores", "torch")},
            "how": "relative to latency_models.profile.REFERENCE on LiteRT, thread CPU time, "
                   "min over passes of the median over rounds"}
    for p in range(passes):
        todo = [it for it in items if len(store.get(item_key(it), {}).get("rels", [])) <= p]
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i:i + CHUNK]
            with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:  # a fresh process
                rows = ex.submit(measure_items, chunk, "tflite", 1, rounds).result()
            for r in rows:
                e = store.setdefault(r["key"], {"kind": r["kind"], "rels": [], "ref_ms": []})
                e["rels"].append(round(r["rel"], 6))
                e["ref_ms"].append(round(r["ref_ms"], 6))
                e["undelegated"] = r["undelegated"]
                j = int(np.argmin(e["rels"]))
                e["rel"], e["ms"] = e["rels"][j], round(e["rels"][j] * float(np.median(e["ref_ms"])), 6)
            _save(path, store, meta)
            log(f"pass {p + 1}/{passes}: {min(i + CHUNK, len(todo))}/{len(todo)} measured "
                f"(reference {rows[0]['ref_ms']:.3f} ms)")
            sys.stdout.flush()
    return store


# --------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------
T = len(TYPES)


def type_sums(sigs, ms_of) -> np.ndarray:
    v = np.zeros(T)
    for s in sigs:
        v[TYPES.index(op_type(s))] += ms_of(s)
    return v


class Fit:
    def __init__(self, g, d, overhead, table_const, old_scale, ridge):
        self.g, self.d, self.overhead, self.table_const = g, d, overhead, table_const
        self.old_scale, self.ridge = old_scale, ridge

    @property
    def scales(self) -> np.ndarray:
        return self.g + self.d

    def predict(self, r, L: np.ndarray) -> float:
        s = self.old_scale if r.source.startswith(OLD_TFLITE_SOURCE) else 1.0
        return s * (float(L @ self.scales) + self.overhead)


def fit(TL: np.ndarray, Ty: np.ndarray, rows, Ls: dict, ridge: float, per_type: bool = True,
        overhead: bool = True) -> Fit:
    """Weighted least squares on relative error; unknowns g, d (T), overhead (or none), table constant."""
    best = None
    has_old = any(r.source.startswith(OLD_TFLITE_SOURCE) for r in rows)
    n_par = 1 + T + 2
    for sc in (SOURCE_SCALES if has_old else [1.0]):
        A, Y, W = [], [], []
        wt = TABLE_WEIGHT * len(rows) / max(1, len(TL))
        for l, y in zip(TL, Ty):
            a = np.zeros(n_par)
            a[0] = l.sum()
            a[1:1 + T] = l
            a[1 + T + 1] = 1.0
            A.append(a / y), Y.append(1.0), W.append(wt)
        for r in rows:
            s = sc if r.source.startswith(OLD_TFLITE_SOURCE) else 1.0
            L = Ls[id(r)]
            a = np.zeros(n_par)
            a[0] = s * L.sum()
            a[1:1 + T] = s * L
            a[1 + T] = s
            A.append(a / r.ms), Y.append(1.0), W.append(1.0)
        A, Y, W = np.array(A), np.array(Y), np.sqrt(np.array(W))
        used = np.zeros(T, bool)
        used |= (np.abs(A[:, 1:1 + T]) > 0).any(0)
        R = np.zeros((T + 1, n_par))
        for t in range(T):
            R[t, 1 + t] = np.sqrt(ridge if per_type else 1e6) * (1.0 if used[t] else 1e3)
        R[T, 1 + T] = 0.0 if overhead else 1e3  # no network overhead term
        M = np.vstack([A * W[:, None], R])
        b = np.concatenate([Y * W, np.zeros(T + 1)])
        coef = np.linalg.lstsq(M, b, rcond=None)[0]
        loss = float(((A @ coef - Y) ** 2 * W ** 2).sum())
        if best is None or loss < best[0]:
            best = (loss, Fit(coef[0], coef[1:1 + T], coef[1 + T], coef[2 + T], float(sc), ridge))
    return best[1]


def choose_ridge(TL, Ty, rows, Ls, per_type: bool = True) -> tuple[float, bool]:
    """(ridge, overhead term or not) with the smallest leave-one-group-out MAPE on ``rows``."""
    best = None
    for ovh in (False, True):
        for lam in (RIDGES if per_type else RIDGES[:1]):
            pred, true = leave_one_group_out(rows, lambda tr: fit(TL, Ty, tr, Ls, lam, per_type, ovh),
                                             lambda m, r: m.predict(r, Ls[id(r)]))
            score = float(np.mean(np.abs(np.array(pred) - true) / np.array(true)))
            if best is None or score < best[0] - 1e-12:
                best = (score, (lam, ovh))
    return best[1]


def evaluate(TL, Ty, rows, Ls, log=print) -> dict:
    train, held = split(rows)
    lam, ovh = choose_ridge(TL, Ty, train, Ls)
    m = fit(TL, Ty, train, Ls, lam, overhead=ovh)
    m1 = fit(TL, Ty, train, Ls, lam, False, choose_ridge(TL, Ty, train, Ls, False)[1])
    out = {
        "split": f"as latency_models.fit_pixel: {split_note()}",
        "held_out_groups": sorted({f"{r.zoo}@{r.width}" for r in held}),
        "ridge": lam, "overhead_term": ovh,
        "train": errors([m.predict(r, Ls[id(r)]) for r in train], [r.ms for r in train]),
        "held_out": errors([m.predict(r, Ls[id(r)]) for r in held], [r.ms for r in held]),
        "single_scale_held_out": errors([m1.predict(r, Ls[id(r)]) for r in held], [r.ms for r in held]),
    }
    def fit_chosen(tr, per_type=True):
        lam_g, ovh_g = choose_ridge(TL, Ty, tr, Ls)
        if per_type:
            return fit(TL, Ty, tr, Ls, lam_g, overhead=ovh_g)
        return fit(TL, Ty, tr, Ls, lam_g, False, choose_ridge(TL, Ty, tr, Ls, False)[1])

    def predict(m, r):
        return m.predict(r, Ls[id(r)])

    pred, true = leave_one_group_out(rows, fit_chosen, predict)
    pred1, _ = leave_one_group_out(rows, lambda tr: fit_chosen(tr, False), predict)
    out["leave_one_group_out"] = errors(pred, true)
    out["single_scale_leave_one_group_out"] = errors(pred1, true)
    log("held-out rows:")
    for r in held:
        log(f"  {r.network:24s} x{r.width:<5} {r.ms:7.1f} ms published, {m.predict(r, Ls[id(r)]):7.1f} predicted "
            f"(single scale {m1.predict(r, Ls[id(r)]):6.1f})  [{r.source[:30]}]")
    return out


def current_error() -> dict:
    if not CURRENT.is_file():
        return {}
    return json.loads(CURRENT.read_text()).get("error", {})


def build(data: Path, store: dict[str, dict], log=print):
    from latency_models.model import LatencyModel
    from latency_models.predictor import fit_predictor
    from latency_models.table import Entry, LatencyTable

    table_ops = proxyless_table(data)
    rows = published_rows(data, log)
    nets = network_archs(rows)

    def ms(sig) -> float:
        e = store.get(sig.key)
        if e is None:
            raise DataError(f"measurements: no LiteRT time for {sig.key}; run without --fit-only")
        return e["ms"]

    TL = np.array([type_sums([s], ms) for s, _ in table_ops])
    Ty = np.array([y for _, y in table_ops])
    Ls = {}
    for r in rows:
        arch, res = nets[f"{r.zoo}@{r.width}@{r.resolution}"]
        Ls[id(r)] = type_sums(signatures(arch, res), ms)
    error = evaluate(TL, Ty, rows, Ls, log)
    lam, ovh = choose_ridge(TL, Ty, rows, Ls)
    final = fit(TL, Ty, rows, Ls, lam, overhead=ovh)
    # LiteRT additivity: sum of the layers / whole network, both measured here
    additivity = {}
    for name, (arch, res) in nets.items():
        e = store.get(f"{arch.to_string()}@{res}")
        if e:
            additivity[name] = round(sum(ms(s) for s in signatures(arch, res)) / e["ms"], 4)
    cur = current_error()
    error["current_pixel_cpu"] = {k: cur.get(k) for k in ("held_out", "leave_one_group_out") if k in cur}
    error["litert_layer_sum_over_network"] = additivity
    # the target: measured layers as table entries in Pixel ms; a per-kind regressor for the rest
    entries, kinds, X, y = {}, [], [], []
    sigs = {s.key: s for s, _ in table_ops}
    for arch, res in nets.values():
        for s in signatures(arch, res):
            sigs.setdefault(s.key, s)
    for k, s in sigs.items():
        pix = float(final.scales[TYPES.index(op_type(s))]) * ms(s)
        entries[k] = Entry(round(pix, 6), 0.0, 1)
        kinds.append(s.kind), X.append(layer_features(s)), y.append(pix)
    predictor = fit_predictor(kinds, np.array(X), np.array(y), fitted_on={"from": "LiteRT layers x per-type scale"})
    predictor.overhead_ms = float(final.overhead)
    meta = {
        "device": "Google Pixel 1 (Snapdragon 821), one big core",
        "runtime": "TensorFlow Lite fp32 (MnasNet / MobileNetV3 protocol), priced from LiteRT/XNNPACK here",
        "threads": 1, "resolutions": sorted({r.resolution for r in rows}), "date": _dt.date.today().isoformat(),
        "made_by": "python -m latency_models.fit_pixel_litert",
        "made_from": ["../shared/data/luts/proxylessnas_mobile.yaml",
                      f"../shared/data/published_latency.csv (device == {DEVICE}: {len(rows)} rows)",
                      f"LiteRT measurements here: {len(sigs)} layers, {len(additivity)} networks"],
        "per_type_scale": {t: round(float(s), 5) for t, s in zip(TYPES, final.scales)},
        "shared_scale": round(float(final.g), 5), "ridge": lam, "overhead_term": ovh, "overhead_ms": round(float(final.overhead), 4),
        "table_only_constant_ms": round(float(final.table_const), 4), "old_tflite_scale": final.old_scale,
        "notes": "Pixel ms of a layer = per-type scale x its LiteRT/XNNPACK time measured here (1 thread); "
                 "layers measured here are table entries, others priced by the regressor fitted on them",
    }
    return LatencyModel("pixel-cpu", LatencyTable(entries=entries), predictor, meta, error), error


@cli_entry
def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m latency_models.fit_pixel_litert",
                       description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--measurements", default=str(OUT.with_name("pixel-cpu-litert.measurements.json")))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--fit-only", action="store_true", help="use the measurements file as it is")
    ap.add_argument("--measure-only", action="store_true")
    args = ap.parse_args(argv)
    data = Path(args.data)
    mpath = Path(args.measurements)
    if args.fit_only:
        store = _load(mpath)
        if not store:
            raise DataError(f"--measurements: {mpath} holds no measurements")
    else:
        rows = published_rows(data, log=lambda m: None)
        items = items_to_measure(proxyless_table(data), network_archs(rows))
        print(f"measuring {len(items)} items on LiteRT ({args.passes} passes) into {mpath}", flush=True)
        store = measure(items, mpath, args.passes, args.rounds)
    if args.measure_only:
        return 0
    model, error = build(data, store)
    print(f"split: {error['split']}; held out: {', '.join(error['held_out_groups'])}; ridge {error['ridge']}, "
          f"overhead term {error['overhead_term']}")
    for k in ("train", "held_out", "single_scale_held_out", "leave_one_group_out",
              "single_scale_leave_one_group_out"):
        e = error[k]
        print(f"{k:36s} MAPE {e['mape_pct']:5.2f}%  within 10% {e['within_10pct']:.0%}  max {e['max_err_pct']:.1f}%  (n={e['n']})")
    for k, e in error["current_pixel_cpu"].items():
        print(f"{'current pixel-cpu ' + k:36s} MAPE {e['mape_pct']:5.2f}%  within 10% {e['within_10pct']:.0%}  "
              f"max {e['max_err_pct']:.1f}%  (n={e['n']})")
    print("per-type scale: " + ", ".join(f"{t} {s}" for t, s in model.meta["per_type_scale"].items()))
    print("LiteRT layer sum / whole network: " + ", ".join(f"{k} {v}" for k, v in
                                                            error["litert_layer_sum_over_network"].items()))
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
