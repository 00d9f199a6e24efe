"""The MobileNetV3 recipe (experiments/run.py): a smoke version of the three stages with tiny budgets
(proxy evaluator, a handful of RL trials, one-step NetAdapt fine-tunes, 64-image stand-alone training),
resume, and bad recipes failing in one line."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / ".." / "shared" / "data" / "reference_nets.json"

SMOKE = {
    "name": "smoke_large",
    "reference": "mobilenet_v3_large@1.0",
    "space": "mobilenetv3",
    "target": "pixel-cpu",
    "seed": 0,
    "search": {"evaluator": "proxy", "trials": 4, "w": -0.07, "batch": 2},
    "netadapt": {"seed_slack": 1.3, "initial_ratio": 0.3, "short_steps": 1, "short_batch": 8, "eval_images": 32,
                 "pretrain_epochs": 1, "pretrain_images": 64, "long_epochs": 0, "onnx": False},
    "standalone": {"epochs": 1, "images_per_epoch": 64, "batch_size": 32, "eval_images": 64, "precise_bn": 1,
                   "split": "val"},
}


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    from experiments.run import main

    capsys.readouterr()
    rc = main([*map(str, argv), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.err + cap.out


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One finished smoke run (module-scoped: the stages are the slow part)."""
    tmp = tmp_path_factory.mktemp("recipe")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGENAS_CACHE", str(tmp / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from experiments.run import main

    recipe = _write(tmp / "smoke.yaml", SMOKE)
    out = tmp / "run"
    rc = main([str(recipe), "--out", str(out), "--no-progress"])
    yield {"recipe": recipe, "out": out, "rc": rc, "tmp": tmp}
    torch.set_num_threads(threads)
    mp.undo()


def test_stages_write_their_outputs(smoke):
    import latency_models
    from search_space import zoo

    assert smoke["rc"] == 0
    out = smoke["out"]
    for d in ("stage1_search", "stage2_netadapt", "stage3_report"):
        assert (out / d / "done.json").is_file(), d
    # stage 1: the RL study with the requested number of archs, T = V3-Large's predicted latency
    s1 = json.loads((out / "stage1_search" / "done.json").read_text())
    T = latency_models.load("pixel-cpu").predict(zoo.get("mobilenet_v3_large", 1.0), resolution=224)
    assert s1["budget_ms"] == pytest.approx(T)
    assert s1["w"] == -0.07 and s1["evaluator"] == "proxy"
    with open(out / "stage1_search" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == s1["trials"] == 4
    assert (out / "stage1_search" / "study.db").is_file() and (out / "stage1_search" / "best" / "arch.yaml").is_file()
    # stage 2: NetAdapt from a stage-1 arch over T down to T
    s2 = json.loads((out / "stage2_netadapt" / "done.json").read_text())
    assert s2["seed"]["arch"] in {t["arch"] for t in trials}
    assert s2["status"] == "done", s2
    assert T < s2["seed"]["latency_ms"] <= 1.3 * T
    assert s2["latency_ms"] <= T
    assert (out / "stage2_netadapt" / "netadapt" / "best" / "arch.yaml").is_file()
    # stage 3: report, figure, data
    rep = out / "stage3_report"
    assert (rep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((rep / "report.json").read_text())
    assert data["target_ms"] == pytest.approx(T)
    final = next(n for n in data["networks"] if n["key"] == "found_netadapt")
    assert final["arch"] == s2["arch"] and final["latency_ms"] == pytest.approx(s2["latency_ms"])
    assert all(0.0 <= n["standalone_mean"] <= 1.0 for n in data["networks"])
    assert any("found: search + NetAdapt" in g and ("goal MET" in g or "goal NOT MET" in g) for g in data["goal"])


def test_report_lists_the_reference_networks_with_published_counts(smoke):
    """V3-Large/Small, MnasNet-A1 and MobileNetV2 with their published parameter counts and MACs (the
    reference implementations' numbers in ../shared/data/reference_nets.json), and which are space points."""
    refs = json.loads(REFERENCE.read_text())["nets"]
    md = (smoke["out"] / "stage3_report" / "report.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in md.splitlines() if line.startswith("| ") and not line.startswith("| network")}
    in_space = {"mobilenet_v3_large@1.0": "yes", "mobilenet_v3_small@1.0": "yes", "mnasnet_a1@1.0": "no",
                "mobilenet_v2@1.0": "no"}
    for key, yes in in_space.items():
        assert key in rows, (key, list(rows))
        name, space, lat, vs, params, macs, acc, standalone = rows[key]
        assert params == f"{refs[key]['params']:,}", key
        assert macs == f"{refs[key]['macs'] / 1e6:.1f}M", key
        assert space == yes
        assert acc.startswith("n/a") == (yes == "no")   # the search evaluator scores space points only
        assert standalone.endswith("%")
    assert rows["mobilenet_v3_large@1.0"][3] == "+0.0%"  # the reference is the target
    assert "mnasnet_a1@1.0, mobilenet_v2@1.0" in md       # said plainly: not points of the space
    assert "## Goal" in md and "found: search + NetAdapt" in md


def test_resume_skips_finished_stages(smoke, capsys):
    out = smoke["out"]
    report = out / "stage3_report" / "report.md"
    before = report.stat().st_mtime_ns
    n_trials = len(list(csv.DictReader(open(out / "stage1_search" / "trials.csv"))))
    rc, text = _run(capsys, smoke["recipe"], "--out", out)
    assert rc == 0
    for i, stage in enumerate(("search", "netadapt", "report"), 1):
        assert f"stage {i}/3 ({stage}): done, skipped" in text
    assert report.stat().st_mtime_ns == before
    # a run killed during stage 3: stages 1-2 skipped, stage 3 redone from the cached stand-alone results
    (out / "stage3_report" / "done.json").unlink()
    report.unlink()
    rc, text = _run(capsys, smoke["recipe"], "--out", out)
    assert rc == 0
    assert "stage 1/3 (search): done, skipped" in text and "stage 2/3 (netadapt): done, skipped" in text
    assert "stage 3/3 (report) finished" in text
    assert text.count(": cached ") == len(json.loads((out / "stage3_report" / "report.json").read_text())["networks"])
    assert report.is_file()
    assert len(list(csv.DictReader(open(out / "stage1_search" / "trials.csv")))) == n_trials
    # the same folder with another recipe is refused, naming the difference
    changed = _write(smoke["tmp"] / "changed.yaml", {**SMOKE, "search": {**SMOKE["search"], "trials": 9}})
    rc, text = _run(capsys, changed, "--out", out)
    assert rc == 2
    assert text.strip().startswith("error: --out:") and "search.trials (4 then, 9 now)" in text
    assert len(text.strip().splitlines()) == 1


BAD = [
    ({**SMOKE, "trails": 3}, "key: got 'trails'; allowed: name, description, reference"),
    ({k: v for k, v in SMOKE.items() if k != "reference"}, "reference: missing"),
    ({**SMOKE, "reference": "mobilenet_v9@1.0"}, "reference: got 'mobilenet_v9@1.0'; allowed: a zoo name"),
    ({**SMOKE, "reference": "mobilenet_v3_large@0.6"}, "reference: got 'mobilenet_v3_large@0.6'"),
    ({**SMOKE, "target": "pixel-gpu"}, "target: got 'pixel-gpu'; allowed: "),
    ({**SMOKE, "search": {**SMOKE["search"], "trials": "many"}}, "search.trials: got 'many'; allowed: an integer >= 1"),
    ({**SMOKE, "search": {k: v for k, v in SMOKE["search"].items() if k != "w"}}, "search.w: missing"),
    ({**SMOKE, "search": {**SMOKE["search"], "w": 0.07}}, "search.w: got 0.07; allowed: a number <= 0"),
    ({**SMOKE, "search": {**SMOKE["search"], "evaluator": "oracle"}}, "search.evaluator: got 'oracle'"),
    ({**SMOKE, "search": {**SMOKE["search"], "algo": "dqn"}}, "search.algo: got 'dqn'"),
    ({**SMOKE, "search": {**SMOKE["search"], "eval_opts": {"bogus": 1}}}, "search.eval_opts: "),
    ({**SMOKE, "netadapt": {**SMOKE["netadapt"], "short_steps": 0}}, "netadapt.short_steps: got '0'"),
    ({**SMOKE, "netadapt": {**SMOKE["netadapt"], "seed_from": "random"}}, "netadapt.seed_from: got 'random'"),
    ({**SMOKE, "standalone": {"epochs": 0}}, "standalone.epochs: got 0; allowed: a positive integer"),
    ({**SMOKE, "standalone": {"split": "train"}}, "standalone.split: got 'train'; allowed: val, test"),
    ("name: x\nsearch: {w: -0.07\n", "not valid YAML"),
    ("- just\n- a list\n", "got list; allowed: a mapping"),
]


@pytest.mark.parametrize("recipe,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_recipe_fails_in_one_line(tmp_path, capsys, recipe, message):
    path = _write(tmp_path / "bad.yaml", recipe)
    rc, text = _run(capsys, path, "--out", tmp_path / "run")
    assert rc == 2
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert message in lines[0], lines[0]
    assert not (tmp_path / "run").exists()  # nothing started


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.run", str(tmp_path / "missing.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: recipe: no file") and "experiments/mobilenetv3_large.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name,reference,w", [("mobilenetv3_large", "mobilenet_v3_large@1.0", -0.07),
                                              ("mobilenetv3_small", "mobilenet_v3_small@1.0", -0.15)])
def test_shipped_recipes_are_the_papers(name, reference, w):
    """The shipped recipes load, search the mobilenetv3 space on pixel-cpu with the paper's w, and compare
    against the four reference networks (all of them zoo networks; V3-Large/Small are space points)."""
    from experiments.run import load_recipe, parse_net
    from search_space.space import load_space

    r = load_recipe(f"experiments/{name}.yaml")
    assert (r["name"], r["reference"], r["space"], r["target"]) == (name, reference, "mobilenetv3", "pixel-cpu")
    assert r["search"]["w"] == w and r["search"]["searcher"] == "rl" and r["search"]["evaluator"] == "supernet"
    assert set(r["compare"]) == {"mobilenet_v3_large@1.0", "mobilenet_v3_small@1.0", "mnasnet_a1@1.0",
                                 "mobilenet_v2@1.0"}
    space = load_space("mobilenetv3")
    contained = {c: space.contains(parse_net(c, "t", "compare")[2]) for c in r["compare"]}
    assert contained == {"mobilenet_v3_large@1.0": True, "mobilenet_v3_small@1.0": True, "mnasnet_a1@1.0": False,
                         "mobilenet_v2@1.0": False}
    # NetAdapt's last step chooses by its metric among the proposals within the goal's 5% under T
    from experiments.run import netadapt_settings

    assert r["latency_tolerance"] == 0.05
    assert netadapt_settings(r, 15.79, "mobilenet_v3_small", Path("."), None).tolerance == 0.05
    r["netadapt"]["tolerance"] = 0.0                        # the recipe can restore the paper's rule
    assert netadapt_settings(r, 15.79, "mobilenet_v3_small", Path("."), None).tolerance == 0.0


def test_folder_takes_a_corrected_recipe_until_a_stage_wrote_something(tmp_path):
    from experiments.run import RecipeError, Run, load_recipe

    first = load_recipe(str(_write(tmp_path / "a.yaml", SMOKE)))
    fixed = load_recipe(str(_write(tmp_path / "b.yaml", {**SMOKE, "search": {**SMOKE["search"], "trials": 5}})))
    out = tmp_path / "run"
    out.mkdir()
    Run(first, out, progress=False).check_folder()
    Run(fixed, out, progress=False).check_folder()          # nothing written by any stage: replaced
    assert json.loads((out / "recipe.json").read_text())["search"]["trials"] == 5
    stage = Run(fixed, out, progress=False).stage_dir("search")
    stage.mkdir(parents=True)
    (stage / "study.db").write_bytes(b"")
    with pytest.raises(RecipeError, match=r"^--out: .* search.trials \(5 then, 4 now\)"):
        Run(first, out, progress=False).check_folder()
