"""Session-grouped cross-validation of local-cpu's network term (docs/latency.md, "Session 9").

    python benchmarks/latency_session_cv.py [--networks quiet,s8,validation] [--layers-s8/--no-layers-s8]

Each fold holds out the random archs of one session's validation sets (saved by ``validate --save``:
``local-cpu.validation-sN-seedS.json``) and fits the term by the build's own procedure
(``build.fit_network_term`` with ``crossfit``: form chosen by its 5-fold CV) on every other measured
network EXCEPT those measured in the held-out session (the quiet training networks were measured in
session 4, ``networks-s8`` in session 8), so a session's bias is not leaked.  The layer table and
regressor are refitted once from the measured layers (validation archs have none).  Prints, with the
machine, the share within +/-10%, MAPE and Spearman of the held-out archs beside the shipped target's
(whose term never saw them), by session and by network size.  Measures nothing; ~1 minute per fold.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
M = REPO / "latency_models" / "targets" / "measurements"
SHIPPED = REPO / "latency_models" / "targets" / "local-cpu.json"
TRAIN = {"quiet": ("local-cpu.networks-quiet.jsonl", "s4"), "s8": ("local-cpu.networks-s8.jsonl", "s8"),
         "spaces": ("local-cpu.networks-spaces.jsonl", "s6")}


def validation_sets(exclude=()):
    """(session, seed, archs, own ms) of each saved validation file's random archs."""
    from latency_models.validate import network_group
    from search_space.arch import Arch

    out = []
    for f in sorted(M.glob("local-cpu.validation-s*-seed*.json")):
        sess, seed = f.stem.split("-")[2], int(f.stem.split("seed")[1])
        if seed in exclude:
            continue
        d = json.loads(f.read_text())
        nets = [n for n in d["networks"] if network_group(n["label"]) == "random"]
        ms = [min(np.atleast_1d(n["rel"])) * float(np.median(np.atleast_1d(n["ref_ms"]))) for n in nets]
        out.append((sess, seed, [Arch.from_string(n["arch"]) for n in nets], np.array(ms)))
    return out


def stats(p, t):
    from scipy.stats import spearmanr

    e = p / t - 1
    return {"n": len(t), "within": int((np.abs(e) <= 0.10).sum()), "mape": 100 * float(np.abs(e).mean()),
            "spearman": float(spearmanr(p, t)[0])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", default="quiet,s8,validation",
                    help="training networks: any of quiet, s8, spaces, validation (comma-separated)")
    ap.add_argument("--layers-s8", action=argparse.BooleanOptionalAction, default=True,
                    help="the 6,674 layers of networks-s8 in the table (as candidate C / E)")
    ap.add_argument("--exclude-seeds", default="", help="validation seeds left out of everything (e.g. fresh ones)")
    args = ap.parse_args(argv)
    from latency_models import build
    from latency_models.model import LatencyModel

    want = [x.strip() for x in args.networks.split(",") if x.strip()]
    excl = {int(x) for x in args.exclude_seeds.split(",") if x.strip()}
    A = LatencyModel.from_file(SHIPPED)
    parts = [REPO / p for p in A.meta["measurements"]["partial_file"].split(",")]
    if args.layers_s8:
        parts.append(M / "local-cpu.layers-s8.partial.jsonl")
    layers = build.refit(SHIPPED, parts, Path(os.devnull), 0, save=False)
    train = []  # (session, archs, ms)
    for w in want:
        if w in TRAIN:
            a, ms, _ = build.read_networks(M / TRAIN[w][0])
            train.append((TRAIN[w][1], a, ms))
    vals = validation_sets(excl)
    if "validation" in want:
        train += [(s, a, ms) for s, _, a, ms in vals]
    sessions = sorted({s for s, _, _, _ in vals})
    from latency_models.profile import machine_info

    cpu = machine_info("onnxruntime", 1)["cpu"]
    print(f"machine: {cpu}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.2f}; training networks: {', '.join(want)}; layers-s8 {args.layers_s8}")
    rows = []
    for s in sessions:
        tr = [(a, m) for ts, aa, mm in train if ts != s for a, m in zip(aa, mm)]
        te = [(a, m) for vs, _, aa, mm in vals if vs == s for a, m in zip(aa, mm)]
        model = build.fit_network_term(layers, [a for a, _ in tr], np.array([m for _, m in tr]), "session-cv", 0,
                                       224, log=lambda *x: None, crossfit=True)
        archs, true = [a for a, _ in te], np.array([m for _, m in te])
        cand, ship = model.predict_many(archs, 224), A.predict_many(archs, 224)
        chosen = model.error["network_term"]["cross_validation"]["chosen"]
        rows.append((s, true, cand, ship))
        c, a = stats(cand, true), stats(ship, true)
        print(f"  held out {s}: {len(tr)} training networks, term {chosen}: within 10% {c['within']}/{c['n']} "
              f"MAPE {c['mape']:.2f}%  (shipped {a['within']}/{a['n']}, {a['mape']:.2f}%)", flush=True)
    true = np.concatenate([r[1] for r in rows])
    cand = np.concatenate([r[2] for r in rows])
    ship = np.concatenate([r[3] for r in rows])
    for name, p in (("session-grouped CV", cand), ("shipped target", ship)):
        st = stats(p, true)
        print(f"{name:20s} within 10% {st['within']}/{st['n']} = {100 * st['within'] / st['n']:.1f}%, "
              f"MAPE {st['mape']:.2f}%, Spearman {st['spearman']:.4f}")
    for lo, hi in ((0, 5), (5, 10), (10, 20), (20, 40), (40, np.inf)):
        m = (true >= lo) & (true < hi)
        wc, ws = np.abs(cand[m] / true[m] - 1) <= 0.1, np.abs(ship[m] / true[m] - 1) <= 0.1
        print(f"  {lo:>3}-{hi:<4} ms: {m.sum():4d} archs, CV {100 * wc.mean():5.1f}%, shipped {100 * ws.mean():5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
