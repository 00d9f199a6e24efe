"""Platform-aware RL search (MnasNet): an LSTM controller samples archs, policy gradients train it.

    python -m searchers.rl --target pixel-cpu --budget 60ms [--algo ppo|reinforce]

The controller (``searchers.controller``) emits one token per decision of the space's factorized
encoding (``Space.encode`` / ``cardinalities()``); the arch is ``space.decode(tokens)``.  Each
update samples ``--batch`` archs, scores each with MnasNet's reward ACC * (LAT / T) ** w (latency
from the target's latency model, accuracy from the evaluator) and takes a PPO step (MnasNet's
choice; ``--algo reinforce``: REINFORCE with a moving-average baseline), with an entropy bonus.

The same options, records and outputs as ``searchers.evolve``: every evaluated arch is a trial of
an Optuna study (SQLite in the run folder, or ``--storage``), progress goes to the terminal and to
TensorBoard (plus the controller's mean reward, baseline and entropy per update), and the run
folder gets ``best/``, ``pareto.csv``, ``pareto.png``, ``zoo.csv`` and ``summary.json``.
``--trials`` counts distinct archs: an arch sampled again is not evaluated again (its recorded
reward feeds the update), and a code list that decodes to no valid arch (or to one that the space's
``min_input`` collapses, which ``Space.sample`` would not return either) gets reward 0.

The controller (weights, optimizer, baseline, sampling generator) is checkpointed after every
update in ``<run>/controller.pt``; ``--resume`` reloads it, regenerates the interrupted batch
(its archs already in the study are not evaluated again) and goes on, so a killed search loses
and repeats nothing and ends as an uninterrupted one with the same seed would.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from search_space.errors import SpaceError, cli_entry
from searchers.cli_common import (HelpFormatter, OptionError, SearchSettings, add_search_options, given_options,
                                  resolve)
from searchers.controller import ALGOS, ControllerError, PGConfig, PolicyGradient
from searchers.evolve import Context, Evolution, make_context, start_probe
from searchers.records import Board, Records, best_record, open_run
from searchers.records import run_paths as records_run_paths

SEARCHER = "rl"
CHECKPOINT = "controller.pt"
STALE_UPDATES = 5      # updates in a row without a new arch before sampling is flattened
EXPLORE_STEP = 1.5     # ... by this factor on the logits' temperature (reset by a new arch)
MAX_EXPLORE = 20.0

RL_OPTIONS = {  # option -> (PGConfig field, parser)
    "algo": ("algo", str), "batch": ("batch", int), "lr": ("lr", float), "entropy": ("entropy", float),
    "baseline_decay": ("baseline_decay", float), "clip": ("clip", float), "ppo_epochs": ("ppo_epochs", int),
    "hidden": ("hidden", int),
}


def pg_config(given: dict) -> PGConfig:
    """The controller settings from the given options (popped from ``given``); one-line errors."""
    cfg = PGConfig()
    for opt, (fld, conv) in RL_OPTIONS.items():
        v = given.pop(opt, None)
        if v is None:
            continue
        try:
            value = conv(str(v).strip())
        except ValueError:
            what = {int: "an integer", float: "a number"}.get(conv, ", ".join(ALGOS))
            raise OptionError(f"--{opt.replace('_', '-')}: got {v!r}; allowed: {what}") from None
        setattr(cfg, fld, value)
    return cfg.check()


def run_paths(s: SearchSettings) -> tuple[str, Path, str]:
    return records_run_paths(SEARCHER, s)


def identity(s: SearchSettings, cfg: PGConfig) -> dict:
    """What defines an RL search: the shared settings less evolution's, plus the controller's."""
    ident = {k: v for k, v in s.identity().items() if k not in ("population", "sample_size", "crossover")}
    return {**ident, **cfg.to_dict()}


def _fits(space, arch) -> bool:
    """``space.fits_input(arch)`` where the space has it (``sample``/``mutate`` only return such archs)."""
    fits = getattr(space, "fits_input", None)
    return True if fits is None else bool(fits(arch))


# ---------------------------------------------------------------------------------------------
# The search loop
# ---------------------------------------------------------------------------------------------
class RLSearch(Evolution):
    """The controller's loop; evaluation, records, journal and TensorBoard are evolution's
    (``Evolution.evaluate``), so a trial of either searcher is the same record."""

    def __init__(self, ctx: Context, records: Records, pg: PolicyGradient, checkpoint: Path,
                 board: Board | None = None, progress: bool = True):
        super().__init__(ctx, records, 0, shared=False, board=board, progress=progress)
        self.pg, self.checkpoint = pg, Path(checkpoint)
        self.reward_of = {r.arch: r.reward for r in self.history}
        self.position = {r.arch: i for i, r in enumerate(self.history)}
        self.failed |= records.failed_archs()  # FAIL trials of an earlier run are not evaluated again
        self.batch_start = 0  # history length when the current batch was sampled
        self.stale = 0
        self.invalid = 0
        self.log: list[dict] = []

    # -- checkpoints ------------------------------------------------------------------------------
    def load(self, fresh: bool) -> str:
        """Reload the controller unless the study is new; returns a one-line notice ('' if none)."""
        import torch

        if fresh or not self.checkpoint.is_file():
            if self.checkpoint.is_file():
                self.checkpoint.unlink()  # a stale checkpoint of an earlier, deleted study
            return "" if not self.history else \
                f"no controller checkpoint in {self.checkpoint.parent}: the controller starts afresh " \
                f"(the {len(self.history)} finished trials are reused as a cache)"
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ControllerError(f"checkpoint: cannot read {self.checkpoint}: {type(exc).__name__}") from None
        if state.get("study") != self.ctx.study_name:
            raise ControllerError(f"checkpoint: {self.checkpoint} belongs to study {state.get('study')!r}, "
                                  f"not {self.ctx.study_name!r}; use another --out")
        if state["n_history"] > len(self.history):
            raise ControllerError(f"checkpoint: {self.checkpoint} is ahead of the study ({state['n_history']} > "
                                  f"{len(self.history)} finished trials); use another --out")
        self.pg.load_state_dict(state["pg"])
        self.batch_start, self.stale, self.invalid = state["n_history"], state["stale"], state.get("invalid", 0)
        return f"controller: resumed after update {self.pg.updates}"

    def save(self) -> None:
        import torch

        state = {"study": self.ctx.study_name, "n_history": len(self.history), "stale": self.stale,
                 "invalid": self.invalid, "pg": self.pg.state_dict()}
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(f".{self.checkpoint.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint)  # atomic: a kill leaves the old or the new one

    # -- one sample -------------------------------------------------------------------------------
    def score(self, tokens: list[int]) -> tuple[float, str]:
        """(reward, status) of one token sequence; status: ``new`` (a trial of this batch), ``seen``
        (evaluated in an earlier batch) or ``invalid`` (no valid arch, not scorable, or failed: reward 0)."""
        space = self.pspace  # the controller's decisions are those of the proposal space
        try:
            arch = space.decode(tokens)
        except SpaceError:
            arch = None
        if arch is None or not _fits(space, arch):  # no valid arch, or one that a small input collapses in
            self.invalid += 1
            return 0.0, "invalid"
        text = arch.to_string()
        if text in self.reward_of:  # evaluated before (this run, or before a resume)
            return self.reward_of[text], "new" if self.position[text] >= self.batch_start else "seen"
        if text in self.failed or not self._admissible(arch):
            return 0.0, "invalid"
        rec = self.evaluate(arch)
        if rec is None:  # a FAIL trial (recorded by evaluate)
            return 0.0, "invalid"
        self.position[text] = len(self.history)
        self.history.append(rec)
        self.reward_of[text] = rec.reward
        return rec.reward, "new"

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, bar=None):
        trials = self.ctx.settings.trials
        budget = self.ctx.settings.budget_ms
        while len(self.history) < trials:
            tokens, old_logp = self.pg.sample()
            rewards, new, seen = [], 0, 0
            for tok in tokens:
                r, status = self.score(tok)
                rewards.append(r)
                new += status == "new"
                seen += status == "seen"
                if bar is not None and status == "new":
                    bar.n = min(trials, len(self.history))
                    best = best_record(self.history, budget)
                    if best is not None:
                        bar.set_postfix_str(f"best {best.accuracy:.3f} @ {best.latency_ms:.1f} ms, "
                                            f"update {self.pg.updates}, {self.invalid} invalid", refresh=False)
                    bar.refresh()
                if len(self.history) >= trials:
                    return self.records.complete()  # the count is reached: no update on a partial batch
            # stale: the policy only proposes archs it already had (invalid code lists do not count:
            # reward 0 teaches the policy to avoid them, flattening it would not)
            self.stale = 0 if new else self.stale + (seen > 0)
            stats = self.pg.update(tokens, rewards, old_logp)
            if self.stale >= STALE_UPDATES:  # the policy keeps proposing evaluated archs: flatten it
                self.pg.explore = min(MAX_EXPLORE, self.pg.explore * EXPLORE_STEP)
            elif new:
                self.pg.explore = 1.0
            stats.update(update=self.pg.updates, new=new, seen=seen, explore=self.pg.explore)
            self.log.append(stats)
            if self.board is not None:
                w = self.board.writer
                for k in ("reward_mean", "baseline", "entropy", "explore"):
                    w.add_scalar(f"controller/{k}", stats[k], self.pg.updates)
            self.batch_start = len(self.history)
            self.save()
        return self.records.complete()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from search_space.errors import OneLineParser

    p = OneLineParser(prog="python -m searchers.rl", description=__doc__.split("\n\n")[0],
                        formatter_class=HelpFormatter)
    add_search_options(p)
    d = PGConfig()
    p.add_argument("--algo", help=f"policy gradient: ppo (MnasNet) or reinforce (default: {d.algo})")
    p.add_argument("--batch", help=f"archs sampled per controller update (default: {d.batch})")
    p.add_argument("--lr", help=f"controller learning rate, Adam (default: {d.lr})")
    p.add_argument("--entropy", help=f"entropy bonus weight (default: {d.entropy})")
    p.add_argument("--baseline-decay", dest="baseline_decay",
                   help=f"moving-average baseline decay (default: {d.baseline_decay})")
    p.add_argument("--clip", help=f"PPO clip epsilon (default: {d.clip})")
    p.add_argument("--ppo-epochs", dest="ppo_epochs", help=f"PPO passes per batch (default: {d.ppo_epochs})")
    p.add_argument("--hidden", help=f"controller LSTM width (default: {d.hidden})")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", default=None, help="no progress bar")
    p.add_argument("--no-zoo", dest="no_zoo", action="store_true", default=None,
                   help="do not evaluate the space's zoo networks for pareto.png (their latency is still marked)")
    return p


def search(s: SearchSettings, cfg: PGConfig, progress: bool = True, zoo: bool = True) -> dict:
    """Run (or continue) the RL search of ``s`` and write its outputs; returns the summary dict."""
    from searchers import outputs

    if s.workers != 1:
        raise OptionError(f"--workers: got {s.workers}; allowed: 1 for searchers.rl (one controller); "
                          "spread evaluations with searchers.evolve --workers")
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    ctx = make_context(s)
    ctx.study_name, ctx.out, ctx.storage = run_paths(s)
    ctx.check_inputs(progress)  # evaluator options, data set, weights: before any output or storage
    if progress:
        print(f"rl ({cfg.algo}): space {ctx.space.name} ({len(ctx.space.cardinalities())} decisions), target "
              f"{s.target} at {s.resolution}, budget {s.budget_ms:g} ms, {s.reward} reward, evaluator {s.evaluator} "
              f"on {s.dataset}, {s.trials} trials, {cfg.batch} per update, seed {s.seed}", file=sys.stderr)
    probe = start_probe(ctx, s, timing, progress)
    records, created = open_run(SEARCHER, ctx.study_name, ctx.storage, ctx.out, ctx.space, identity(s, cfg), s.resume)
    done = records.n_complete()
    log: list[dict] = []
    if done < s.trials:
        t = time.perf_counter()
        ctx.get_evaluator(progress)
        timing["prepare_s"] = time.perf_counter() - t
        pspace = ctx.proposal_space()  # a supernet's scope, when it covers only part of the space
        if pspace is not ctx.space and progress:
            print(f"rl: the controller decides over {pspace.name} ({len(pspace.cardinalities())} decisions), the "
                  f"part of {ctx.space.name} the {s.evaluator} evaluator scores", file=sys.stderr)
        pg = PolicyGradient(pspace.cardinalities(), cfg, seed=s.seed)
        t = time.perf_counter()
        from tqdm import tqdm

        board = Board(ctx.out / "tensorboard", 0)
        rl = RLSearch(ctx, records, pg, ctx.out / CHECKPOINT, board=board, progress=progress)
        notice = rl.load(fresh=created)
        if notice:
            print(notice, file=sys.stderr)
        rl.open_journal()
        try:
            with tqdm(total=s.trials, initial=len(rl.history), desc=f"rl {cfg.algo}", unit="arch",
                      dynamic_ncols=True, disable=not progress, file=sys.stderr) as bar:
                rl.run(bar)
        finally:
            rl.close()
            board.close()
        log = rl.log
        timing.update(eval_s=rl.eval_s, evaluated=rl.evaluated, loop_s=time.perf_counter() - t)
        if timing["loop_s"] > 0:
            timing["overhead_fraction"] = 1.0 - timing["eval_s"] / timing["loop_s"]
        invalid = rl.invalid
    else:
        invalid = None
    t = time.perf_counter()
    if progress and zoo:
        print(f"evaluating the {len(ctx.space.zoo_entries())} zoo networks of the space for reference "
              f"(cached in the study)", file=sys.stderr)
    summary = outputs.write_outputs(ctx, records, probe=probe, wall_s=time.perf_counter() - t_start,
                                    progress=progress, timing=timing, zoo=zoo)
    summary["searcher"] = SEARCHER
    summary["controller"] = {**cfg.to_dict(), "updates_this_run": len(log), "checkpoint": str(ctx.out / CHECKPOINT),
                             "invalid_samples": invalid,
                             "reward_mean_first": log[0]["reward_mean"] if log else None,
                             "reward_mean_last": log[-1]["reward_mean"] if log else None}
    (Path(ctx.out) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from searchers.cli_common import join_dash_values

    ns = build_parser().parse_args(join_dash_values(argv))
    given = given_options(ns, extra=tuple(RL_OPTIONS))
    progress = not given.pop("no_progress", False)
    zoo = not given.pop("no_zoo", False)
    cfg = pg_config(given)
    s = resolve(given)
    summary = search(s, cfg, progress=progress, zoo=zoo)
    from searchers.outputs import print_summary

    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
