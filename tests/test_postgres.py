"""Multi-machine mode against a real PostgreSQL server on loopback: two searches started at once
with the same ``--storage postgresql://...`` and ``--study`` share one study; every trial is
recorded once and none is lost.  The server is a throwaway cluster (tests/pg_server.py)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import pg_server  # noqa: E402


@pytest.fixture(scope="module")
def postgres():
    srv = pg_server.start()  # raises (test error, not a skip) when PostgreSQL cannot be set up
    yield srv
    srv.stop()


def test_two_machines_one_study(tmp_path, postgres):
    import optuna
    from optuna.trial import TrialState

    import latency_models
    from search_space.space import load_space
    from searchers.records import open_storage

    space, model = load_space("mobile-unified"), latency_models.load("pixel-cpu")
    lats = sorted(float(x) for x in model.predict_many([space.sample(random.Random(2)) for _ in range(40)]))
    budget = f"{lats[len(lats) // 2]:.1f}ms"
    cmd = [sys.executable, "-m", "searchers.evolve", "--target", "pixel-cpu", "--budget", budget,
           "--evaluator", "proxy", "--eval-opt", "batch_size=8", "--trials", "12", "--population", "4",
           "--sample-size", "2", "--storage", postgres.url, "--study", "shared", "--no-progress", "--no-zoo"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"m{i}")], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "best architecture" in out

    study = optuna.load_study(study_name="shared", storage=open_storage(postgres.url))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert 12 <= len(trials) <= 13 and len(study.trials) == len(trials)
    journals = [[json.loads(x) for f in (tmp_path / f"m{i}" / "journal").glob("*.jsonl") for x in f.read_text().split("\n") if x]
                for i in range(2)]
    assert all(journals), "both machines evaluated trials"
    written = sorted(j["trial"] for js in journals for j in js)
    assert written == sorted(t.number for t in trials)  # each once, none lost, none foreign
    arch = {t.number: t.user_attrs["arch"] for t in trials}
    assert all(arch[j["trial"]] == j["arch"] for js in journals for j in js)
    assert study.metric_names == ["accuracy", "latency (ms)"]
