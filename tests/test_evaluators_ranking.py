"""benchmarks/evaluators_ranking.py: the arch samplers, the rank correlations and the option checks."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import evaluators_ranking as er  # noqa: E402

from search_space.profile import profile  # noqa: E402
from search_space.space import load_space  # noqa: E402
from searchers.supernet import SCOPE_CAPS, scope_space, within_caps  # noqa: E402


@pytest.fixture(scope="module")
def space():
    return load_space("mobile-unified")


def log_macs(archs):
    return [math.log(profile(a, 32, 10)["macs"]) for a in archs]


def test_stratified_macs_sample_is_deterministic_distinct_in_scope_and_spread(space):
    """The session-4 sample: 20 distinct archs of the supernet's scope, the same on every call, in
    ascending MACs at 32x32, one per stratum of the pool's log-MACs range (so they span it), and
    spread far wider than 20 uniform draws (the sessions 1-3 sample)."""
    archs = er.sample_archs(space, 20, 1, method="stratified-macs")
    again = er.sample_archs(space, 20, 1, method="stratified-macs")
    assert [a.to_string() for a in archs] == [a.to_string() for a in again]
    assert len({a.to_string() for a in archs}) == 20
    scope = scope_space("mobile-unified/mbconv")
    caps = SCOPE_CAPS["mobile-unified/mbconv"]
    for a in archs:
        assert scope.explain(a) == ""
        assert space.contains(a)
        assert within_caps(a, caps["max_channels"], caps["max_macs"])
    lm = log_macs(archs)
    assert lm == sorted(lm)
    # the pool the strata cut: the same 2,000 draws of the scope
    import random

    rng = random.Random(1)
    pool = log_macs(scope.sample(rng) for _ in range(er.SAMPLE_POOL))
    lo, hi = min(pool), max(pool)
    width = (hi - lo) / 20
    assert lo <= lm[0] <= lo + width and hi - width <= lm[-1] <= hi
    # each stratum's pick lies near its centre: no two neighbours more than two strata apart
    assert max(b - a for a, b in zip(lm, lm[1:])) <= 2 * width
    # the pool spans a factor of 4.2 in MACs at 32x32 (2.6-11.1 MMACs); the sample a factor of 4.1, the
    # uniform sample of seed 0 (the sessions 1-3 ground truth) a factor of 2.0 (3.9-7.9 MMACs)
    assert math.exp(hi - lo) > 4 and math.exp(lm[-1] - lm[0]) > 4
    uni = log_macs(er.sample_archs(space, 20, 0, method="uniform"))
    assert (lm[-1] - lm[0]) > 1.5 * (max(uni) - min(uni))
    # another seed, another sample
    other = er.sample_archs(space, 20, 2, method="stratified-macs")
    assert [a.to_string() for a in other] != [a.to_string() for a in archs]


def test_uniform_sample_unchanged_and_pool_too_small(space):
    """uniform: 20 distinct archs, deterministic (the sessions 1-3 sample); a pool with fewer distinct
    archs than n is refused naming both."""
    a = er.sample_archs(space, 20, 0)
    assert [x.to_string() for x in a] == [x.to_string() for x in er.sample_archs(space, 20, 0, method="uniform")]
    # the archs sessions 1-3 scored with the supernet (their ground truth is in the CSV), in sampling order
    scored = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "data"
                         / "supernet_scores_mobile-unified.json").read_text())["scores"]
    assert [x.to_string() for x in a] == list(scored)
    assert len({x.to_string() for x in a}) == 20
    with pytest.raises(ValueError, match=r"pool of 5 draws holds only 5 distinct archs; need n=20"):
        er.sample_archs(space, 20, 1, method="stratified-macs", pool=5)
    with pytest.raises(ValueError, match=r"sample: got 'quantile'; allowed: uniform, stratified-macs"):
        er.sample_archs(space, 20, 1, method="quantile")


def test_rank_corr_known_values():
    # one swapped pair of four: tau = (5 - 1) / 6, rho = 1 - 6 * 2 / (4 * 15)
    assert er.rank_corr([1, 2, 3, 4], [1, 3, 2, 4]) == {"tau": 0.667, "spearman": 0.8}
    assert er.rank_corr([1, 2, 3], [3, 2, 1]) == {"tau": -1.0, "spearman": -1.0}


@pytest.mark.parametrize("argv, msg", [
    (["--sample", "quantile"], "error: --sample: got 'quantile'; allowed: distinct names among uniform, "
                               "stratified-macs separated by commas"),
    (["--sample", "uniform,uniform"], "error: --sample: got 'uniform,uniform'"),
    (["--sample", "stratified-macs", "--pool", "10"], "error: --pool: got 10; allowed: at least --n (20)"),
    (["--part", "agreement", "--checkpoints", "a=/no/such/supernet.pt"],
     "error: --checkpoints: got 'a=/no/such/supernet.pt'; allowed: NAME=PATH of an existing checkpoint file"),
    (["--part", "agreement", "--checkpoints", "just-a-path"], "error: --checkpoints: got 'just-a-path'"),
])
def test_bad_options_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        er.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(msg) and err.count("\n") == 1


def _runs(order_by_setting: dict, n_runs: int = 3, n: int = 6) -> dict:
    """Synthetic runs: under each setting a list of per-run score lists (``None``: every run its own shuffle)."""
    import random

    rng = random.Random(0)
    runs = {f"r{i}": {} for i in range(n_runs)}
    for s in er._agree_settings():
        for i in range(n_runs):
            fixed = order_by_setting.get(s)
            top1 = list(fixed) if fixed is not None else rng.sample(range(n), n)
            runs[f"r{i}"][s] = {"top1": [float(v) for v in top1], "loglik": [float(-v) for v in top1]}
    return runs


def test_agreement_chooses_by_run_to_run_agreement_not_by_the_truth():
    n = 6
    target = "calib4x128_scored5000"
    runs = _runs({target: range(n)}, n=n)               # only under `target` do the runs agree (tau 1)
    truth = list(range(n, 0, -1))                       # ... and there they rank exactly against the truth
    res = er.agreement(runs, truth)
    assert res["chosen"] == target
    got = res["settings"][f"{target}:top1"]
    assert got["run_to_run_tau_mean"] == got["run_to_run_tau_min"] == 1.0
    assert got["tau_vs_truth"] == {"r0": -1.0, "r1": -1.0, "r2": -1.0} and got["tau_of_mean_score_vs_truth"] == -1.0
    assert res["settings"][f"{target}:loglik"]["tau_vs_truth"]["r0"] == 1.0   # loglik = -score here
    # every setting agrees equally: the tie goes to the default
    same = _runs({s: range(n) for s in er._agree_settings()}, n=n)
    assert er.agreement(same, truth)["chosen"] == er.AGREE_DEFAULT
    # ties between other settings: fewer images first, then fewer calibration batches
    r = _runs({"calib4x128_scored5000": range(n), "calib8x128_scored2000": range(n)}, n=n)
    assert er.agreement(r, truth)["chosen"] == "calib8x128_scored2000"
    r = _runs({"calib8x128_scored2000": range(n), "calib4x128_scored2000": range(n)}, n=n)
    assert er.agreement(r, truth)["chosen"] == "calib4x128_scored2000"
    # the choice is made on top-1 alone: runs that agree on the log-likelihood elsewhere change nothing
    other = "calib8x128_scored5000"
    for i, name in enumerate(sorted(runs)):
        runs[name][other]["loglik"] = [float(v) for v in range(n)]
        runs[name][target]["loglik"] = [float(v) for v in __import__("random").Random(i).sample(range(n), n)]
    assert er.agreement(runs, truth)["chosen"] == target
    # one run: nothing to agree on, nothing chosen
    assert "chosen" not in er.agreement({"r0": runs["r0"]}, truth)


def test_agreement_plot_is_a_png(tmp_path):
    n = 6
    res = er.agreement(_runs({"calib4x128_scored5000": range(n)}, n=n), list(range(n)))
    png = tmp_path / "a.png"
    er.plot_agreement(res, png, 9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_agreement_decision_needs_the_gain_and_the_time():
    n = 6
    target = "calib4x128_scored5000"
    runs, truth = _runs({target: range(n)}, n=n), list(range(n))
    fast = {target: {"mean_s": 1.2}, er.AGREE_DEFAULT: {"mean_s": 0.6}}
    d = er.agreement(runs, truth, fast)["decision"]
    assert d["chosen"] == target and d["change_default"] and d["gain_over_default"] >= 0.10
    assert not er.agreement(runs, truth, {target: {"mean_s": 2.5}})["decision"]["change_default"]   # too slow
    assert not er.agreement(runs, truth)["decision"]["change_default"]                             # not timed
    same = _runs({s: range(n) for s in er._agree_settings()}, n=n)      # the default itself is chosen
    assert not er.agreement(same, truth, fast)["decision"]["change_default"]


def test_score_run_settings_is_the_evaluators_own_path(tmp_path, monkeypatch):
    """Under the default setting (2 calibration batches of 128, the first 2,000 validation images) the
    part's top-1 equals ``evaluate_subnet``'s (BN not folded: bit for bit), the 2 batches being the first 2 of
    its 8-batch draw; more batches and images change the scores."""
    import random
    from dataclasses import replace

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _toy_space import ToySpace, toy_npz
    from searchers import supernet as S
    from searchers.data import load_dataset

    torch.set_num_threads(1)
    space = ToySpace()
    data = load_dataset(toy_npz(tmp_path / "toy.npz", n=2400))
    net = S.build_supernet(space, data.num_classes, S.SupernetRecipe(envelope_samples=60), seed=0)
    ck = tmp_path / "supernet.pt"
    torch.save({"meta": net.meta(), "model": net.state_dict()}, ck)
    archs = [space.sample(random.Random(i)) for i in range(3)]
    monkeypatch.setattr(er, "AGREE_IMAGES", (100, 2000))
    got = er.score_run_settings(space, archs, data, 0, lambda m: None, str(ck))
    assert set(got) == {f"calib{c}x128_scored{n}" for c in (2, 4, 8) for n in (100, 2000)}
    for c in (2, 8):
        want = [S.evaluate_subnet(net, a, data, replace(S.SupernetRecipe(), calib_batches=c, eval_images=2000),
                                  0, fold=False) for a in archs]
        assert got[f"calib{c}x128_scored2000"]["top1"] == [round(w, 5) for w in want]
    assert all(v < 0 for v in got["calib2x128_scored100"]["loglik"])
    assert got["calib2x128_scored100"] != got["calib2x128_scored2000"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is visible: --device cuda is valid")
def test_device_cuda_without_a_gpu_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        er.main(["--device", "cuda", "--part", "report"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: --device: got cuda but no CUDA device is visible; allowed: cpu\n"


def test_run_standalone_migrates_old_rows_skips_done_ones_and_records_the_device(space, tmp_path, monkeypatch):
    """A CSV from before the device column gains it (cpu); a row done (on any device) is not retrained; a new
    row says where it trained.  Training and profiling are stubbed: this is about the rows."""
    import csv

    import torch

    import searchers.training as T
    from searchers.training import Recipe

    path = tmp_path / "standalone.csv"
    monkeypatch.setattr(er, "standalone_path", lambda name: path)
    archs = er.sample_archs(space, 2, 0)
    recipe = Recipe(epochs=1, images_per_epoch=64)
    rj = json.dumps(recipe.to_dict(), sort_keys=True)
    old = {"arch": archs[0].to_string(), "space": space.name, "dataset": "fashion-mnist", "seed": "5",
           "accuracy_test": "0.9", "accuracy_val": "0.9", "train_seconds": "1.0", "steps": "1", "macs": "1",
           "params": "1", "recipe": rj}
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=er.FIELDS[:-1])
        w.writeheader()
        w.writerow(old)
    trained = []

    def fake_train(arch, data, recipe, seed, split, device):
        trained.append((arch.to_string(), seed, device))
        return torch.nn.Identity(), {"accuracy": 0.5, "seconds": 2.0, "steps": 1}

    monkeypatch.setattr(er, "train_arch", fake_train)
    monkeypatch.setattr(T, "accuracy", lambda model, split, limit=None: 0.25)
    monkeypatch.setattr(er, "profile", lambda arch, res, classes: {"macs": 7, "params": 3})

    class Data:
        name, resolution, num_classes, val = "fashion-mnist", (32, 32), 10, None

    er.run_standalone(space, archs, Data(), 5, lambda m: None, recipe, "cpu")
    assert trained == [(archs[1].to_string(), 5, "cpu")]
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == er.FIELDS
        rows = list(reader)
    assert [(r["arch"], r["device"], r["accuracy_test"]) for r in rows] == [
        (archs[0].to_string(), "cpu", "0.9"), (archs[1].to_string(), "cpu", "0.5000")]
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,seed\nx,0\n")
    with pytest.raises(SystemExit, match="header"):
        er.migrate_standalone(bad)


def test_the_shipped_ground_truth_file_is_well_formed():
    """Every row has every field, says where it trained, and no (arch, recipe, seed) is there twice; the
    4-epoch ground truth of the stratified 20 has seeds 0-8 (0 and 6-8 on a CPU, 1-5 on the H200 of
    session 9); a later seed may be part-trained (rows are kept for a later session to finish; only
    complete seeds enter the ground truth), never over 20 archs."""
    import csv
    from collections import Counter

    path = er.standalone_path("fashion-mnist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == er.FIELDS
        rows = list(reader)
    assert all(None not in r and all(r[k] != "" for k in er.FIELDS) for r in rows)
    assert {r["device"] for r in rows} <= {"cpu", "cuda (NVIDIA H200)"}
    keys = Counter((r["arch"], r["recipe"], r["seed"]) for r in rows)
    assert max(keys.values()) == 1
    four = Counter((r["seed"], r["device"]) for r in rows if json.loads(r["recipe"])["epochs"] == 4)
    assert {k: v for k, v in four.items() if int(k[0]) < 9} == {
        **{(str(s), "cpu"): 20 for s in (0, 6, 7, 8)}, **{(str(s), "cuda (NVIDIA H200)"): 20 for s in range(1, 6)}}
    assert all(v <= 20 for v in four.values())
    later = {r["arch"] for r in rows if json.loads(r["recipe"])["epochs"] == 4 and int(r["seed"]) >= 6}
    seed0 = {r["arch"] for r in rows if json.loads(r["recipe"])["epochs"] == 4 and r["seed"] == "0"}
    assert later <= seed0  # a later seed trains the same stratified 20


def test_the_gpu_script_runs_on_a_cpu_and_guards_its_scratch_folder(tmp_path):
    """benchmarks/evaluators_gpu.sh with nothing to train (the CPU rehearsal's plumbing): exit 0, the
    results archive holds the log and the ground-truth file; a scratch folder it did not make is refused."""
    import subprocess
    import tarfile

    env = {**__import__("os").environ, "OUT": str(tmp_path / "out"), "EDGENAS_GPU_WORK": str(tmp_path / "w"),
           "DEVICE": "cpu", "WORKERS": "0", "SUPERNETS": "", "BUDGET": "1", "POLL": "1", "PY": sys.executable}
    script = str(Path(er.__file__).with_name("evaluators_gpu.sh"))
    r = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with tarfile.open(tmp_path / "out" / "results.tgz") as t:
        names = set(t.getnames())
    assert {"logs/main.log", "standalone_fashion_mnist.csv"} <= names
    (tmp_path / "mine").mkdir()
    r = subprocess.run(["bash", script], env={**env, "EDGENAS_GPU_WORK": str(tmp_path / "mine")},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is not this script's scratch folder" in r.stderr
