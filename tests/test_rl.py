"""searchers.controller and searchers.rl: the MnasNet controller learns, is deterministic, resumes.

Real spaces, latency model, proxy evaluator and Optuna storage; small on purpose (the search
quality against the other searchers is measured by benchmarks/searchers.py).
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SPACE = "mnasnet"  # 36 decisions, small nets: a fast proxy
TARGET = "pixel-cpu"
FAST = ["--space", SPACE, "--evaluator", "proxy", "--eval-opt", "batch_size=8", "--no-progress", "--no-zoo"]


@pytest.fixture(scope="module")
def budget_ms() -> float:
    """A budget about half of the space's random archs meet, from the latency model itself."""
    import latency_models
    from search_space.space import load_space

    space, model = load_space(SPACE), latency_models.load(TARGET)
    rng = random.Random(1)
    lats = sorted(float(x) for x in model.predict_many([space.sample(rng) for _ in range(40)]))
    return round(lats[len(lats) // 2], 1)


def run_main(args) -> int:
    from searchers.rl import main

    return main([str(a) for a in args])


def load_study(out: Path):
    import optuna

    storage = f"sqlite:///{out / 'study.db'}"
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def complete(study):
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


# ------------------------------------------------------------------------------------------------
# The controller
# ------------------------------------------------------------------------------------------------
def test_tokens_within_cardinalities_on_every_space():
    from search_space.errors import SpaceError
    from search_space.space import load_space, space_names
    from searchers.controller import PGConfig, PolicyGradient

    for name in space_names():
        space = load_space(name)
        cards = space.cardinalities()
        pg = PolicyGradient(cards, PGConfig(batch=64), seed=0)
        tokens, logp = pg.sample()
        assert len(tokens) == 64 and logp.shape == (64,) and bool((logp < 0).all())
        for row in tokens:
            assert len(row) == len(cards) and all(0 <= t < c for t, c in zip(row, cards)), name
        decoded = []
        for row in tokens:  # some code lists of a space may make no valid arch (mobile-unified: most)
            try:
                decoded.append(space.decode(row).to_string())
            except SpaceError:
                pass
        assert decoded and len(set(decoded)) == len(decoded), name  # a fresh policy is spread out
        # log p of the sampled tokens, recomputed teacher-forced, is the sampler's
        lp, ent = pg.policy.evaluate(torch.tensor(tokens))
        assert torch.allclose(lp, logp, atol=1e-4) and bool((ent > 0).all())


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_policy_gradient_learns_a_synthetic_reward(algo):
    """Reward = the fraction of decisions equal to a hidden target code list (real space's encoding).
    A random policy scores ~ mean(1 / cardinality) = 0.41 on mnasnet; after 50 updates it must be far above."""
    from search_space.space import load_space
    from searchers.controller import PGConfig, PolicyGradient

    cards = load_space(SPACE).cardinalities()
    rng = random.Random(7)
    target = [rng.randrange(c) for c in cards]
    chance = sum(1 / c for c in cards) / len(cards)

    def reward(tokens):
        return sum(t == g for t, g in zip(tokens, target)) / len(tokens)

    pg = PolicyGradient(cards, PGConfig(algo=algo, batch=8), seed=3)
    means = []
    for _ in range(50):
        tokens, logp = pg.sample()
        rs = [reward(t) for t in tokens]
        means.append(sum(rs) / len(rs))
        stats = pg.update(tokens, rs, logp)
        assert stats["reward_mean"] == pytest.approx(means[-1])
    first, last = sum(means[:10]) / 10, sum(means[-10:]) / 10
    assert abs(first - chance) < 0.1, (first, chance)
    assert last > first + 0.2, (algo, first, last)
    greedy = pg.policy.mode()
    assert reward(greedy) > chance + 0.3, reward(greedy)


def test_controller_is_deterministic_and_checkpoint_exact(tmp_path):
    from search_space.space import load_space
    from searchers.controller import ControllerError, PGConfig, PolicyGradient

    cards = load_space(SPACE).cardinalities()

    def rollout(pg, n):
        out = []
        for _ in range(n):
            tokens, logp = pg.sample()
            out.append(tokens)
            pg.update(tokens, [sum(t) / (10.0 * len(t)) for t in tokens], logp)
        return out

    a, b = PolicyGradient(cards, seed=5), PolicyGradient(cards, seed=5)
    assert rollout(a, 3) == rollout(b, 3)
    assert rollout(PolicyGradient(cards, seed=6), 1) != rollout(PolicyGradient(cards, seed=5), 1)
    # save after 3 updates, reload into a fresh controller: it continues exactly as the original
    torch.save(a.state_dict(), tmp_path / "c.pt")
    c = PolicyGradient(cards, seed=5)
    c.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=False))
    assert c.updates == 3 and rollout(c, 2) == rollout(a, 2)
    with pytest.raises(ControllerError, match="other controller settings or seed"):
        PolicyGradient(cards, PGConfig(algo="reinforce"), seed=5).load_state_dict(a.state_dict())
    with pytest.raises(ControllerError, match="another space encoding"):
        PolicyGradient(cards[:-1], seed=5).load_state_dict(a.state_dict())


# ------------------------------------------------------------------------------------------------
# The CLI
# ------------------------------------------------------------------------------------------------
def _bad(args, capsys):
    capsys.readouterr()
    rc = run_main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [x for x in err.splitlines() if not x.startswith("study ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_inputs(tmp_path, capsys, budget_ms):
    ok = ["--budget", f"{budget_ms}ms", "--out", tmp_path / "run"]
    msg = _bad(["--target", "nokia-3310", *ok, *FAST], capsys)
    assert "--target: got 'nokia-3310'; allowed:" in msg and "pixel-cpu" in msg
    msg = _bad(["--target", TARGET, *ok, *FAST, "--space", "nope"], capsys)
    assert "--space: got 'nope'" in msg and "mobile-unified" in msg
    msg = _bad(["--target", TARGET, *ok, "--evaluator", "oracle", "--no-progress"], capsys)
    assert msg == "error: --evaluator: got 'oracle'; allowed: supernet, train, proxy, predictor"
    msg = _bad(["--target", TARGET, "--budget", "60", *FAST], capsys)
    assert "--budget: got '60' without a unit" in msg
    assert _bad(["--target", TARGET, *ok, *FAST, "--algo", "a3c"], capsys) == \
        "error: --algo: got 'a3c'; allowed: ppo, reinforce"
    assert _bad(["--target", TARGET, *ok, *FAST, "--batch", "0"], capsys) == \
        "error: --batch: got 0; allowed: an integer >= 1"
    assert _bad(["--target", TARGET, *ok, *FAST, "--batch", "two"], capsys) == \
        "error: --batch: got 'two'; allowed: an integer"
    assert _bad(["--target", TARGET, *ok, *FAST, "--lr", "-1"], capsys) == \
        "error: --lr: got -1.0; allowed: a number > 0"
    assert _bad(["--target", TARGET, *ok, *FAST, "--clip", "1.5"], capsys) == \
        "error: --clip: got 1.5; allowed: a number in (0, 1)"
    msg = _bad(["--target", TARGET, *ok, *FAST, "--workers", "2"], capsys)
    assert msg.startswith("error: --workers: got 2; allowed: 1 for searchers.rl")
    msg = _bad(["--target", TARGET, *ok, *FAST, "--resume"], capsys)
    assert "does not exist (nothing to resume)" in msg
    msg = _bad(["--target", TARGET, "--budget", "0.5ms", "--out", tmp_path / "run", *FAST], capsys)
    assert msg.startswith(f"error: no architecture of space {SPACE} reaches 0.5 ms on {TARGET}")
    assert not (tmp_path / "run").exists()


def test_cli_prints_no_traceback():
    r = subprocess.run([PY, "-m", "searchers.rl", "--target", TARGET, "--budget", "60ms", "--algo", "dqn"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: --algo: got 'dqn'; allowed: ppo, reinforce"


def test_search_records_outputs_determinism(tmp_path, capsys, budget_ms):
    import optuna
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import latency_models
    from search_space.arch import Arch
    from search_space.space import load_space

    args = ["--target", TARGET, "--budget", f"{budget_ms}ms", "--trials", 10, "--batch", 4, "--seed", 2,
            "--algo", "reinforce", *FAST]
    assert run_main([*args, "--out", tmp_path / "a"]) == 0
    assert "best architecture (trial" in capsys.readouterr().out
    space, model = load_space(SPACE), latency_models.load(TARGET)
    study = load_study(tmp_path / "a")
    assert study.metric_names == ["accuracy", "latency (ms)"]
    assert study.study_name == f"rl-{SPACE}-proxy-{TARGET}-{budget_ms:g}ms-soft-s2"
    assert study.user_attrs["edgenas_settings"]["searcher"] == "rl"
    assert study.user_attrs["edgenas_settings"]["algo"] == "reinforce"
    trials = complete(study)
    assert len(trials) == 10 and len({t.user_attrs["arch"] for t in trials}) == 10  # distinct archs
    for t in trials:
        arch = Arch.from_string(t.user_attrs["arch"])
        assert [t.params[n] for n in sorted(t.params)] == list(space.encode(arch))
        acc, lat = t.values
        assert lat == pytest.approx(model.predict(arch, resolution=224), rel=1e-9)
        assert t.user_attrs["reward"] == pytest.approx(acc * (lat / budget_ms) ** -0.07)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["searcher"] == "rl" and summary["trials"] == 10
    assert summary["controller"]["algo"] == "reinforce" and summary["controller"]["updates_this_run"] == 2
    feasible = [t for t in trials if t.values[1] <= budget_ms]
    if feasible:
        assert summary["best"]["reward"] == pytest.approx(max(t.user_attrs["reward"] for t in feasible))
    for f in ("best/arch.yaml", "best/model.py", "best/model.onnx", "pareto.csv", "pareto.png", "controller.pt"):
        assert (tmp_path / "a" / f).stat().st_size > 0, f
    acc = EventAccumulator(str(tmp_path / "a" / "tensorboard")).Reload()
    assert {"trial/reward", "best/reward", "controller/reward_mean", "controller/entropy"} <= set(acc.Tags()["scalars"])
    assert len(acc.Scalars("trial/reward")) == 10 and len(acc.Scalars("controller/reward_mean")) == 2

    # same seed, same search; then --trials extends it exactly as a longer run would have gone
    assert run_main([*args, "--out", tmp_path / "b", "--trials", 6]) == 0
    assert run_main([*args, "--out", tmp_path / "b"]) == 0
    again = complete(load_study(tmp_path / "b"))
    assert [t.user_attrs["arch"] for t in again] == [t.user_attrs["arch"] for t in trials]
    assert [t.values for t in again] == [t.values for t in trials]
    # joining the study with another controller setting is refused
    msg = _bad([*args, "--out", tmp_path / "b", "--algo", "ppo"], capsys)
    assert "--algo: study" in msg and "'reinforce'" in msg and "'ppo'" in msg
    assert optuna.__version__


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_resume_after_sigkill(tmp_path, budget_ms):
    common = ["--target", TARGET, "--budget", f"{budget_ms}ms", "--trials", "14", "--batch", "4", "--seed", "1",
              *FAST]
    args = [PY, "-m", "searchers.rl", *common, "--out", str(tmp_path / "k")]
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = tmp_path / "k" / "study.db"
    deadline = time.time() + 300
    while _count(db) < 6 and time.time() < deadline and proc.poll() is None:  # mid-way through batch 2
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [(t.number, t.user_attrs["arch"], tuple(t.values)) for t in complete(load_study(tmp_path / "k"))]
    assert 6 <= len(before) < 14

    r = subprocess.run(args + ["--resume"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(before)} finished trials" in r.stderr and "controller: resumed after update" in r.stderr
    study = load_study(tmp_path / "k")
    after = [(t.number, t.user_attrs["arch"], tuple(t.values)) for t in complete(study)]
    assert after[:len(before)] == before  # nothing finished was lost or changed
    assert len(after) == 14 and len({a for _, a, _ in after}) == 14  # count reached, no arch twice
    assert all(t.state.is_finished() for t in study.trials)
    # and the killed-and-resumed search is the uninterrupted one
    assert run_main([*common, "--out", tmp_path / "u"]) == 0
    straight = [(t.user_attrs["arch"], tuple(t.values)) for t in complete(load_study(tmp_path / "u"))]
    assert straight == [(a, v) for _, a, v in after]


def test_rl_options_from_config(tmp_path, capsys):
    from searchers.cli_common import OptionError, given_options, resolve
    from searchers.rl import RL_OPTIONS, build_parser, pg_config

    recipe = tmp_path / "rl.yaml"
    recipe.write_text("target: pixel-cpu\nbudget: 40ms\nalgo: reinforce\nbatch: 3\nlr: 0.01\nppo-epochs: 2\n")
    p = build_parser()
    given = given_options(p.parse_args(["--config", str(recipe), "--batch", "5"]), extra=tuple(RL_OPTIONS))
    cfg = pg_config(given)
    s = resolve(given)
    assert (cfg.algo, cfg.batch, cfg.lr, cfg.ppo_epochs, s.budget_ms) == ("reinforce", 5, 0.01, 2, 40.0)  # CLI wins
    recipe.write_text("target: pixel-cpu\nbudget: 40ms\nalgo: a3c\n")
    assert _bad(["--config", str(recipe), *FAST], capsys) == "error: --algo: got 'a3c'; allowed: ppo, reinforce"
    recipe.write_text("target: pixel-cpu\nbudget: 40ms\nbatch: 0\n")
    assert _bad(["--config", str(recipe), *FAST], capsys) == "error: --batch: got 0; allowed: an integer >= 1"
    # evolution's recipes do not take the controller's options
    from searchers.evolve import build_parser as evolve_parser

    recipe.write_text("target: pixel-cpu\nbudget: 40ms\nalgo: ppo\n")
    with pytest.raises(OptionError, match=r"unknown option 'algo'"):
        given_options(evolve_parser().parse_args(["--config", str(recipe)]))


def test_failed_start_leaves_no_study_and_the_corrected_rerun_works(tmp_path, capsys, budget_ms):
    """A bad data set or evaluator option is found before the study is made: the corrected command runs."""
    out = tmp_path / "run"
    ok = ["--target", TARGET, "--budget", f"{budget_ms}ms", "--out", out, "--trials", 3, "--batch", 3]
    assert _bad([*ok, *FAST, "--dataset", "/nope.npz"], capsys).startswith(
        "error: dataset: /nope.npz does not exist; allowed: fashion-mnist")
    assert _bad([*ok, *FAST, "--eval-opt", "proxy=magic"], capsys) == \
        "error: --eval-opt proxy: got 'magic'; allowed: naswot, synflow, gradnorm"
    assert _bad([*ok, *FAST, "--eval-opt", "epochs=2"], capsys) == \
        "error: --eval-opt: got 'epochs'; allowed: proxy evaluator options proxy, batch_size"
    assert not out.exists()
    assert run_main([*ok, *FAST]) == 0
    assert len(complete(load_study(out))) == 3


def test_usage_errors_and_out_are_one_line(tmp_path, capsys):
    assert _bad(["--bogus"], capsys) == \
        "error: python -m searchers.rl: unrecognized arguments: --bogus; see python -m searchers.rl --help"
    f = tmp_path / "afile"
    f.write_text("")
    assert _bad(["--target", TARGET, "--budget", "60ms", *FAST, "--out", f], capsys) == \
        f"error: --out: {f} is a file; allowed: a folder (new or existing)"
