"""searchers.netadapt on a small real network (MobileNetV3-Small 0.35 at 32x32, Fashion-MNIST subsets,
the real pixel-cpu latency model, Optuna storage): one iteration, the CLI end to end, bad input,
and resume after SIGKILL."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _fs import mkdir_fails_under  # tests/_fs.py
import torch

from search_space import zoo
from search_space.arch import Arch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SEED = "mobilenet_v3_small@0.35"
TARGET = "pixel-cpu"
TINY = ["--threads", "1", "--pretrain-epochs", "1", "--pretrain-images", "256", "--short-steps", "2",
        "--short-batch", "16", "--eval-images", "128", "--long-epochs", "1", "--long-images", "128", "--no-onnx",
        "--no-progress"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path_factory.getbasetemp() / "edgenas-cache"))


@pytest.fixture(scope="module")
def seed_ms() -> float:
    import latency_models

    return float(latency_models.load(TARGET).predict(zoo.get("mobilenet_v3_small", 0.35)))


def run_main(args) -> int:
    from searchers.netadapt import main

    return main([str(a) for a in args])


def error_line(err: str) -> str:
    """The one error line (progress lines may come before it; no traceback)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines, err
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == [lines[-1]], err
    return lines[-1]


def read_history(out: Path) -> list[dict]:
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def test_one_iteration_lowers_latency_by_the_requested_reduction(seed_ms):
    from searchers.data import load_dataset
    from searchers.netadapt import KINDS, NetAdapt, NetAdaptSettings, _NoSpace
    from searchers.pruning import channel_map, sized_arch
    from searchers.records import Records

    data = load_dataset("fashion-mnist", seed=0)
    s = NetAdaptSettings(arch=SEED, target=TARGET, budget_ms=0.5 * seed_ms, initial_ratio=0.04, short_steps=2,
                         short_batch=16, eval_images=128)
    na = NetAdapt(s, progress=False, data=data)
    na.records, _ = Records.open("t", ":memory:", _NoSpace(), {"x": 1}, resume=False, searcher="netadapt")
    arch = na.seed_arch
    torch.manual_seed(0)
    sd = arch.build(num_classes=10).state_dict()
    lat = na.predict(arch)
    assert lat == pytest.approx(seed_ms)
    acc = na.score(arch, sd)
    new_arch, new_sd, new_lat, new_acc = na.iteration(1, arch, sd, lat, acc, lat, KINDS)
    requested = 0.04 * seed_ms
    assert new_lat <= lat - requested + 1e-9
    assert new_lat == pytest.approx(na.predict(new_arch))
    assert 0.0 <= new_acc <= 1.0
    model = new_arch.build(num_classes=10)
    model.load_state_dict(new_sd)                       # the weights fit the smaller network
    row = na.history[-1]
    assert row["iteration"] == 1 and row["kind"] in KINDS and row["proposals"] >= 1
    # the chosen layer's channel count is the largest meeting the target: 8 more would not
    group, (old, new) = row["layer"], map(int, row["channels"].split("->"))
    cm = channel_map(arch)
    assert new < old
    if new + 8 < old:
        assert na.predict(sized_arch(cm, {group: new + 8})) > row["target_ms"]
    trials = na.records.study.get_trials()
    assert len(trials) == row["proposals"]
    for t in trials:
        assert t.user_attrs["iteration"] == 1 and t.user_attrs["kind"] in KINDS and t.user_attrs["layer"]
        assert t.values[1] <= row["target_ms"] + 1e-9
        Arch.from_string(t.user_attrs["arch"])
    chosen = next(t for t in trials if t.number == row["trial"])
    assert chosen.user_attrs["arch"] == new_arch.to_string()


def test_metric_ratio_and_accuracy():
    from searchers.netadapt import NetAdapt, NetAdaptSettings, Proposal

    arch = zoo.get("mobilenet_v3_small", 0.35)
    a = Proposal("mid:b1", "mid", 40, 32, arch, latency_ms=9.0, accuracy=0.80)     # -0.10 for 1 ms
    b = Proposal("mid:b2", "mid", 32, 16, arch, latency_ms=6.0, accuracy=0.75)     # -0.15 for 4 ms
    na = NetAdapt.__new__(NetAdapt)
    na.s = NetAdaptSettings(metric="ratio")
    assert na.metric(a, 0.9, 10.0) == pytest.approx(-0.10) and na.metric(b, 0.9, 10.0) == pytest.approx(-0.0375)
    na.s = NetAdaptSettings(metric="accuracy")
    assert na.metric(a, 0.9, 10.0) == 0.80 and na.metric(b, 0.9, 10.0) == 0.75


def test_last_iteration_chooses_within_the_window():
    """MobileNetV3-Small's run: 0.01 ms were left and the best ratio (the stem, 16 -> 8) removed 0.82 ms,
    landing 5.1% under T.  The last iteration now chooses by the metric among the proposals within 5%
    under the budget (not the closest: a layer cut to ruin can land closest)."""
    from searchers.netadapt import NetAdapt, NetAdaptSettings, Proposal

    arch = zoo.get("mobilenet_v3_small", 0.35)
    budget, lat, acc = 15.79, 15.80, 0.80
    stem = Proposal("filters:stem", "filters", 16, 8, arch, latency_ms=14.98, accuracy=0.79)      # -5.1%: out
    mid = Proposal("mid:b3", "mid", 96, 88, arch, latency_ms=15.70, accuracy=0.70)               # -0.6%: in
    near = Proposal("mid:b5", "mid", 240, 232, arch, latency_ms=15.40, accuracy=0.795)           # -2.5%: in
    na = NetAdapt.__new__(NetAdapt)
    na.s = NetAdaptSettings(budget_ms=budget, metric="ratio")
    props = [stem, mid, near]
    for p in props:
        p.score = na.metric(p, acc, lat)
    assert max(props, key=lambda q: q.score) is stem                # what the ratio alone keeps
    assert na.choose(props, budget) == (near, "window")              # best ratio within 5% under the budget
    ruin = Proposal("filters:head.hidden", "filters", 1024, 16, arch, latency_ms=15.79, accuracy=0.37)
    ruin.score = na.metric(ruin, acc, lat)
    assert na.choose(props + [ruin], budget) == (near, "window")     # closest, but ruined: not kept
    assert na.choose([stem, mid], budget) == (mid, "window")
    assert na.choose([stem], budget) == (stem, "metric")            # nothing in the window: the ratio
    assert na.choose(props, budget + 0.5) == (stem, "metric")       # not the last iteration: the ratio
    na.s = NetAdaptSettings(budget_ms=budget, metric="ratio", tolerance=0.0)
    assert na.choose(props, budget) == (stem, "metric")             # --tolerance 0: the paper's rule
    na.s = NetAdaptSettings(budget_ms=budget, metric="ratio", tolerance=0.01)
    assert na.choose(props, budget) == (mid, "window")
    na.s = NetAdaptSettings(budget_ms=budget, metric="ratio", tolerance=0.001)
    assert na.choose(props, budget) == (stem, "metric")


def test_tolerance_option():
    from searchers.cli_common import OptionError
    from searchers.netadapt import build_parser, resolve

    base = ["--arch", SEED, "--target", TARGET, "--budget", "5ms"]
    assert resolve(build_parser().parse_args(base)).tolerance == 0.05
    assert resolve(build_parser().parse_args(base + ["--tolerance", "0"])).tolerance == 0.0
    s = resolve(build_parser().parse_args(base + ["--tolerance", "0.02"]))
    assert s.tolerance == 0.02 and s.identity("x")["tolerance"] == 0.02       # part of what defines a run
    for bad in ("0.6", "-0.1", "five"):
        with pytest.raises(OptionError, match=r"--tolerance: got .*; allowed: a fraction in \[0, 0.5\]"):
            resolve(build_parser().parse_args(base + ["--tolerance", bad]))


def test_cli_end_to_end(tmp_path, seed_ms, capsys):
    import optuna

    out = tmp_path / "run"
    budget = round(0.93 * seed_ms, 3)
    rc = run_main(["--arch", SEED, "--target", TARGET, "--budget", f"{budget}ms", "--out", out,
                   "--formats", "yaml,pt,py,onnx", *TINY])  # TINY's --no-onnx drops onnx
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(p.name for p in (out / "best").iterdir()) == ["arch.yaml", "model.py", "weights.pt"]
    assert sorted(Path(p).name for p in summary["files"].values()) == ["arch.yaml", "model.py", "weights.pt"]
    arch = Arch.load(out / "best" / "arch.yaml")
    assert summary["arch"] == arch.to_string() and summary["arch"] in printed.out
    import latency_models

    assert latency_models.load(TARGET).predict(arch) == pytest.approx(summary["latency_ms"])
    assert summary["latency_ms"] <= budget
    model = arch.build(num_classes=10)
    model.load_state_dict(torch.load(out / "best" / "weights.pt", weights_only=True), strict=True)
    assert (out / "best" / "model.py").is_file() and (out / "history.png").stat().st_size > 1000
    hist = read_history(out)
    assert hist[0]["kind"] == "seed" and hist[-1]["kind"] == "final"
    its = [int(r["iteration"]) for r in hist]
    assert its == list(range(len(hist)))
    lats = [float(r["latency_ms"]) for r in hist]
    assert lats[0] == pytest.approx(seed_ms, abs=1e-3) and all(b < a for a, b in zip(lats[:-2], lats[1:-1]))
    # every iteration but the last asks for more than what is left: kept by the ratio; the last one's
    # target is the budget, and it chooses among the proposals within 5% under it
    assert [r["pick"] for r in hist[1:-2]] == ["metric"] * (len(hist) - 3)
    assert float(hist[-2]["target_ms"]) == pytest.approx(budget)
    assert hist[-2]["pick"] == "window" and 0.95 * budget <= lats[-2] <= budget, hist[-2]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    study = optuna.load_study(study_name=summary["study"], storage=f"sqlite:///{out / 'study.db'}")
    assert study.metric_names == ["accuracy", "latency (ms)"]
    kinds = [t.user_attrs["kind"] for t in study.trials]
    assert kinds[0] == "seed" and kinds[-1] == "final" and set(kinds[1:-1]) <= {"filters", "mid", "width"}
    assert sum(int(r["proposals"]) for r in hist[1:-1]) == len(kinds) - 2
    assert "pre-trained" in study.trials[0].user_attrs["weights"]
    # a second run reuses the cached pre-trained seed (same arch, data, recipe, seed -> same file)
    from searchers.data import load_dataset
    from searchers.netadapt import NetAdaptSettings, pretrained_seed, resolve_seed_arch

    s = NetAdaptSettings(arch=SEED, target=TARGET, budget_ms=budget, pretrain_epochs=1, pretrain_images=256)
    sd, how = pretrained_seed(resolve_seed_arch(SEED)[0], load_dataset("fashion-mnist", seed=0), s, progress=False,
                              log=lambda m: pytest.fail(f"trained again: {m}"))
    assert how.startswith("cached pre-training") and how.split()[-1] in study.trials[0].user_attrs["weights"]
    assert set(sd) == set(model.state_dict())


def test_budget_already_met(tmp_path, seed_ms, capsys):
    out = tmp_path / "met"
    rc = run_main(["--arch", SEED, "--target", TARGET, "--budget", f"{seed_ms + 1:.2f}ms", "--out", out, *TINY])
    printed = capsys.readouterr()
    assert rc == 0
    assert "budget already met" in printed.out and "the seed is unchanged" in printed.out
    assert not out.exists()


@pytest.mark.parametrize("args, pattern", [
    (["--arch", SEED, "--budget", "0.5ms"], r"--budget: 0.5 ms cannot be reached from mobilenet_v3_small@0.35 "
                                             r"\(\d+\.\d+ ms on pixel-cpu\): every prunable layer"),
    (["--arch", "mobilenet_v9", "--budget", "5ms"], r"--arch: got 'mobilenet_v9'; allowed: .*mobilenet_v3_large"),
    (["--arch", "mobilenet_v3_small@0.6", "--budget", "5ms"], r"--arch width \(for mobilenet_v3_small\): got '0.6'; "
                                                               r"allowed: 1.0, 0.75, 0.5, 0.35"),
    (["--arch", "runs/none/arch.yaml", "--budget", "5ms"], r"arch file: runs/none/arch.yaml does not exist"),
    (["--arch", SEED, "--budget", "5"], r"--budget: got '5' without a unit"),
    (["--arch", SEED, "--budget", "5ms", "--metric", "speed"], r"--metric: got 'speed'; allowed: ratio, accuracy"),
    (["--arch", SEED, "--budget", "5ms", "--proposals", "mid,layers"], r"--proposals: got 'mid,layers'; allowed"),
    (["--arch", SEED, "--budget", "5ms", "--target", "tpu"], r"target: got 'tpu'; allowed: .*pixel-cpu"),
    (["--arch", SEED, "--budget", "5ms", "--weights", "nope.pt"], r"--weights: nope.pt does not exist"),
    (["--arch", SEED, "--budget", "5ms", "--formats", "py,tflit"], r"--formats: got 'tflit'; allowed: py, onnx, yaml, "
                                                                    r"pt, tflite, pte"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, pattern):
    import re

    if "--target" not in args:
        args = [*args, "--target", TARGET]
    rc = run_main([*args, "--out", tmp_path / "bad", *TINY])
    err = error_line(capsys.readouterr().err)
    assert rc == 2
    assert re.search(pattern, err), err


def test_weights_that_do_not_fit(tmp_path, capsys, seed_ms):
    wrong = tmp_path / "wrong.pt"
    torch.save(zoo.get("mobilenet_v3_small", 0.5).build(num_classes=10).state_dict(), wrong)
    rc = run_main(["--arch", SEED, "--target", TARGET, "--budget", f"{0.9 * seed_ms:.3f}ms", "--weights", wrong,
                   "--out", tmp_path / "w", *TINY])
    err = error_line(capsys.readouterr().err)
    assert rc == 2
    assert "--weights:" in err and "does not fit the arch with 10 classes" in err


def test_unpriceable_proposal_keeps_finished_iterations(tmp_path, capsys, seed_ms, monkeypatch):
    import latency_models
    from search_space.errors import TargetError

    real = latency_models.load(TARGET)

    class Partial:
        """Prices the seed and the fastest arch (checked up front), nothing else."""

        name = real.name
        allowed: list = []

        def predict(self, arch, resolution=224):
            text = arch.to_string()
            if len(self.allowed) < 2 and text not in self.allowed:
                self.allowed.append(text)
            if text not in self.allowed:
                raise TargetError(f"target {self.name}: cannot price block type 'mbconv' at arch.blocks[3]")
            return real.predict(arch, resolution)

        def breakdown(self, arch, resolution=224):
            return real.breakdown(arch, resolution)

    monkeypatch.setattr(latency_models, "load", lambda target: Partial())
    out = tmp_path / "unpriced"
    rc = run_main(["--arch", SEED, "--target", TARGET, "--budget", f"{0.9 * seed_ms:.3f}ms", "--out", out, *TINY])
    err = error_line(capsys.readouterr().err)
    assert rc == 2
    assert err.startswith("error: iteration 1, proposal ") and "cannot price block type 'mbconv'" in err
    assert "finished iterations kept in" in err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 0 and state["phase"] == "search"       # the seed, checkpointed


def test_max_iterations_then_resume(tmp_path, capsys, seed_ms):
    out = tmp_path / "maxit"
    base = ["--arch", SEED, "--target", TARGET, "--budget", f"{0.9 * seed_ms:.3f}ms", "--initial-ratio", "0.05",
            "--out", out, *TINY]
    rc = run_main([*base, "--max-iterations", "1"])
    err = error_line(capsys.readouterr().err)
    assert rc == 2
    assert "--max-iterations: stopped after 1 iterations at" in err and "finished iterations kept" in err
    first = read_history(out)
    assert [r["iteration"] for r in first] == ["0", "1"]
    rc = run_main([*base, "--resume"])
    assert rc == 0
    hist = read_history(out)
    assert hist[:2] == first and hist[-1]["kind"] == "final" and len(hist) >= 4
    assert float(hist[-1]["latency_ms"]) <= 0.9 * seed_ms
    # resuming a finished run with other settings is refused
    rc = run_main([*base[:-len(TINY)], *TINY[:-1], "--metric", "accuracy", "--resume"])
    err = error_line(capsys.readouterr().err)
    assert rc == 2 and "--metric: the run in" in err and "'ratio'" in err
    # and a new run into a used folder too
    rc = run_main(base)
    assert rc == 2 and "already holds a NetAdapt run; use --resume" in capsys.readouterr().err


def test_resume_after_sigkill_continues_from_the_last_finished_iteration(tmp_path, seed_ms):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "searchers.netadapt", "--arch", SEED, "--target", TARGET,
            "--budget", f"{0.88 * seed_ms:.3f}ms", "--initial-ratio", "0.03", "--out", str(out), *TINY]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_file = out / "checkpoint" / "state.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if state_file.is_file() and json.loads(state_file.read_text())["iteration"] >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed = json.loads(state_file.read_text())
    k = killed["iteration"]
    assert k >= 1 and killed["phase"] == "search"
    done = subprocess.run(args + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming {out} after iteration {k}" in done.stderr
    hist = read_history(out)
    assert [int(r["iteration"]) for r in hist] == list(range(len(hist)))
    assert [r["arch"] for r in hist[:k + 1]] == [r["arch"] for r in killed["history"]]
    assert hist[-1]["kind"] == "final" and float(hist[-1]["latency_ms"]) <= 0.88 * seed_ms
    import optuna

    study = optuna.load_study(study_name=json.loads((out / "summary.json").read_text())["study"],
                              storage=f"sqlite:///{out / 'study.db'}")
    kinds = [t.user_attrs["kind"] for t in study.trials]
    assert kinds.count("seed") == 1 and kinds.count("final") == 1
    # proposals of the iteration the kill interrupted are not recorded twice
    keys = [(t.user_attrs["iteration"], t.user_attrs["arch"]) for t in study.trials if t.user_attrs["kind"] != "final"]
    assert len(keys) == len(set(keys))


def test_failed_start_leaves_nothing_and_usage_errors_are_one_line(tmp_path, capsys, seed_ms, monkeypatch):
    """A bad --weights, --dataset or --out is found before the study is made (the corrected command is
    not refused by a study the failed start left); --budget -4ms and unknown options are one line."""
    import re

    out = tmp_path / "run"
    ok = ["--arch", SEED, "--target", TARGET, "--budget", f"{0.9 * seed_ms:.3f}ms", *TINY]
    for extra, want in ((["--weights", "/nope.pt"], r"error: --weights: /nope\.pt does not exist"),
                        (["--weights", "/etc/passwd"], r"error: --weights: cannot read /etc/passwd: \w+Error"),
                        (["--dataset", "/nope.npz"], r"error: dataset: /nope\.npz does not exist; allowed: fashion-mnist, "
                                                     r"a folder of class sub-folders, or an \.npz file with x and y")):
        assert run_main([*ok, *extra, "--out", out]) == 2
        assert re.fullmatch(want, error_line(capsys.readouterr().err))
        assert not out.exists()
    f = tmp_path / "afile"
    f.write_text("")
    assert run_main([*ok, "--out", f]) == 2
    assert error_line(capsys.readouterr().err) == f"error: --out: {f} is a file; allowed: a folder (new or existing)"
    mkdir_fails_under(monkeypatch, tmp_path / "full")
    assert run_main([*ok, "--out", tmp_path / "full" / "x"]) == 2
    assert error_line(capsys.readouterr().err) == \
        f"error: --out: cannot make the folder {tmp_path / 'full' / 'x'}: No space left on device; allowed: a writable folder"
    monkeypatch.undo()
    assert run_main(["--arch", SEED, "--target", TARGET, "--budget", "-4ms"]) == 2
    assert error_line(capsys.readouterr().err) == \
        "error: --budget: got '-4ms'; allowed: a positive latency such as 60ms, 60 ms or 0.06s"
    assert run_main([*ok, "--bogus"]) == 2
    assert re.fullmatch(r"error: python -m searchers.netadapt: unrecognized arguments: --bogus; see .*--help",
                        error_line(capsys.readouterr().err))


def test_default_name_of_another_data_set_and_the_legacy_folder(tmp_path, monkeypatch, capsys):
    """netadapt's default run name gains -<data set name> as the other searchers' (the shared helper); a
    run made before that (runs/<old name>/study.db of this data set, where its state.json lives) is used."""
    import optuna

    from searchers.netadapt import NetAdapt, NetAdaptSettings
    from searchers.records import SETTINGS_ATTR

    monkeypatch.chdir(tmp_path)
    s = NetAdaptSettings(arch=SEED, target=TARGET, budget_ms=5.0, dataset="./two.npz")
    new = NetAdapt(s, progress=False).study_name
    legacy = new[: -len("-two")]
    assert new == f"netadapt-mobilenet_v3_small@0.35-{TARGET}-5ms-ratio-s0-two"
    assert NetAdapt(NetAdaptSettings(arch=SEED, target=TARGET, budget_ms=5.0, dataset=".."),
                    progress=False).study_name == f"{legacy}-{tmp_path.parent.name}"

    def old_run(dataset):
        db = tmp_path / "runs" / legacy / "study.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
        url = f"sqlite:///{db}"
        optuna.create_study(study_name=legacy, storage=url).set_user_attr(SETTINGS_ATTR, {"dataset": dataset})

    old_run("fashion-mnist")  # the default data set's run: another study, not taken
    assert NetAdapt(s, progress=False).study_name == new
    old_run("./two.npz")
    capsys.readouterr()
    na = NetAdapt(s, progress=False)
    assert (na.study_name, na.out) == (legacy, Path("runs") / legacy)
    assert capsys.readouterr().err.strip() == (f"note: using runs/{legacy} (made before the default run name named "
                                               f"the data set; a new run of this data set would be runs/{new})")
    assert NetAdapt(s, progress=False, quiet=True).study_name == legacy and capsys.readouterr().err == ""
    (tmp_path / "runs" / new).mkdir()
    assert NetAdapt(s, progress=False).study_name == new


def test_given_weights_are_read_once(tmp_path, seed_ms, monkeypatch, capsys):
    """--weights is read before the study is made (to check it) and that read seeds the run: one read."""
    import searchers.netadapt as na

    arch = zoo.get("mobilenet_v3_small", 0.35)
    torch.manual_seed(0)
    w = tmp_path / "seed.pt"
    torch.save(arch.build(num_classes=10).state_dict(), w)
    calls = []
    real = na.load_weights
    monkeypatch.setattr(na, "load_weights", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    out = tmp_path / "run"
    rc = run_main(["--arch", SEED, "--target", TARGET, "--budget", f"{0.97 * seed_ms:.3f}ms", "--weights", w,
                   "--out", out, "--max-iterations", "1", *TINY])
    assert rc == 0, capsys.readouterr().err
    assert calls == [str(w)]
    import optuna

    study = optuna.load_study(study_name=json.loads((out / "summary.json").read_text())["study"],
                              storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[0].user_attrs["weights"] == f"--weights {w}"
