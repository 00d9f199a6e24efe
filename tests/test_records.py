"""searchers.records: the Optuna study of a search (real space, real SQLite storage)."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from _fs import mkdir_fails_under  # tests/_fs.py

SPACE = "mobile-unified"


@pytest.fixture(scope="module")
def space():
    from search_space.space import load_space

    return load_space(SPACE)


IDENTITY = {"target": "pixel-cpu", "budget_ms": 60.0, "space": SPACE, "reward": "soft", "w": None}


def test_trials_round_trip(tmp_path, space):
    from optuna.trial import TrialState

    from searchers.records import Records

    url = f"sqlite:///{tmp_path / 's.db'}"
    rec, created = Records.open("s1", url, space, IDENTITY, resume=False, searcher="evolve")
    assert created and rec.study.metric_names == ["accuracy", "latency (ms)"]
    assert [d.high + 1 for d in rec.distributions.values()] == list(space.cardinalities())
    assert all(n.split("_", 1)[1] == d for n, d in zip(rec.names, space.decision_names()))
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(5)]
    numbers = []
    for i, a in enumerate(archs):
        codes = space.encode(a)
        numbers.append(rec.add(a, codes, 0.5 + i / 20, 30.0 + i, (0.5 + i / 20) * 0.99,
                               [("stem@3x224x224", 1.0)], worker=0, eval_s=0.1))
    bad = rec.add(archs[0], space.encode(archs[0]), None, 30.0, None, (), error="RuntimeError: boom")
    assert numbers == [0, 1, 2, 3, 4] and bad == 5
    got = rec.complete()
    assert [r.number for r in got] == numbers
    for r, a in zip(got, archs):
        assert r.arch == a.to_string() and space.decode(list(r.codes)) == a
    assert rec.n_complete() == 5 and rec.n_failed() == 1
    failed = rec.study.get_trials(states=(TrialState.FAIL,))[0]
    assert failed.user_attrs["error"] == "RuntimeError: boom" and failed.values is None

    # a second handle (another process / machine) sees the same trials and can add more
    other, created = Records.open("s1", url, space, IDENTITY, resume=True, searcher="evolve")
    assert not created and [r.number for r in other.complete()] == numbers
    assert other.add(archs[1], space.encode(archs[1]), 0.9, 20.0, 0.9, ()) == 6
    assert [r.number for r in rec.complete()] == numbers + [6]  # the first handle reads it incrementally


def test_open_errors(tmp_path, space):
    from searchers.records import Records, StorageError

    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(StorageError, match=r"does not exist \(nothing to resume\)"):
        Records.open("nope", url, space, IDENTITY, resume=True, searcher="evolve")
    Records.open("s1", url, space, IDENTITY, resume=False, searcher="evolve")
    with pytest.raises(StorageError, match=r"--resume: no study 'nope' in sqlite:///.*; known: s1$"):
        Records.open("nope", url, space, IDENTITY, resume=True, searcher="evolve")
    with pytest.raises(StorageError, match=r"^--target: study 's1' was run with 'pixel-cpu', got 'note10-cpu'"):
        Records.open("s1", url, space, {**IDENTITY, "target": "note10-cpu"}, resume=True, searcher="evolve")
    rec, _ = Records.open("s1", url, space, IDENTITY, resume=True, searcher="evolve")
    arch = space.sample(random.Random(0))
    rec.add(arch, space.encode(arch), 0.5, 30.0, 0.5, ())  # a finished trial: its settings are now kept
    with pytest.raises(StorageError, match=r"^--budget: study 's1' was run with 60.0, got 45.0"):
        Records.open("s1", url, space, {**IDENTITY, "budget_ms": 45.0}, resume=False, searcher="evolve")
    with pytest.raises(StorageError, match=r"^--eval-opt: study 's1' was run with None, got \{'epochs': 3\}"):
        Records.open("s1", url, space, {**IDENTITY, "eval_opts": {"epochs": 3}}, resume=False, searcher="evolve")
    with pytest.raises(StorageError, match=r"^--storage: cannot use postgresql://u:\*\*\*@127.0.0.1:9/x: "):
        Records.open("s1", "postgresql://u:pw@127.0.0.1:9/x", space, IDENTITY, resume=False, searcher="evolve")


def test_study_without_finished_trials_keeps_its_settings(tmp_path, space):
    """A study keeps the settings it was made with even with no finished trial: a live run has none while
    its supernet trains, and a second command with other options must not rewrite them (it is refused)."""
    from searchers.records import SETTINGS_ATTR, Records, StorageError

    url = f"sqlite:///{tmp_path / 's.db'}"
    rec, created = Records.open("s1", url, space, {**IDENTITY, "dataset": "a.npz"}, resume=False, searcher="evolve")
    assert created and rec.n_complete() == 0
    for resume in (False, True):
        with pytest.raises(StorageError, match=r"^--dataset: study 's1' was run with 'a.npz', got 'fashion-mnist'; "
                                               r"use the same options or another --study$"):
            Records.open("s1", url, space, {**IDENTITY, "dataset": "fashion-mnist"}, resume=resume, searcher="evolve")
    arch = space.sample(random.Random(1))
    rec.add(arch, space.encode(arch), None, 30.0, None, (), error="RuntimeError: boom")  # failed trials only
    with pytest.raises(StorageError, match=r"^--dataset: study 's1' was run with 'a.npz', got 'x.npz'"):
        Records.open("s1", url, space, {**IDENTITY, "dataset": "x.npz"}, resume=False, searcher="evolve")
    again, created = Records.open("s1", url, space, {**IDENTITY, "dataset": "a.npz"}, resume=False, searcher="evolve")
    assert not created and again.study.user_attrs[SETTINGS_ATTR]["dataset"] == "a.npz"


def test_out_folder_errors(tmp_path, monkeypatch):
    import os

    from searchers.records import StorageError, check_out_dir, make_dir, open_storage

    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(StorageError, match=rf"^--out: {f} is a file; allowed: a folder \(new or existing\)$"):
        check_out_dir(f)
    with pytest.raises(StorageError, match=rf"^--out: {f / 'x'} cannot be made: {f} is a file; allowed: "):
        check_out_dir(f / "x")
    # a folder that is not writable (root may write anywhere: there os.access is made to say no)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == ro else real_access(p, m, *a, **k))
    try:
        with pytest.raises(StorageError, match=rf"^--out: {ro / 'x' / 'y'} cannot be made: {ro} is not writable; "
                                               r"allowed: a writable folder$"):
            make_dir(ro / "x" / "y")
        assert not (ro / "x").exists()
    finally:
        monkeypatch.undo()
        ro.chmod(0o755)
    # mkdir itself fails (e.g. a full disk): the OS reason, the same line for root and any other user
    mkdir_fails_under(monkeypatch, tmp_path / "full")
    with pytest.raises(StorageError, match=rf"^--out: cannot make the folder {tmp_path / 'full' / 'x'}: No space left on "
                                           r"device; allowed: a writable folder$"):
        make_dir(tmp_path / "full" / "x")
    monkeypatch.undo()
    with pytest.raises(StorageError, match=rf"^--out: {f} is a file"):  # the default storage, <out>/study.db
        open_storage(f"sqlite:///{f / 'study.db'}")
    with pytest.raises(StorageError, match=rf"^--storage: {f} is a file"):
        open_storage(f"sqlite:///{f / 'other.db'}")
    check_out_dir(tmp_path / "new" / "deeper")  # a folder that can be made is fine, and is not made yet
    assert not (tmp_path / "new").exists()


def test_pareto_and_best():
    from searchers.records import TrialRecord, best_record, pareto_front

    def r(n, acc, lat, reward):
        return TrialRecord(n, f"a{n}", (), acc, lat, reward)

    recs = [r(0, 0.80, 50, 0.81), r(1, 0.85, 70, 0.84), r(2, 0.79, 55, 0.79), r(3, 0.90, 90, 0.88),
            r(4, 0.85, 65, 0.85), r(5, 0.70, 20, 0.75)]
    assert [x.number for x in pareto_front(recs)] == [5, 0, 4, 3]
    assert best_record(recs, 60).number == 0  # the best reward within the budget...
    assert best_record(recs, 10).number == 3  # ...or, when none is within it, the best reward of all
    assert best_record([], 60) is None
    assert math.isclose(best_record(recs, 100).reward, 0.88)
