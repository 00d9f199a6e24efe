"""Measure whole networks end-to-end to fit a target's network-level term.

    python -m latency_models.measure_nets [--target local-cpu] [--space mobile-unified] [--archs 200]
        [--seed 7000] [--out latency_models/targets/measurements/local-cpu.networks.jsonl]

Samples ``--archs`` random archs of the space with ``random.Random(seed)`` (validate samples with
seeds 1000-2999: validate --seed S samples with S + 1000; the build with 0 and 1: keep this seed away
from both), measures each network with the
profiler's interleaved protocol (``profile.measure_items``: relative to the reference block, thread
CPU time at one thread, outlier rounds re-measured), in chunks, each in a fresh process, and appends
one JSON line per network (arch string, relative cost, reference ms, load average).  Resumable: a
network already in the file is not measured again.

    python -m latency_models.measure_nets --from-validation A.json,B.json --out X.jsonl

measures nothing: writes the random archs of saved ``latency_models.validate`` measurements
(``--save`` files) as rows of this format, each at its own time as validate scores it (min over
passes of the relative cost x the median reference ms), so that a later target's network term can
be fitted on sets an earlier target was validated on.  The zoo networks are left out (they stay
a check, never fitted on).  A set used so is no longer fresh: claims need sets measured after.
"""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

from search_space.errors import OneLineParser, TargetError, cli_entry, field_error

MEAS_DIR = Path(__file__).resolve().parent / "targets" / "measurements"
RESERVED_SEEDS = "0, 1 (build) and 1000-2999 (validate samples with its --seed + 1000)"


def sample_archs(space_name: str, n: int, seed: int):
    from search_space.space import load_space

    space = load_space(space_name)
    rng = random.Random(seed)
    return space, [space.sample(rng) for _ in range(n)]


def read_rows(path: Path) -> list[dict]:
    """The rows of a measurements file; a torn last line (killed mid-write) is skipped."""
    rows = []
    if not path.is_file():
        return rows
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise TargetError(f"{path}:{i + 1}: not a JSON line of latency_models.measure_nets") from None
    return rows


def one_runtime(rows: list[dict], path: Path, backend: str | None = None, threads: int | None = None) -> None:
    """A measurements file holds one runtime (backend, threads): refuse a mix, or rows of another
    runtime than the given one, in one line."""
    seen = {(r.get("backend"), r.get("threads")) for r in rows}
    want = {(backend, threads)} if backend is not None else set(list(seen)[:1])
    if seen - want:
        got = ", ".join(f"{b} x {t} thread(s)" for b, t in sorted(seen, key=str))
        allowed = f"{backend} x {threads} thread(s) only" if backend is not None else "one backend and thread count"
        raise TargetError(f"{path}: measurements of {got}; allowed: {allowed} per file (name another file)")


def measure(path: Path, space_name: str, n: int, seed: int, backend: str = "onnxruntime", threads: int = 1,
            rounds: int = 5, chunk: int = 10, res: int = 224) -> list[dict]:
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm import tqdm

    from latency_models.profile import machine_info, measure_items, noise_line, runtime_version

    space, archs = sample_archs(space_name, n, seed)
    rows = read_rows(path)
    one_runtime(rows, path, backend, threads)
    done = {(r["arch"], int(r.get("resolution", 224))) for r in rows}
    todo = [(i, a) for i, a in enumerate(archs) if (a.to_string(), res) not in done]
    info = machine_info(backend, threads)
    print(f"{len(archs) - len(todo)} of {len(archs)} {space.name} archs (seed {seed}) already in {path}; "
          f"measuring {len(todo)} on {info['cpu']}, {backend} {runtime_version(info)}, {threads} thread(s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    spreads = []
    with tqdm(total=len(todo), desc="measuring networks", unit="net", file=sys.stderr) as bar:
        for c in range(0, len(todo), chunk):
            part = todo[c:c + chunk]
            load0 = os.getloadavg()[0]
            with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:  # a fresh process
                out = ex.submit(measure_items, [("net", (a, res)) for _, a in part], backend, threads,
                                rounds).result()
            load1 = os.getloadavg()[0]
            with path.open("a+b") as f:  # a torn last line from a killed run: start on a fresh line
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                for (i, a), m in zip(part, out):
                    row = {"space": space.name, "seed": seed, "index": i, "arch": a.to_string(),
                           "resolution": res, "backend": backend, "threads": threads, "rel": m["rel"],
                           "spread": m["spread"], "ref_ms": m["ref_ms"], "ms": m["ms"],
                           "remeasured": m["remeasured"], "load1": [round(load0, 2), round(load1, 2)]}
                    f.write((json.dumps(row) + "\n").encode())
                    spreads.append(m["spread"])
            bar.update(len(part))
    if todo:
        print(noise_line(spreads))
    return read_rows(path)


def rows_from_validation(paths: list[Path]) -> list[dict]:
    """measure_nets rows of the random archs of saved validate measurements (see the module doc)."""
    import statistics

    from latency_models.validate import network_group

    rows, seen = [], set()
    for path in paths:
        try:
            rec = json.loads(Path(path).read_text())
            nets, backend, threads = rec["networks"], rec["backend"], int(rec["threads"])
            res, space, seed = int(rec["resolution"]), rec["space"], int(rec["seed"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"--from-validation {path}: not a latency_models.validate --save file "
                              f"({type(exc).__name__}: {exc})") from None
        for i, n in enumerate(nets):
            label = str(n.get("label", "")) if isinstance(n, dict) else f"entry {i}"
            if isinstance(n, dict) and network_group(label) != "random":
                continue                     # a zoo network, or a calibration network (validate --calibrate)
            try:
                rel = n["rel"] if isinstance(n["rel"], list) else [n["rel"]]
                ref = n["ref_ms"] if isinstance(n["ref_ms"], list) else [n["ref_ms"]]
                key = (str(n["arch"]), res)
                index = int(label.rpartition("#")[2])
                ref_med, best = float(statistics.median(ref)), float(min(rel))
            except (KeyError, ValueError, TypeError, statistics.StatisticsError) as exc:
                raise TargetError(f"--from-validation {path}: network {label}: field rel, ref_ms or arch missing or "
                                  f"bad ({type(exc).__name__}: {exc}); allowed: a latency_models.validate --save "
                                  "file") from None
            if key in seen:
                raise TargetError(f"--from-validation {path}: {label} is also in an earlier file; allowed: each "
                                  "network once")
            seen.add(key)
            rows.append({"space": space, "seed": seed, "index": index, "arch": key[0],
                         "resolution": res, "backend": backend, "threads": threads, "rel": best,
                         "ref_ms": ref_med, "ms": best * ref_med, "passes": len(rel),
                         "from": Path(path).name, "load_average": rec.get("load_average")})
    if not rows:
        raise TargetError(f"--from-validation: no random archs (labels 'name#i') in {', '.join(map(str, paths))}; "
                          "allowed: latency_models.validate --save files with random archs")
    return rows


@cli_entry
def main(argv=None) -> int:
    from latency_models.profile import BACKENDS, check_timing_options

    ap = OneLineParser(prog="python -m latency_models.measure_nets",
                       description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--space", default="mobile-unified")
    ap.add_argument("--archs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--out", default=str(MEAS_DIR / "local-cpu.networks.jsonl"))
    ap.add_argument("--from-validation", default=None, metavar="FILES", help="measure nothing: write the random "
                    "archs of these saved validate measurements (comma-separated) to --out (a new file)")
    args = ap.parse_args(argv)
    if args.from_validation:
        from latency_models.build import partial_paths

        out = Path(args.out)
        if out.exists():
            raise TargetError(f"--out {out}: exists; allowed: a new file with --from-validation")
        rows = rows_from_validation(partial_paths(args.from_validation, "--from-validation",
                                                  "latency_models.validate --save files, comma-separated"))
        one_runtime(rows, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{out}: {len(rows)} networks from {len({r['from'] for r in rows})} validation file(s)")
        return 0
    if args.backend not in BACKENDS:
        raise field_error(TargetError, "--backend", args.backend, BACKENDS)
    if args.archs < 1:
        raise field_error(TargetError, "--archs", args.archs, "an integer >= 1")
    check_timing_options(args.threads, args.rounds, args.resolution)
    if args.seed in (0, 1) or 1000 <= args.seed < 3000:
        raise field_error(TargetError, "--seed", args.seed, f"any integer but {RESERVED_SEEDS}")
    rows = measure(Path(args.out), args.space, args.archs, args.seed, args.backend, args.threads, args.rounds,
                   res=args.resolution)
    print(f"{args.out}: {len(rows)} networks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
