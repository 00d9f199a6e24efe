"""Platform-aware aging evolution: the most accurate network of a space under a latency budget.

    python -m searchers.evolve --target pixel-cpu --budget 60ms
    python -m searchers.evolve --target pixel-cpu,note10-cpu --budget 20ms,40ms --evaluator predictor  # a sweep

Regularized (aging) evolution (Real et al., 2019) with MnasNet's reward ACC * (LAT / T) ** w:
a population of the ``--population`` youngest evaluated archs; each step samples ``--sample-size``
of them, mutates the best (``Space.mutate``; with probability ``--crossover`` it first crosses it
with a second tournament's winner through ``Space.crossover``), evaluates the child and lets the
oldest die.  Latency comes from the target's latency model (free), accuracy from the evaluator
(``supernet`` by default, on Fashion-MNIST).  Before any evaluator time is spent the budget is
probed with the latency model; a budget no arch of the space meets is an error.

Every evaluated arch is a trial of an Optuna study (``searchers.records``), so a killed search
resumes (``--resume``), ``--workers N`` processes share one study (their population is its
youngest finished trials), and machines join through ``--storage postgresql://...``.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.errors import EdgenasError, cli_entry
from searchers.cli_common import (HelpFormatter, SearchSettings, add_search_options, check_names, given_options,
                                  resolve)
from searchers.records import Board, Journal, Records, TrialRecord, best_record, open_run
from searchers.records import run_paths as records_run_paths
from searchers.reward import Reward

SEARCHER = "evolve"
MAX_CONSECUTIVE_FAILURES = 5
DEDUP_TRIES = 20
INIT_TRIES = 100


class SearchError(EdgenasError):
    """The search cannot go on (infeasible budget, an evaluator that keeps failing...)."""


# ---------------------------------------------------------------------------------------------
# Set-up shared by the parent and the workers
# ---------------------------------------------------------------------------------------------
def run_paths(s: SearchSettings) -> tuple[str, Path, str]:
    """(study name, run folder, storage URL) from the settings."""
    return records_run_paths(SEARCHER, s)


@dataclass
class Context:
    settings: SearchSettings
    space: Any
    model: Any
    reward: Reward
    study_name: str
    out: Path
    storage: str
    evaluator: Any = None
    arch_cache: dict = field(default_factory=dict)

    def arch(self, text: str):
        a = self.arch_cache.get(text)
        if a is None:
            from search_space.arch import Arch

            a = self.arch_cache[text] = Arch.from_string(text)
        return a

    def proposal_space(self):
        """Where new archs are drawn: the evaluator's ``search_space()`` when it covers only part of
        the space (a supernet's scope: mobile-unified's supernet scores its MBConv nets), else the
        space.  Its archs are archs of the space; the records keep the space's encoding."""
        fn = getattr(self.evaluator, "search_space", None)
        return (fn() if callable(fn) else None) or self.space

    def build_evaluator(self, progress: bool = True):
        """The evaluator, built (its options checked) but not prepared.  ``progress`` False (--no-progress)
        reaches its constructor when it takes one (the supernet's training bar), unless --eval-opt set it."""
        if self.evaluator is None:
            from searchers.evaluators import get_evaluator, with_progress

            s = self.settings
            opts = with_progress(s.evaluator, s.eval_opts, progress)
            self.evaluator = get_evaluator(s.evaluator, space=self.space, dataset=s.dataset, seed=s.seed, **opts)
        return self.evaluator

    def check_inputs(self, progress: bool = True) -> None:
        """Before the study is made: the evaluator's options, the data set and any given weights file
        (``Evaluator.check_inputs``), so that a bad one leaves nothing behind."""
        self.build_evaluator(progress).check_inputs()

    def get_evaluator(self, progress: bool = True):
        ev = self.build_evaluator(progress)
        if not getattr(ev, "prepared", True):  # (an object set in its place by a caller is used as it is)
            ev.prepare()
        return ev


def make_context(s: SearchSettings) -> Context:
    import latency_models
    from search_space.space import load_space

    check_names(s)
    space = load_space(s.space)
    model = latency_models.load(s.target)
    reward = Reward.make(s.budget_ms, s.reward, s.w)
    study, out, storage = run_paths(s)
    return Context(s, space, model, reward, study, out, storage)


# ---------------------------------------------------------------------------------------------
# Budget probe: is any arch of the space under the budget?  (latency model only)
# ---------------------------------------------------------------------------------------------
@dataclass
class Probe:
    fastest_ms: float
    fastest_arch: str
    feasible_fraction: float
    samples: int
    feasible: list = field(default_factory=list)  # archs seen within the budget (for the first population)


def start_probe(ctx: Context, s: SearchSettings, timing: dict, progress: bool) -> "Probe":
    """A search's start, shared by evolve and rl: a study that --resume names must exist (and a server
    storage be reachable) before any work, then the budget probe (timed, and said on the terminal)."""
    from searchers.records import open_storage, sqlite_path

    if s.resume or sqlite_path(ctx.storage) is None:  # nothing to resume / unreachable: say so before the probe
        open_storage(ctx.storage, must_exist=s.resume)
    t = time.perf_counter()
    probe = probe_budget(ctx, s.seed)
    timing["probe_s"] = time.perf_counter() - t
    if progress:
        print(f"budget probe: fastest {probe.fastest_ms:.1f} ms; {100 * probe.feasible_fraction:.0f}% of "
              f"{probe.samples} random archs within {s.budget_ms:g} ms", file=sys.stderr)
    return probe


def probe_budget(ctx: Context, seed: int, samples: int = 200, max_s: float = 8.0) -> Probe:
    """Latency of ``samples`` random archs, then a greedy walk down each decision from the fastest.

    Raises SearchError when even the fastest arch seen is over the budget.
    """
    space, model, res, budget = ctx.space, ctx.model, ctx.settings.resolution, ctx.settings.budget_ms
    rng = random.Random(f"probe:{seed}")
    t0 = time.perf_counter()
    archs = []
    while len(archs) < samples and (time.perf_counter() - t0 < max_s or len(archs) < 10):
        archs.append(space.sample(rng))
    lats = [float(x) for x in model.predict_many(archs, resolution=res)]
    feasible = sum(lat <= budget for lat in lats) / len(lats)
    i = min(range(len(lats)), key=lats.__getitem__)
    best_arch, best_lat = archs[i], lats[i]
    if best_lat > budget:
        best_arch, best_lat = _greedy_fastest(ctx, best_arch, best_lat, deadline=time.perf_counter() + 2 * max_s)
    if best_lat > budget:
        raise SearchError(f"no architecture of space {space.name} reaches {budget:g} ms on {ctx.settings.target}; "
                          f"the fastest seen is {best_lat:.1f} ms")
    ok = [a for a, lat in zip(archs, lats) if lat <= budget] or [best_arch]
    return Probe(best_lat, best_arch.to_string(), feasible, len(archs), ok)


def _greedy_fastest(ctx: Context, arch, lat: float, deadline: float, passes: int = 3):
    """Coordinate descent over the encoding: each decision set to its fastest option, repeated."""
    space, model, res = ctx.space, ctx.model, ctx.settings.resolution
    from search_space.errors import EdgenasError as _E

    codes = list(space.encode(arch))
    cards = list(space.cardinalities())
    for _ in range(passes):
        improved = False
        for d, n in enumerate(cards):
            if time.perf_counter() > deadline:
                return arch, lat
            cands = []
            for v in range(n):
                if v == codes[d]:
                    continue
                trial = codes[:d] + [v] + codes[d + 1:]
                try:
                    cands.append((trial, space.decode(trial)))
                except (_E, ValueError):
                    continue
            if not cands:
                continue
            lats = model.predict_many([a for _, a in cands], resolution=res)
            j = min(range(len(cands)), key=lambda k: float(lats[k]))
            if float(lats[j]) < lat - 1e-9:
                codes, arch, lat = cands[j][0], cands[j][1], float(lats[j])
                improved = True
        if not improved:
            break
    return arch, lat


# ---------------------------------------------------------------------------------------------
# The evolution (one worker)
# ---------------------------------------------------------------------------------------------
class Evolution:
    """Aging evolution over ``ctx.space`` (drawing from ``ctx.proposal_space()``); trials go to
    ``records`` (and TensorBoard)."""

    init_mode = "auto"  # first population: auto (soft reward: uniform; hard: within budget), uniform, feasible

    def __init__(self, ctx: Context, records: Records, worker: int = 0, shared: bool = False,
                 board: Board | None = None, progress: bool = True, seeds: list | None = None):
        self.ctx, self.records, self.worker, self.shared = ctx, records, worker, shared
        self.seeds = list(seeds or [])
        self.board, self.progress = board, progress
        self.history: list[TrialRecord] = records.complete()  # resume: what is already finished
        self.accuracy: dict[str, float] = {r.arch: r.accuracy for r in self.history}
        s = ctx.settings
        salt = "" if not shared else f":{socket.gethostname()}:{os.getpid()}"
        self.rng = random.Random(f"evolve:{s.seed}:{worker}:{len(self.history)}{salt}")
        self.failures = 0
        self.failed: set[str] = set()  # archs the evaluator could not score: not proposed again
        self.eval_s = 0.0
        self.evaluated = 0
        self.journal = None  # a local JSON-lines log of the trials this process wrote
        self.pspace = ctx.proposal_space()  # sample / mutate / crossover here (see Context.proposal_space)

    def open_journal(self) -> None:
        self.journal = Journal(self.ctx.out, self.worker)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    # -- proposals --------------------------------------------------------------------------------
    def _initial(self):
        """A member of the first population.  Soft reward: a uniform sample of the space (MnasNet's and
        regularized evolution's start; the reward itself weighs latency, and a population spread over
        the whole front lets the tournaments find the best trade-off).  Hard reward (or
        ``init="feasible"``): a random arch predicted within the budget (latency is free, accuracy is
        not): a uniform sample when some of a few dozen are within it, else a random walk from the
        archs the probe found within it (a tight budget in a big space), else the fastest seen."""
        space, model, res, budget = self.pspace, self.ctx.model, self.ctx.settings.resolution, self.ctx.settings.budget_ms
        if self.seeds and self.pspace is not self.ctx.space:  # the probe's archs, drawn from the whole space
            self.seeds = [a for a in self.seeds if self._admissible(a)]
        if self.init_mode == "uniform" or (self.init_mode == "auto" and self.ctx.reward.mode == "soft"):
            a = space.sample(self.rng)
            for _ in range(INIT_TRIES):
                if not self._seen(a):
                    break
                a = space.sample(self.rng)
            return a
        best, best_lat = None, math.inf
        for i in range(2 * INIT_TRIES):
            if i < INIT_TRIES or not self.seeds:
                a = space.sample(self.rng)
            else:
                a = self.rng.choice(self.seeds)
                for _ in range(self.rng.randint(1, 4)):
                    a = space.mutate(a, self.rng)
            if self._seen(a):
                continue
            lat = float(model.predict(a, resolution=res))
            if lat <= budget:
                return a
            if lat < best_lat:
                best, best_lat = a, lat
        return best if best is not None else space.sample(self.rng)

    def _winner(self, population: list[TrialRecord]) -> TrialRecord:
        k = min(self.ctx.settings.sample_size, len(population))
        return max(self.rng.sample(population, k), key=lambda r: (r.reward, -r.number))

    def _child(self, population: list[TrialRecord]):
        space, s = self.pspace, self.ctx.settings
        parent = self.ctx.arch(self._winner(population).arch)
        child = None
        for _ in range(DEDUP_TRIES):
            if s.crossover > 0 and self.rng.random() < s.crossover:
                other = self.ctx.arch(self._winner(population).arch)
                child = space.crossover(parent, other, self.rng)
                if child == parent or child == other:
                    child = space.mutate(child, self.rng)
            else:
                child = space.mutate(parent, self.rng)
            if not self._seen(child):
                break
        return child

    def _seen(self, arch) -> bool:
        text = arch.to_string()
        return text in self.accuracy or text in self.failed or not self._admissible(arch)

    def _admissible(self, arch) -> bool:
        """Whether the evaluator can score ``arch`` (e.g. a reduced-scale supernet covers part of the
        space): its ``check(arch)``, or its supernet's, raising means no; a free test like latency."""
        check = self._checker
        if check is None:
            return True
        try:
            check(arch)
            return True
        except EdgenasError:  # outside what the evaluator scores (a bug elsewhere still raises)
            return False

    @property
    def _checker(self):
        if not hasattr(self, "_check_fn"):
            ev = self.ctx.evaluator
            if ev is None:
                return None
            fn = getattr(ev, "check", None)
            if not callable(fn):
                fn = getattr(getattr(ev, "supernet", None), "check", None)
            self._check_fn = fn if callable(fn) else None
        return self._check_fn

    def propose(self, history: list[TrialRecord]):
        pop = self.ctx.settings.population
        if len(history) < pop:
            return self._initial()
        return self._child(history[-pop:])  # the youngest P: the oldest died

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, arch) -> TrialRecord | None:
        ctx = self.ctx
        res = ctx.settings.resolution
        text = arch.to_string()
        codes = ctx.space.encode(arch)
        lat = float(ctx.model.predict(arch, resolution=res))
        breakdown = ctx.model.breakdown(arch, resolution=res)
        t0 = time.perf_counter()
        try:
            if text in self.accuracy:
                acc = self.accuracy[text]
            else:
                acc = float(ctx.get_evaluator(self.progress).evaluate(arch))
                if not (0.0 <= acc <= 1.0) or math.isnan(acc):
                    raise SearchError(f"evaluator {ctx.settings.evaluator} returned accuracy {acc!r}; allowed: [0, 1]")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the trial is recorded as FAIL; the study stays
            dt = time.perf_counter() - t0
            self.records.add(arch, codes, None, lat, None, breakdown, self.worker, dt, error=f"{type(exc).__name__}: {exc}")
            self.failures += 1  # an arch the evaluator cannot score is one FAIL trial; the search goes on
            self.failed.add(text)
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                raise SearchError(f"evaluator {ctx.settings.evaluator} failed {self.failures} times in a row; "
                                  f"last: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            return None
        dt = time.perf_counter() - t0
        self.eval_s += dt
        self.evaluated += 1
        self.failures = 0
        rec = self.records.record(arch, codes, acc, lat, ctx.reward(acc, lat), breakdown, self.worker, dt,
                                  journal=self.journal, board=self.board)
        self.accuracy[text] = acc
        return rec

    # -- the loop ------------------------------------------------------------------------------------
    def run(self, bar=None) -> list[TrialRecord]:
        trials = self.ctx.settings.trials
        while True:
            history = self.records.complete() if self.shared else self.history
            if self.shared:
                for r in history:
                    self.accuracy.setdefault(r.arch, r.accuracy)
            if len(history) >= trials:
                break
            rec = self.evaluate(self.propose(history))
            if rec is None:
                continue
            if not self.shared:
                self.history.append(rec)
            if bar is not None:
                bar.n = min(trials, len(history) + 1) if self.shared else len(self.history)
                best = best_record(self.history if not self.shared else history + [rec], self.ctx.settings.budget_ms)
                bar.set_postfix_str(f"best {best.accuracy:.3f} @ {best.latency_ms:.1f} ms", refresh=False)
                bar.refresh()
        return self.records.complete()


def sqlite_path_of(url: str) -> str | None:
    from searchers.records import sqlite_path

    p = sqlite_path(url)
    return str(p.resolve()) if p is not None else None


# ---------------------------------------------------------------------------------------------
# Workers (--workers N): N processes on one study
# ---------------------------------------------------------------------------------------------
def _worker_main(settings_dict: dict, worker: int, threads: int, seeds: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(threads)
    try:
        s = SearchSettings(**settings_dict)
        ctx = make_context(s)
        records, _ = Records.open(ctx.study_name, ctx.storage, ctx.space, s.identity(), resume=True, searcher=SEARCHER)
        ctx.get_evaluator(progress=False)
        feasible = [ctx.arch(a) for a in seeds] if seeds else probe_budget(ctx, s.seed).feasible
        board = Board(ctx.out / "tensorboard", worker)
        evo = Evolution(ctx, records, worker, shared=True, board=board, progress=False, seeds=feasible)
        evo.open_journal()
        try:
            evo.run()
        finally:
            evo.close()
            board.close()
    except EdgenasError as exc:
        print(f"error: worker {worker}: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_workers(ctx: Context, records: Records, probe: Probe | None = None) -> None:
    import multiprocessing as mp

    from tqdm import tqdm

    s = ctx.settings
    n = s.workers
    threads = max(1, (os.cpu_count() or 1) // n)
    mpc = mp.get_context("spawn")
    with mpc.Pool(n) as pool:
        seeds = [a.to_string() for a in probe.feasible] if probe is not None else None
        results = [pool.apply_async(_worker_main, (s.to_dict(), k, threads, seeds)) for k in range(n)]
        with tqdm(total=s.trials, initial=min(s.trials, records.n_complete()), desc=f"evolve x{n}", unit="arch",
                  dynamic_ncols=True, file=sys.stderr) as bar:
            while not all(r.ready() for r in results):
                time.sleep(1.0)
                bar.n = min(s.trials, records.n_complete())
                bar.refresh()
            bar.n = min(s.trials, records.n_complete())
            bar.refresh()
        codes = [r.get() for r in results]
    if any(codes):
        raise SearchError(f"{sum(1 for c in codes if c)} of {n} workers failed (see their error lines above); "
                          f"the finished trials are kept in {ctx.storage}")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from search_space.errors import OneLineParser

    p = OneLineParser(prog="python -m searchers.evolve", description=__doc__.split("\n\n")[0],
                        formatter_class=HelpFormatter)
    add_search_options(p, sweep=True)
    p.add_argument("--population", help="population size P (default: 50)")
    p.add_argument("--sample-size", dest="sample_size", help="tournament size S (default: 10)")
    p.add_argument("--crossover", help="probability of crossover before mutation (default: 0)")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", default=None,
                   help="no progress bar")
    p.add_argument("--no-zoo", dest="no_zoo", action="store_true", default=None,
                   help="do not evaluate the space's zoo networks for pareto.png (their latency is still marked)")
    return p


def search(s: SearchSettings, progress: bool = True, zoo: bool = True) -> dict:
    """Run (or continue) the search of ``s`` and write its outputs; returns the summary dict."""
    from searchers import outputs

    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    ctx = make_context(s)
    ctx.check_inputs(progress)  # evaluator options, data set, weights: before any output or storage
    if progress:
        print(f"evolve: space {ctx.space.name}, target {s.target} at {s.resolution}, budget {s.budget_ms:g} ms, "
              f"{s.reward} reward, evaluator {s.evaluator} on {s.dataset}, {s.trials} trials, seed {s.seed}",
              file=sys.stderr)
    probe = start_probe(ctx, s, timing, progress)
    records, created = open_run(SEARCHER, ctx.study_name, ctx.storage, ctx.out, ctx.space, s.identity(), s.resume)
    done = records.n_complete()
    if done < s.trials:
        t = time.perf_counter()
        ctx.get_evaluator(progress)  # trains or loads the supernet once, before any worker starts
        timing["prepare_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if s.workers > 1:
            _run_workers(ctx, records, probe)
        else:
            from tqdm import tqdm

            board = Board(ctx.out / "tensorboard", 0)
            own = sqlite_path_of(ctx.storage) == str((ctx.out / "study.db").resolve())
            evo = Evolution(ctx, records, 0, shared=not own, board=board, progress=progress, seeds=probe.feasible)
            evo.open_journal()
            try:
                with tqdm(total=s.trials, initial=len(evo.history), desc="evolve", unit="arch", dynamic_ncols=True,
                          disable=not progress, file=sys.stderr) as bar:
                    evo.run(bar)
            finally:
                evo.close()
                board.close()
            timing["eval_s"] = evo.eval_s
            timing["evaluated"] = evo.evaluated
        timing["loop_s"] = time.perf_counter() - t
        if "eval_s" in timing and timing["loop_s"] > 0:
            timing["overhead_fraction"] = 1.0 - timing["eval_s"] / timing["loop_s"]
    t = time.perf_counter()
    if progress and zoo:
        print(f"evaluating the {len(ctx.space.zoo_entries())} zoo networks of the space for reference "
              f"(cached in the study)", file=sys.stderr)
    summary = outputs.write_outputs(ctx, records, probe=probe, wall_s=time.perf_counter() - t_start,
                                    progress=progress, timing=timing, zoo=zoo)
    timing["outputs_s"] = time.perf_counter() - t
    return summary


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from searchers.cli_common import join_dash_values

    ns = build_parser().parse_args(join_dash_values(argv))
    given = given_options(ns)
    progress = not given.pop("no_progress", False)
    zoo = not given.pop("no_zoo", False)
    from searchers.sweep import is_sweep

    if is_sweep(given):  # comma lists of targets / budgets: one search per pair
        from searchers.sweep import print_sweep, run_sweep

        print_sweep(run_sweep(given, progress=progress, zoo=zoo))
        return 0
    s = resolve(given)
    summary = search(s, progress=progress, zoo=zoo)
    from searchers.outputs import print_summary

    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
