"""searchers.evolve end to end on the real space, latency model, proxy evaluator and Optuna storage.

Small on purpose (tens of trials, the trainless proxy evaluator on an 8-image batch); the search
quality and overhead goals are measured by benchmarks/search_quality.py and search_overhead.py.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _fs import mkdir_fails_under  # tests/_fs.py
import torch

torch.set_num_threads(1)  # in-process searches: one thread (a shared 2-core CI machine)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # and the same for the subprocess ones
REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SPACE = "mobile-unified"
TARGET = "pixel-cpu"
FAST = ["--evaluator", "proxy", "--eval-opt", "batch_size=8", "--no-progress", "--no-zoo"]


@pytest.fixture(scope="module")
def budget_ms() -> float:
    """A budget a fifth of random archs meet (small, fast-to-build nets): from the latency model itself."""
    import latency_models
    from search_space.space import load_space

    space, model = load_space(SPACE), latency_models.load(TARGET)
    rng = random.Random(1)
    lats = sorted(float(x) for x in model.predict_many([space.sample(rng) for _ in range(60)]))
    return round(lats[len(lats) // 5], 1)


def run_main(args: list[str]) -> int:
    from searchers.evolve import main

    return main([str(a) for a in args])


def load_study(out: Path, name: str | None = None):
    import optuna

    storage = f"sqlite:///{out / 'study.db'}"
    names = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name or names[0], storage=storage)


def complete(study):
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


# ------------------------------------------------------------------------------------------------
# Budgets and reward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,ms", [("60ms", 60.0), ("60 ms", 60.0), ("0.06s", 60.0), (" 7.5ms ", 7.5),
                                     ("1e2ms", 100.0)])
def test_budget_accepts(text, ms):
    from searchers.cli_common import parse_budget

    assert parse_budget(text) == pytest.approx(ms)


@pytest.mark.parametrize("text,msg", [("60", "without a unit"), (60, "without a unit"), ("60us", "allowed: a positive"),
                                      ("0ms", "allowed: a positive"), ("-5ms", "allowed: a positive"),
                                      ("", "allowed: a positive"), ("fast", "allowed: a positive"),
                                      ("60 m s", "allowed: a positive")])
def test_budget_rejects(text, msg):
    from searchers.cli_common import OptionError, parse_budget

    with pytest.raises(OptionError, match=msg) as exc:
        parse_budget(text)
    assert str(exc.value).startswith("--budget: got ") and "\n" not in str(exc.value)


def test_reward_is_mnasnets():
    from searchers.reward import Reward

    soft = Reward.make(80.0)  # MnasNet: alpha = beta = -0.07
    assert (soft.alpha, soft.beta) == (-0.07, -0.07)
    assert soft(0.75, 80.0) == pytest.approx(0.75)
    # "a model twice as slow gets about 5% lower reward" (2 ** -0.07 = 0.9526)
    assert soft(0.75, 160.0) == pytest.approx(0.75 * 0.952638, rel=1e-5)
    assert soft(0.75, 40.0) == pytest.approx(0.75 * 1.049717, rel=1e-5)
    hard = Reward.make(80.0, "hard")  # alpha = 0, beta = -1
    assert hard(0.75, 40.0) == 0.75 and hard(0.75, 80.0) == 0.75
    assert hard(0.75, 160.0) == pytest.approx(0.375)
    assert Reward.make(80.0, "soft", w=-0.15)(0.5, 160.0) == pytest.approx(0.5 * 2 ** -0.15)


# ------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing recorded lost
# ------------------------------------------------------------------------------------------------
def _bad(args, capsys):
    capsys.readouterr()  # drop what earlier runs printed
    rc = run_main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [x for x in err.splitlines() if not x.startswith("study ")]  # "study X: N finished trials in ..."
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_inputs(tmp_path, capsys, budget_ms):
    ok = ["--budget", f"{budget_ms}ms", "--out", tmp_path / "run"]
    msg = _bad(["--target", "nokia-3310", *ok, *FAST], capsys)
    assert "--target: got 'nokia-3310'; allowed:" in msg and "pixel-cpu" in msg and "note10-cpu" in msg
    msg = _bad(["--target", TARGET, *ok, "--space", "nope", *FAST], capsys)
    assert "--space: got 'nope'" in msg and SPACE in msg and "ofa-mbv3" in msg
    msg = _bad(["--target", TARGET, *ok, "--evaluator", "oracle", "--no-progress"], capsys)
    assert msg == "error: --evaluator: got 'oracle'; allowed: supernet, train, proxy, predictor"
    msg = _bad(["--target", TARGET, "--budget", "60", "--out", tmp_path / "run", *FAST], capsys)
    assert "--budget: got '60' without a unit" in msg
    msg = _bad(["--target", TARGET, "--budget=-3ms", "--out", tmp_path / "run", *FAST], capsys)
    assert "--budget: got '-3ms'; allowed: a positive latency" in msg
    msg = _bad(["--target", TARGET, *ok, "--resume", *FAST], capsys)
    assert "does not exist (nothing to resume)" in msg
    assert not (tmp_path / "run" / "study.db").exists()
    msg = _bad(["--target", TARGET, *ok, "--storage", "postgresql://nobody:secret@127.0.0.1:9/none", *FAST], capsys)
    assert msg.startswith("error: --storage: cannot use postgresql://nobody:***@127.0.0.1:9/none") and "secret" not in msg
    # an infeasible budget is found by the latency model before any evaluation
    msg = _bad(["--target", TARGET, "--budget", "0.5ms", "--out", tmp_path / "run", *FAST], capsys)
    assert re.fullmatch(rf"error: no architecture of space {SPACE} reaches 0.5 ms on {TARGET}; "
                        r"the fastest seen is \d+\.\d ms", msg), msg
    assert not (tmp_path / "run").exists()


def test_cli_prints_no_traceback():
    r = subprocess.run([PY, "-m", "searchers.evolve", "--target", TARGET, "--budget", "60 parsecs"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --budget: got '60 parsecs'; allowed: a positive latency such as 60ms, 60 ms or 0.06s"


# ------------------------------------------------------------------------------------------------
# A real (small) search
# ------------------------------------------------------------------------------------------------
def test_search_records_outputs_and_determinism(tmp_path, capsys, monkeypatch, budget_ms):
    import optuna
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import latency_models
    from search_space.arch import Arch, signatures
    from search_space.space import load_space
    from searchers.records import pareto_front, to_record

    args = ["--target", TARGET, "--budget", f"{budget_ms}ms", "--trials", 12, "--population", 6,
            "--sample-size", 3, "--seed", 3, *FAST]
    from search_space.space import Space

    # the zoo reference points: two small ones of the space's 36 keep the test fast
    monkeypatch.setattr(Space, "zoo_entries", lambda self: [("mobilenet_v3_small", 0.35), ("shufflenet_v2", 0.5)])
    assert run_main([*[a for a in args if a != "--no-zoo"], "--out", tmp_path / "a"]) == 0  # with the zoo
    out = capsys.readouterr().out
    assert "best architecture (trial" in out and "predicted latency:" in out and "accuracy:" in out
    assert str(tmp_path / "a") in out

    space, model = load_space(SPACE), latency_models.load(TARGET)
    study = load_study(tmp_path / "a")
    assert study.metric_names == ["accuracy", "latency (ms)"]
    trials = complete(study)
    assert len(trials) == 12 and len(study.trials) == 12
    for t in trials:
        arch = Arch.from_string(t.user_attrs["arch"])
        assert [t.params[n] for n in sorted(t.params)] == list(space.encode(arch))  # params = the encoding
        assert set(t.distributions.values()) <= {optuna.distributions.IntDistribution(0, c - 1)
                                                 for c in space.cardinalities()}
        acc, lat = t.values
        assert lat == pytest.approx(model.predict(arch, resolution=224), rel=1e-9)
        assert t.user_attrs["reward"] == pytest.approx(acc * (lat / budget_ms) ** -0.07)
        keys = [k for k, _ in t.user_attrs["latency_breakdown"]]
        assert keys == [k for k, _ in model.breakdown(arch, resolution=224)]
        assert len(keys) >= len(signatures(arch, 224)) - 1
    # the first six are the initial population, then children of it
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    best = summary["best"]
    assert summary["trials"] == 12 and summary["seed"] == 3 and summary["versions"]["optuna"] == optuna.__version__
    assert summary["target_file"] == f"{latency_models.target_path(TARGET).name} ({model.meta['device']})"
    feasible = [t for t in trials if t.values[1] <= budget_ms]
    if feasible:
        assert best["within_budget"]
        assert best["reward"] == pytest.approx(max(t.user_attrs["reward"] for t in feasible))
    for f in ("best/arch.yaml", "best/model.py", "best/model.onnx", "pareto.csv", "pareto.png", "summary.json"):
        assert (tmp_path / "a" / f).stat().st_size > 0, f
    assert Arch.load(tmp_path / "a" / "best" / "arch.yaml").to_string() == best["arch"]
    from search_space import zoo
    from searchers.evaluators import get_evaluator

    zoo_rows = {(z["name"], z["width"]): z for z in summary["zoo"]}
    assert set(zoo_rows) == {("mobilenet_v3_small", 0.35), ("shufflenet_v2", 0.5)}
    small = zoo.get("mobilenet_v3_small", 0.35)
    assert zoo_rows[("mobilenet_v3_small", 0.35)]["latency_ms"] == pytest.approx(model.predict(small, resolution=224))
    proxy = get_evaluator("proxy", space=space, seed=3, batch_size=8)
    assert zoo_rows[("mobilenet_v3_small", 0.35)]["accuracy"] == pytest.approx(proxy.evaluate(small))
    assert study.user_attrs["edgenas_zoo_accuracy"]["mobilenet_v3_small@0.35"] == pytest.approx(proxy.evaluate(small))
    rows = (tmp_path / "a" / "pareto.csv").read_text().splitlines()
    front = pareto_front([to_record(t) for t in trials])
    assert [int(r.split(",")[0]) for r in rows[1:]] == [r.number for r in front]
    for r in front:  # nothing on the front is dominated
        assert not any(t.values[0] > r.accuracy and t.values[1] < r.latency_ms for t in trials)
    acc = EventAccumulator(str(tmp_path / "a" / "tensorboard")).Reload()
    tags = acc.Tags()
    assert {"trial/reward", "trial/accuracy", "trial/latency_ms", "best/reward"} <= set(tags["scalars"])
    assert len(acc.Scalars("trial/reward")) == 12 and "pareto" in tags["images"]
    assert acc.Scalars("hparam/best_reward")[-1].value == pytest.approx(best["reward"])  # the hparams run

    # the same seed gives the same search
    assert run_main([*args, "--out", tmp_path / "b"]) == 0
    again = complete(load_study(tmp_path / "b"))
    assert [t.user_attrs["arch"] for t in again] == [t.user_attrs["arch"] for t in trials]
    assert [t.values for t in again] == [t.values for t in trials]
    # rerunning a finished study adds nothing; --trials extends it (the population comes from the study)
    assert run_main([*args, "--out", tmp_path / "b", "--trials", 15]) == 0
    more = complete(load_study(tmp_path / "b"))
    assert len(more) == 15 and [t.user_attrs["arch"] for t in more[:12]] == [t.user_attrs["arch"] for t in trials]
    # joining a study with other search-defining options is refused
    msg = _bad([*args, "--out", tmp_path / "b", "--study", study.study_name, "--reward", "hard"], capsys)
    assert "--reward: study" in msg and "'soft'" in msg


def test_failing_evaluation_is_a_fail_trial(tmp_path, capsys, monkeypatch, budget_ms):
    from optuna.trial import TrialState

    from searchers.evaluators.proxy import ProxyEvaluator

    real = ProxyEvaluator._evaluate
    calls = {"n": 0}

    def flaky(self, arch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory (simulated)")
        return real(self, arch)

    monkeypatch.setattr(ProxyEvaluator, "_evaluate", flaky)
    args = ["--target", TARGET, "--budget", f"{budget_ms}ms", "--trials", 6, "--population", 4,
            "--sample-size", 2, "--out", tmp_path, *FAST]
    assert run_main(args) == 0
    study = load_study(tmp_path)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert len(complete(study)) == 6 and len(failed) == 1
    assert failed[0].user_attrs["error"] == "RuntimeError: out of memory (simulated)"
    assert json.loads((tmp_path / "summary.json").read_text())["failed_trials"] == 1

    # an evaluator that keeps failing stops the search with one line; the study keeps its trials
    monkeypatch.setattr(ProxyEvaluator, "_evaluate", lambda self, arch: 1 / 0)
    msg = _bad([*args[:-len(FAST)], *FAST, "--trials", 9], capsys)
    assert "failed 5 times in a row; last: ZeroDivisionError" in msg
    study = load_study(tmp_path)
    assert len(complete(study)) == 6 and len(study.get_trials(states=(TrialState.FAIL,))) == 6


# ------------------------------------------------------------------------------------------------
# Kill -9 and resume; several worker processes on one SQLite study
# ------------------------------------------------------------------------------------------------
def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_resume_after_sigkill(tmp_path, budget_ms):
    args = [PY, "-m", "searchers.evolve", "--target", TARGET, "--budget", f"{budget_ms}ms", "--trials", "20",
            "--population", "6", "--sample-size", "3", "--out", str(tmp_path), *FAST]
    env = ENV
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = tmp_path / "study.db"
    deadline = time.time() + 300
    while _count(db) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = [(t.number, t.user_attrs["arch"], tuple(t.values)) for t in complete(load_study(tmp_path))]
    assert 6 <= len(before) < 20

    r = subprocess.run(args + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load_study(tmp_path)
    after = [(t.number, t.user_attrs["arch"], tuple(t.values)) for t in complete(study)]
    assert after[:len(before)] == before  # nothing finished was lost or changed
    assert len(after) == 20 and len({n for n, _, _ in after}) == 20  # the count is reached, nothing twice
    assert all(t.state.is_finished() for t in study.trials)  # no trial left RUNNING by the kill
    assert f"{len(before)} finished trials" in r.stderr


def test_workers_share_one_sqlite_study(tmp_path, budget_ms):
    args = [PY, "-m", "searchers.evolve", "--target", TARGET, "--budget", f"{budget_ms}ms", "--trials", "10",
            "--population", "4", "--sample-size", "2", "--workers", "2", "--out", str(tmp_path), *FAST]
    r = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = complete(load_study(tmp_path))
    assert 10 <= len(trials) <= 11  # each worker stops when it sees the count reached
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    journal = [json.loads(line) for f in (tmp_path / "journal").glob("*-w[01].jsonl") for line in f.read_text().splitlines()]
    # every trial a worker wrote is in the study exactly once, and nothing else is
    assert sorted(j["trial"] for j in journal) == sorted(t.number for t in trials)
    by_number = {t.number: t for t in trials}
    assert all(by_number[j["trial"]].user_attrs["arch"] == j["arch"] for j in journal)


def test_config_recipes(tmp_path):
    from searchers.cli_common import OptionError, given_options, resolve
    from searchers.evolve import build_parser

    p = build_parser()
    s = resolve(given_options(p.parse_args(["--config", "quick-proxy"])))
    assert (s.target, s.budget_ms, s.evaluator, s.trials, s.population, s.sample_size) == ("pixel-cpu", 60.0, "proxy", 100, 20, 5)
    s = resolve(given_options(p.parse_args(["--config", "experiments/pixel1-60ms.yaml", "--trials", "7", "--budget", "0.05s"])))
    assert (s.evaluator, s.trials, s.budget_ms, s.w) == ("supernet", 7, 50.0, -0.07)  # the command line wins
    for name in ("pixel1-60ms", "quick-proxy", "note10-ofa-hard"):  # every shipped recipe resolves
        resolve(given_options(p.parse_args(["--config", name])))
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: pixel-cpu\nbudget: 60ms\npopulaton: 9\n")
    with pytest.raises(OptionError, match=r"unknown option 'populaton'; allowed: .*population"):
        given_options(p.parse_args(["--config", str(bad)]))
    with pytest.raises(OptionError, match=r"^--config: no recipe 'nope'; allowed: a YAML path or one of .*quick-proxy"):
        given_options(p.parse_args(["--config", "nope"]))


def test_first_population_uniform_under_soft_reward_within_budget_under_hard(budget_ms):
    """Soft reward: the first population is a uniform sample (MnasNet / regularized evolution);
    hard reward: only archs predicted within the budget."""
    from searchers.cli_common import SearchSettings
    from searchers.evolve import Evolution, make_context, probe_budget
    from searchers.records import Records

    for mode in ("soft", "hard"):
        s = SearchSettings(target=TARGET, budget_ms=budget_ms, space=SPACE, evaluator="proxy", reward=mode, seed=5)
        ctx = make_context(s)
        records, _ = Records.open(f"init-{mode}", ":memory:", ctx.space, s.identity(), resume=False, searcher="evolve")
        evo = Evolution(ctx, records, progress=False, seeds=probe_budget(ctx, 5, samples=40, max_s=4).feasible)
        lats = [float(ctx.model.predict(evo._initial())) for _ in range(15)]
        over = sum(lat > budget_ms for lat in lats)
        if mode == "soft":  # a fifth of random archs meet the budget: a uniform sample has most over it
            assert over >= 5, lats
        else:
            assert over == 0, lats


def test_formats_option(tmp_path, capsys, monkeypatch, budget_ms):
    """--formats picks the best arch's files (search_space.export); bad lists and missing extras fail
    in one line before any search."""
    import importlib.util

    base = ["--target", TARGET, "--budget", f"{budget_ms}ms", *FAST, "--out", tmp_path / "bad"]
    assert _bad([*base, "--formats", "onnx,gif"], capsys) == \
        "error: --formats: got 'gif'; allowed: py, onnx, yaml, pt, tflite, pte"
    assert _bad([*base, "--formats", "onnx,,py"], capsys) == \
        "error: --formats: got 'onnx,,py'; allowed: a comma list of py, onnx, yaml, pt, tflite, pte"
    assert _bad([*base, "--formats", "onnx,onnx"], capsys) == "error: --formats: got 'onnx,onnx'; allowed: each format once"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("litert_torch", "executorch") else real(name, *a, **k))
    assert _bad([*base, "--formats", "onnx,tflite"], capsys) == (
        "error: --formats: tflite needs the litert-torch package, which is not installed; "
        "install it with: pip install 'edgenas[tflite]'")
    assert _bad([*base, "--formats", "pte"], capsys) == (
        "error: --formats: pte needs the executorch package, which is not installed; "
        "install it with: pip install 'edgenas[executorch]'")
    assert not (tmp_path / "bad").exists()
    monkeypatch.undo()
    args = ["--target", TARGET, "--budget", f"{budget_ms}ms", *FAST, "--trials", 3, "--population", 2,
            "--sample-size", 1, "--formats", "yaml,pt", "--out", tmp_path / "ok"]
    assert run_main(args) == 0
    assert sorted(p.name for p in (tmp_path / "ok" / "best").iterdir()) == ["arch.yaml", "weights.pt"]
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["settings"]["formats"] == "yaml,pt" and summary["export_errors"] == {}
    assert "best/ (arch.yaml, weights.pt)" in capsys.readouterr().out


def test_archs_drawn_from_the_evaluators_search_space(budget_ms):
    """An evaluator that covers only part of the space (mobile-unified's supernet: its MBConv scope)
    gets only archs of that part: samples, mutations and crossovers are drawn from its
    ``search_space()``; the records keep the whole space's encoding."""
    from searchers.cli_common import SearchSettings
    from searchers.evolve import Evolution, make_context
    from searchers.records import Records
    from searchers.supernet import scope_space

    scope = scope_space("mobile-unified/mbconv")

    class Scoped:
        name = "scoped"

        def search_space(self):
            return scope

        def check(self, arch):
            if not scope.contains(arch):
                raise ValueError("outside the scope")

        def evaluate(self, arch):
            return 0.5 + 0.01 * len(arch.blocks)

    s = SearchSettings(target=TARGET, budget_ms=60.0, space=SPACE, evaluator="proxy", trials=10, population=4,
                       sample_size=2, crossover=0.5, seed=1)
    ctx = make_context(s)
    ctx.evaluator = Scoped()
    records, _ = Records.open("scoped", ":memory:", ctx.space, s.identity(), resume=False, searcher="evolve")
    Evolution(ctx, records, progress=False).run()
    recs = records.complete()
    assert len(recs) == 10 and records.n_failed() == 0
    for r in recs:
        arch = ctx.arch(r.arch)
        assert scope.contains(arch) and list(r.codes) == ctx.space.encode(arch)


def test_negative_budget_is_one_line(tmp_path, capsys):
    """``--budget -5ms`` (a value argparse would take for an option) gets our one-line message."""
    assert _bad(["--target", TARGET, "--budget", "-5ms", *FAST, "--out", tmp_path / "r"], capsys) == \
        "error: --budget: got '-5ms'; allowed: a positive latency such as 60ms, 60 ms or 0.06s"


# ------------------------------------------------------------------------------------------------
# A failed start leaves nothing behind; every bad input is one line (session 7 review)
# ------------------------------------------------------------------------------------------------
SMALL = ["--trials", 3, "--population", 2, "--sample-size", 1]


def test_failed_start_leaves_no_study_and_the_corrected_rerun_works(tmp_path, capsys, budget_ms):
    """A bad data set, evaluator option or weights file is found before the study is made, so the
    corrected command (the same --out) runs; a study keeps its settings even with no finished trial."""
    out = tmp_path / "run"
    ok = ["--target", TARGET, "--budget", f"{budget_ms}ms", "--out", out, *SMALL]
    assert _bad([*ok, *FAST, "--dataset", "/nope.npz"], capsys) == (
        "error: dataset: /nope.npz does not exist; allowed: fashion-mnist, a folder of class sub-folders, "
        "or an .npz file with x and y")
    assert not out.exists()
    assert _bad([*ok, "--evaluator", "train", "--eval-opt", "epochs=abc", "--no-progress", "--no-zoo"], capsys) == \
        "error: --eval-opt epochs: got 'abc'; allowed: a positive integer"
    assert not out.exists()
    msg = _bad([*ok, "--eval-opt", "supernet_path=/etc/passwd", "--no-progress", "--no-zoo"], capsys)
    assert msg == ("error: --eval-opt supernet_path: /etc/passwd is not a readable supernet checkpoint "
                   "(UnpicklingError); allowed: a supernet.pt written by 'python -m searchers.supernet train'")
    assert not out.exists()
    assert run_main([*ok, *FAST]) == 0  # the corrected command
    assert len(complete(load_study(out))) == 3
    # a study with no finished trial yet (a live run training its supernet) keeps its settings
    from search_space.space import load_space
    from searchers.cli_common import given_options, resolve
    from searchers.evolve import build_parser
    from searchers.records import Records, run_paths

    s = resolve(given_options(build_parser().parse_args([str(a) for a in [*ok, *FAST]])))
    _, _, url = run_paths("evolve", s)
    s.study = "evolve-live"
    Records.open(s.study, url, load_space(SPACE), s.identity(), resume=False, searcher="evolve")
    npz = tmp_path / "two.npz"
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(npz, x=rng.integers(0, 255, (40, 32, 32), dtype=np.uint8), y=np.arange(40) % 2)
    msg = _bad([*ok, *FAST, "--study", "evolve-live", "--dataset", npz], capsys)
    assert msg == (f"error: --dataset: study 'evolve-live' was run with 'fashion-mnist', got '{npz}'; "
                   "use the same options or another --study")
    assert load_study(out, "evolve-live").user_attrs["edgenas_settings"]["dataset"] == "fashion-mnist"


def test_one_class_data_set_is_refused(tmp_path, capsys, budget_ms):
    import numpy as np

    npz = tmp_path / "one.npz"
    np.savez(npz, x=np.random.default_rng(0).integers(0, 255, (20, 32, 32), dtype=np.uint8), y=np.zeros(20, int))
    msg = _bad(["--target", TARGET, "--budget", f"{budget_ms}ms", "--out", tmp_path / "r", *FAST, "--dataset", npz],
               capsys)
    assert msg == f"error: dataset: {npz} has 1 class (0); allowed: at least 2 classes"
    assert not (tmp_path / "r").exists()


def test_out_that_cannot_be_a_folder(tmp_path, capsys, budget_ms, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("not a folder")
    ok = ["--target", TARGET, "--budget", f"{budget_ms}ms", *FAST]
    assert _bad([*ok, "--out", f], capsys) == f"error: --out: {f} is a file; allowed: a folder (new or existing)"
    mkdir_fails_under(monkeypatch, tmp_path / "full")
    assert _bad([*ok, "--out", tmp_path / "full" / "x"], capsys) == \
        f"error: --out: cannot make the folder {tmp_path / 'full' / 'x'}: No space left on device; allowed: a writable folder"
    monkeypatch.undo()
    assert f.read_text() == "not a folder"


def test_bad_evaluator_option_is_the_only_line_even_with_progress(tmp_path, capsys, budget_ms):
    """Evaluator options and the data set are read before the header and the budget probe are printed."""
    capsys.readouterr()
    rc = run_main(["--target", TARGET, "--budget", f"{budget_ms}ms", "--out", tmp_path / "r", "--eval-opt", "lr=-1"])
    assert rc == 2 and capsys.readouterr().err.splitlines() == ["error: --eval-opt lr: got -1; allowed: a number in (0, 10)"]
    assert not (tmp_path / "r").exists()


def test_usage_errors_are_one_line(capsys):
    assert _bad(["--bogus"], capsys) == \
        "error: python -m searchers.evolve: unrecognized arguments: --bogus; see python -m searchers.evolve --help"
    assert _bad(["--target"], capsys) == "error: python -m searchers.evolve: argument --target: expected one argument"


def test_no_progress_reaches_the_evaluators_constructor(budget_ms):
    """--no-progress hides the supernet's training bar: the evaluator is built with progress=False (the
    bar belongs to its constructor's option, not to prepare()); an --eval-opt progress=... still wins."""
    from searchers.cli_common import resolve
    from searchers.evolve import make_context

    base = {"target": TARGET, "budget": f"{budget_ms}ms"}
    for progress in (False, True):
        ctx = make_context(resolve(dict(base)))
        assert ctx.build_evaluator(progress).progress is progress
    ctx = make_context(resolve({**base, "eval_opts": {"progress": True}}))
    assert ctx.build_evaluator(False).progress is True
    ctx = make_context(resolve({**base, "evaluator": "proxy"}))  # no bars, no such option: still built
    assert ctx.build_evaluator(False).name == "proxy"
    # with bars on, each evaluator keeps its default: the train evaluator's per-arch bar stays off (it
    # would sit under the search's bar), the predictor's one-off training bar on
    for name, default in (("train", False), ("predictor", True), ("supernet", True)):
        for progress in (True, False):
            ctx = make_context(resolve({**base, "evaluator": name}))
            assert ctx.build_evaluator(progress).progress is (default and progress), (name, progress)
    # experiments.run builds its evaluators' options with the same rule
    from searchers.evaluators import with_progress

    assert with_progress("train", {"epochs": 1}, True) == {"epochs": 1}
    assert with_progress("train", {}, False) == {"progress": False}
    assert with_progress("proxy", {}, False) == {} and with_progress("supernet", {"progress": True}, False) == \
        {"progress": True}


def test_help_names_what_the_options_take():
    """--help agrees with the README: every evaluator, every shipped target and target .json files, and
    (evolve only) the comma lists of a sweep."""
    import latency_models
    from searchers.evaluators import evaluator_names
    from searchers.rl import build_parser as rl_parser

    import searchers.evolve as E

    for parser, sweep in ((E.build_parser(), True), (rl_parser(), False)):
        text = " ".join(parser.format_help().split())
        assert f"accuracy evaluator: {', '.join(evaluator_names())} (default: supernet)" in text
        assert "predictor" in evaluator_names() and "local-tflite" in latency_models.targets()
        assert f"latency target: {', '.join(latency_models.targets())}, or a target .json file" in text
        assert ("a comma list runs one search per target and budget (a sweep)" in text) is sweep
        assert ("a comma list (e.g. 20ms,45ms,60ms) runs one search per budget" in text) is sweep


def test_config_lists_only_recipes_the_searcher_runs(capsys):
    msg = _bad(["--config", "nosuch"], capsys)
    assert msg == ("error: --config: no recipe 'nosuch'; allowed: a YAML path or one of note10-ofa-hard, pixel1-60ms, "
                   "quick-proxy (mobilenetv3_large, mobilenetv3_small: whole-paper recipes, run with python -m "
                   "experiments.run experiments/NAME.yaml)")
    msg = _bad(["--config", "mobilenetv3_small"], capsys)
    assert msg.startswith("error: --config: ") and msg.endswith(
        "mobilenetv3_small.yaml is an experiments.run recipe (stages search, netadapt, standalone); allowed: a "
        f"searcher recipe, or run it with: python -m experiments.run {REPO / 'experiments' / 'mobilenetv3_small.yaml'}")


def test_default_name_of_another_data_set_and_the_legacy_folder(tmp_path, capsys, budget_ms, monkeypatch):
    """A non-default --dataset adds -<its resolved name> to the default study name and run folder (never a
    bare '-'); a run made before that (runs/<old name>/study.db of this data set) is still the same
    command's run: --resume finds it, with one line saying so; another data set's old folder is not taken."""
    import numpy as np

    from searchers.cli_common import dataset_suffix, given_options, resolve
    from searchers.evolve import build_parser
    from searchers.records import run_paths

    monkeypatch.chdir(tmp_path)
    assert dataset_suffix("fashion-mnist") == ""
    assert dataset_suffix(".") == f"-{tmp_path.name}" and dataset_suffix("./") == f"-{tmp_path.name}"
    assert dataset_suffix("data/two.npz") == "-two" and dataset_suffix("/") == "-root"
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "two.npz", x=rng.integers(0, 255, (40, 32, 32), dtype=np.uint8), y=np.arange(40) % 2)
    base = ["--target", TARGET, "--budget", f"{budget_ms}ms", "--trials", 3, "--population", 2, "--sample-size", 1,
            "--dataset", "two.npz", *FAST]

    def paths(*extra):
        return run_paths("evolve", resolve(given_options(build_parser().parse_args([str(a) for a in [*base, *extra]]))))

    new, out, _ = paths()
    legacy = new[: -len("-two")]
    assert new.endswith("-s0-two") and out == Path("runs") / new and capsys.readouterr().err == ""
    # a run of the default data set under the old name is another study: not taken
    assert run_main([*[a for a in base if a not in ("--dataset", "two.npz")], "--trials", 2,
                     "--study", legacy, "--out", Path("runs") / legacy]) == 0
    capsys.readouterr()
    assert paths()[0] == new
    # the same command's run made before the suffix: taken, and --resume continues it
    import shutil

    shutil.rmtree(Path("runs") / legacy)
    assert run_main([*base, "--trials", 2, "--study", legacy, "--out", Path("runs") / legacy]) == 0
    capsys.readouterr()
    name, out, _ = paths()
    assert (name, out) == (legacy, Path("runs") / legacy)
    assert capsys.readouterr().err.strip() == (f"note: using runs/{legacy} (made before the default run name named "
                                               f"the data set; a new run of this data set would be runs/{new})")
    assert run_main([*base, "--resume"]) == 0
    assert len(complete(load_study(Path("runs") / legacy, legacy))) == 3 and not (Path("runs") / new).exists()
    # once the new folder exists it is used
    (Path("runs") / new).mkdir()
    assert paths()[0] == new
