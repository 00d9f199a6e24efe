"""Where searches keep their trials: an Optuna study (+ TensorBoard), shared by every searcher.

Each evaluated architecture is one Optuna trial with two objectives, ``accuracy`` (maximize) and
``latency (ms)`` (minimize).  Its params are the space's integer encoding (one
``IntDistribution(0, n - 1)`` per decision, so optuna-dashboard can plot them), its user attrs
the arch string, the reward, the per-layer latency breakdown and the evaluation time.

A trial is written once, finished, with ``Study.add_trial`` (one transaction): a search killed
mid-evaluation leaves no half-written or forever-RUNNING trial behind, and a resumed search counts
exactly the finished ones.  (The searcher, not an Optuna sampler, proposes the archs, so the
ask/tell round trip would only add a write per param and per attr.)
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from search_space.errors import EdgenasError

METRIC_NAMES = ["accuracy", "latency (ms)"]
DIRECTIONS = ["maximize", "minimize"]
SETTINGS_ATTR = "edgenas_settings"


class StorageError(EdgenasError):
    """The study storage cannot be reached, or the study does not match the request."""


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


def driver_url(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only it is installed."""
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def _fast_storage_class():
    """``RDBStorage`` that writes a whole new finished trial (``Study.add_trial``) as plain inserts.

    For each param and each attr of a trial, Optuna's RDB storage re-reads the trial row, and for a
    param also looks up an earlier row of that name to check the distributions agree.  With a space
    of ~150 decisions that made one recorded trial cost 100-250 ms on a busy 2-core VM.  A trial
    being created from a template has no attrs yet and is ours alone, and our params all come from
    one fixed encoding (``Records.open`` refuses a study made with other settings), so here the
    distribution check runs once per param name per process and the rows are inserted in one
    ``executemany`` per table.  Everything else is Optuna's own code.
    """
    import json
    import threading

    import optuna
    from optuna.storages._rdb import models

    class FastTrialRDBStorage(optuna.storages.RDBStorage):
        def _local(self):
            loc = self.__dict__.get("_edgenas_local")
            if loc is None:
                loc = self.__dict__["_edgenas_local"] = threading.local()
                self.__dict__["_edgenas_checked"] = set()
            return loc

        def _get_prepared_new_trial(self, study_id, template_trial, session):
            loc = self._local()
            loc.creating = template_trial is not None
            loc.rows = {}
            try:
                trial = super()._get_prepared_new_trial(study_id, template_trial, session)
                for table, rows in loc.rows.items():  # one executemany per table (Core, not ORM objects)
                    session.execute(table.insert(), rows)
                return trial
            finally:
                loc.creating = False
                loc.rows = {}

        def _set_trial_param_without_commit(self, session, trial_id, param_name, param_value_internal,
                                             distribution, previous_distribution=None):
            checked = self.__dict__.get("_edgenas_checked", set())
            key = (param_name, optuna.distributions.distribution_to_json(distribution))
            if not getattr(self._local(), "creating", False) or key not in checked or previous_distribution:
                super()._set_trial_param_without_commit(session, trial_id, param_name, param_value_internal,
                                                        distribution, previous_distribution)
                checked.add(key)
                return
            self._local().rows.setdefault(models.TrialParamModel.__table__, []).append(
                {"trial_id": trial_id, "param_name": param_name, "param_value": param_value_internal,
                 "distribution_json": key[1]})

        def _set_trial_attr_without_commit(self, session, model_cls, trial_id, key, value):
            if not getattr(self._local(), "creating", False):
                return super()._set_trial_attr_without_commit(session, model_cls, trial_id, key, value)
            self._local().rows.setdefault(model_cls.__table__, []).append(
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})

    return FastTrialRDBStorage


def _use_wal(engine) -> None:
    """SQLite in WAL mode with synchronous=NORMAL: a commit no longer waits for an fsync (30 ms on a
    busy VM), and a killed process still loses nothing it committed (only a power cut could)."""
    from sqlalchemy import event

    def pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections made before the listener are dropped


def open_storage(url: str, must_exist: bool = False):
    """An Optuna ``RDBStorage`` for ``url``; unreachable or malformed URLs raise StorageError."""
    _quiet_optuna()
    import optuna
    import sqlalchemy.exc

    if url == ":memory:":  # benchmarks and tests: an in-process study
        return optuna.storages.InMemoryStorage()
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.is_file():
            raise StorageError(f"--storage: {safe_url(url)} does not exist (nothing to resume)")
        # the default storage is <run folder>/study.db: a folder that cannot be made is the --out's fault
        make_dir(path.parent, "--out" if path.name == "study.db" else "--storage")
    engine_kwargs = {"connect_args": {"timeout": 60}} if path is not None else {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(6):  # two workers creating the schema at once may collide: retry
        try:
            storage = _fast_storage_class()(driver_url(url), engine_kwargs=engine_kwargs)
            if path is not None:
                _use_wal(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            last = exc
            time.sleep(0.3 * (attempt + 1))
        except ImportError:
            raise StorageError(f"--storage: no database driver for {safe_url(url)}; allowed: sqlite:///PATH, or "
                               "postgresql://... with psycopg2-binary installed (pip install 'edgenas[postgres]')") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, OSError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"--storage: cannot use {safe_url(url)}: {reason}") from None
    raise StorageError(f"--storage: cannot set up {safe_url(url)}: {str(last).splitlines()[0]}")


def option_name(key: str) -> str:
    """The command-line flag of a stored setting: ``budget_ms`` -> ``--budget``, ``eval_opts`` -> ``--eval-opt``."""
    return {"eval_opts": "--eval-opt"}.get(key, "--" + key.replace("_ms", "").replace("_", "-"))


def check_out_dir(path, field: str = "--out") -> None:
    """One line unless ``path`` is (or can become) a folder: checked before any work or storage."""
    import os

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise StorageError(f"{field}: {p} is a file; allowed: a folder (new or existing)")
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    if not q.is_dir():
        raise StorageError(f"{field}: {p} cannot be made: {q} is a file; allowed: a folder (new or existing)")
    if not os.access(q, os.W_OK | os.X_OK):
        raise StorageError(f"{field}: {p} cannot be made: {q} is not writable; allowed: a writable folder")


def make_dir(path, field: str = "--out") -> Path:
    """``mkdir -p`` with a one-line error naming ``field`` and the path."""
    p = Path(path)
    check_out_dir(p, field)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{field}: cannot make the folder {p}: {exc.strerror or type(exc).__name__}; "
                           "allowed: a writable folder") from None
    return p


def param_names(space, n: int) -> list[str]:
    names = getattr(space, "decision_names", None)
    if callable(names):
        try:
            got = list(names())
            if len(got) == n and len(set(got)) == n:
                return [f"{i:03d}_{g}" for i, g in enumerate(got)]
        except Exception:
            pass
    return [f"x{i:03d}" for i in range(n)]


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial as a searcher sees it."""

    number: int
    arch: str
    codes: tuple[int, ...]
    accuracy: float
    latency_ms: float
    reward: float
    worker: int = 0


class Records:
    """One search's study: add finished trials, read the finished ones (incrementally)."""

    def __init__(self, study, space, storage_url: str):
        from optuna.distributions import IntDistribution

        self.study = study
        self.storage_url = storage_url
        self.space = space
        cards = [int(c) for c in space.cardinalities()]
        self.names = param_names(space, len(cards))
        self.distributions = {n: IntDistribution(0, max(0, c - 1)) for n, c in zip(self.names, cards)}
        self._seen: dict[int, TrialRecord] = {}

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, study_name: str, storage_url: str, space, identity: dict[str, Any], resume: bool,
             searcher: str) -> tuple["Records", bool]:
        """Create or join the study.  ``resume`` demands that it exist.  Returns (records, created).

        A study remembers the settings that define its search (``identity``); joining it with
        others is an error naming the first differing option.
        """
        import optuna

        storage = open_storage(storage_url, must_exist=resume)
        created = False
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            if resume:
                known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
                raise StorageError(
                    f"--resume: no study {study_name!r} in {safe_url(storage_url)}; "
                    f"known: {', '.join(known) if known else 'none'}") from None
            study = optuna.create_study(study_name=study_name, storage=storage, directions=DIRECTIONS,
                                        load_if_exists=True)
            created = True
        if list(study.directions) != [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]:
            raise StorageError(f"--study: {study_name!r} is not an edgenas search study (objectives differ)")
        wanted = json.loads(json.dumps({"searcher": searcher, **identity}, sort_keys=True))
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is None and not created:  # a creator may be a moment away from writing them
            for _ in range(20):
                time.sleep(0.25)
                stored = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(SETTINGS_ATTR)
                if stored is not None:
                    break
        if stored is None:
            study.set_user_attr(SETTINGS_ATTR, wanted)
            study.set_metric_names(METRIC_NAMES)
        else:
            for key in sorted(set(wanted) | set(stored)):
                if wanted.get(key) != stored.get(key):
                    opt = option_name(key)
                    raise StorageError(
                        f"{opt}: study {study_name!r} was run with {stored.get(key)!r}, got {wanted.get(key)!r}; "
                        f"use the same options or another --study")
        return cls(study, space, storage_url), created

    # -- writing --------------------------------------------------------------------------------
    def add(self, arch, codes: Sequence[int], accuracy: float | None, latency_ms: float, reward: float | None,
            breakdown: Iterable[tuple[str, float]] = (), worker: int = 0, eval_s: float = 0.0,
            error: str | None = None, extra: dict[str, Any] | None = None) -> int:
        """Record one evaluated arch (COMPLETE) or a failed evaluation (FAIL).  Returns its number."""
        import optuna
        from optuna.trial import TrialState

        codes = [int(c) for c in codes]
        attrs: dict[str, Any] = {
            "arch": arch if isinstance(arch, str) else arch.to_string(),
            "latency_ms": round(float(latency_ms), 6),
            "latency_breakdown": [[str(k), round(float(v), 5)] for k, v in breakdown],
            "worker": int(worker),
            "eval_s": round(float(eval_s), 4),
        }
        if extra:
            attrs.update(extra)
        if error is None:
            attrs["reward"] = float(reward)
            trial = optuna.trial.create_trial(
                state=TrialState.COMPLETE, values=[float(accuracy), float(latency_ms)],
                params=dict(zip(self.names, codes)), distributions=self.distributions, user_attrs=attrs)
        else:
            attrs["error"] = str(error)[:2000]
            trial = optuna.trial.create_trial(
                state=TrialState.FAIL, params=dict(zip(self.names, codes)),
                distributions=self.distributions, user_attrs=attrs)
        # Study.add_trial without the number it gave: the same two calls, keeping the id.
        trial._validate()  # noqa: SLF001
        storage, study_id = self.study._storage, self.study._study_id  # noqa: SLF001
        trial_id = storage.create_new_trial(study_id, template_trial=trial)
        return storage.get_trial_number_from_id(trial_id)

    def record(self, arch, codes: Sequence[int], accuracy: float, latency_ms: float, reward: float,
               breakdown: Iterable[tuple[str, float]] = (), worker: int = 0, eval_s: float = 0.0,
               journal: "Journal | None" = None, board: "Board | None" = None) -> TrialRecord:
        """Record one evaluated arch (COMPLETE), then its journal line and TensorBoard points: the one
        way every searcher writes a finished trial.  Returns it as a :class:`TrialRecord`."""
        number = self.add(arch, codes, accuracy, latency_ms, reward, breakdown, worker, eval_s)
        text = arch if isinstance(arch, str) else arch.to_string()
        rec = TrialRecord(number, text, tuple(int(c) for c in codes), float(accuracy), float(latency_ms),
                          float(reward), int(worker))
        if journal is not None:
            journal.write(rec)
        if board is not None:
            board.trial(rec)
        return rec

    # -- reading --------------------------------------------------------------------------------
    def failed_archs(self) -> set[str]:
        """Arch strings of the FAIL trials (an evaluator could not score them: not proposed again)."""
        from optuna.trial import TrialState

        return {t.user_attrs.get("arch", "") for t in
                self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}

    def complete(self) -> list[TrialRecord]:
        """All finished (COMPLETE) trials, ordered by number; only new ones are converted."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number not in self._seen:
                self._seen[t.number] = to_record(t, self.names)
        return [self._seen[n] for n in sorted(self._seen)]

    def n_complete(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def n_failed(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def to_record(t, names: Sequence[str] | None = None) -> TrialRecord:
    names = names or sorted(t.params)
    codes = tuple(int(t.params[n]) for n in names if n in t.params)
    acc, lat = t.values
    return TrialRecord(t.number, t.user_attrs.get("arch", ""), codes, float(acc), float(lat),
                       float(t.user_attrs.get("reward", math.nan)), int(t.user_attrs.get("worker", 0)))


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Non-dominated records (higher accuracy, lower latency), by increasing latency."""
    out: list[TrialRecord] = []
    best_acc = -math.inf
    for r in sorted(records, key=lambda r: (r.latency_ms, -r.accuracy, r.number)):
        if r.accuracy > best_acc:
            out.append(r)
            best_acc = r.accuracy
    return out


def best_record(records: Sequence[TrialRecord], budget_ms: float) -> TrialRecord | None:
    """Highest reward among the archs within the budget; over budget only if none is within it."""
    if not records:
        return None
    feasible = [r for r in records if r.latency_ms <= budget_ms]
    pool = feasible or list(records)
    return max(pool, key=lambda r: (r.reward, r.accuracy, -r.number))


# ---------------------------------------------------------------------------------------------
# A run's folder: study name, storage, journal
# ---------------------------------------------------------------------------------------------
def run_paths(searcher: str, s) -> tuple[str, Path, str]:
    """(study name, run folder, storage URL) of a search with settings ``s`` (a SearchSettings)."""
    import sys

    from searchers.cli_common import dataset_suffix, default_study_name, legacy_run_name, sqlite_url

    study = s.study or default_study_name(searcher, s)
    if not (s.study or s.out or s.storage):  # a run made before the default name named the data set: resume it
        legacy = study[: len(study) - len(dataset_suffix(s.dataset))]
        study = legacy_run_name(study, legacy, s.dataset, say=lambda line: print(line, file=sys.stderr))
    out = Path(s.out) if s.out else Path("runs") / study
    check_out_dir(out)
    storage = s.storage or sqlite_url(out / "study.db")
    return study, out, storage


def open_run(searcher: str, study_name: str, storage_url: str, out: Path, space, identity: dict[str, Any],
             resume: bool, file=None) -> tuple["Records", bool]:
    """Create or join a search's study (``Records.open``), make its run folder and, when the study
    already had trials, say how many.  Returns (records, created)."""
    import sys

    records, created = Records.open(study_name, storage_url, space, identity, resume=resume, searcher=searcher)
    make_dir(out)
    if not created:
        print(f"study {study_name}: {records.n_complete()} finished trials in {safe_url(records.storage_url)}",
              file=file or sys.stderr)
    return records, created


class Journal:
    """A local JSON-lines log of the trials this process wrote: ``<run>/journal/<host>-<pid>-w<k>.jsonl``
    (with a shared remote study, each machine keeps its own account)."""

    def __init__(self, out: Path, worker: int = 0):
        import os
        import socket

        self.path = Path(out) / "journal" / f"{socket.gethostname()}-{os.getpid()}-w{worker}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a", buffering=1)

    def write(self, rec: TrialRecord) -> None:
        self.file.write(json.dumps({"trial": rec.number, "worker": rec.worker, "accuracy": rec.accuracy,
                                    "latency_ms": rec.latency_ms, "reward": rec.reward, "arch": rec.arch}) + "\n")

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------------------------
class Board:
    """TensorBoard events in ``<run>/tensorboard``: per-trial reward, accuracy, latency, best so far,
    and at the end the Pareto scatter (image) and the hparams."""

    def __init__(self, logdir: Path, worker: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir) / (f"worker{worker}" if worker else "")
        self.writer = SummaryWriter(log_dir=str(self.logdir), flush_secs=10)
        self.best = -math.inf

    def trial(self, rec: TrialRecord) -> None:
        w, step = self.writer, rec.number
        w.add_scalar("trial/reward", rec.reward, step)
        w.add_scalar("trial/accuracy", rec.accuracy, step)
        w.add_scalar("trial/latency_ms", rec.latency_ms, step)
        self.best = max(self.best, rec.reward)
        w.add_scalar("best/reward", self.best, step)

    def finish(self, figure=None, hparams: dict | None = None, metrics: dict | None = None) -> None:
        if figure is not None:
            self.writer.add_figure("pareto", figure, close=False)
        if hparams is not None:
            clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
            self.writer.add_hparams(clean, metrics or {}, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["Board", "Journal", "METRIC_NAMES", "Records", "open_run", "run_paths", "StorageError", "TrialRecord", "best_record", "check_out_dir", "make_dir",
           "open_storage", "option_name",
           "pareto_front", "to_record"]
