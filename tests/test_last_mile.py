"""benchmarks/last_mile.py: the optional arms' commands (what --reuse matches cards against)."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import last_mile as LM  # noqa: E402

EXTRA = ["--init", "supernet", "--space", "mobilenetv3"]


def _args(**kw):
    d = dict(renorm="", perturb=0.0, perturb_short=False, scratch_short=False, finetune_lr=0.0, short_epochs=0)
    d.update(kw)
    return types.SimpleNamespace(**d)


def test_no_optional_arms_by_default():
    assert LM.arms(_args(), EXTRA) == []


def test_arms_and_their_flags():
    got = LM.arms(_args(renorm="bn,all", perturb=0.5, perturb_short=True, scratch_short=True, finetune_lr=0.01,
                        short_epochs=3), EXTRA)
    assert got == [
        ("supernet_renorm", EXTRA + ["--renorm"], []),
        ("supernet_renorm_short", EXTRA + ["--renorm"], ["--epochs", "3"]),
        ("supernet_renorm_all", EXTRA + ["--renorm", "all"], []),
        ("supernet_perturb", EXTRA + ["--perturb", "0.5"], []),
        ("supernet_perturb_short", EXTRA + ["--perturb", "0.5"], ["--epochs", "3"]),
        ("scratch_short", ["--init", "scratch"], ["--epochs", "3"]),
        ("supernet_ft", EXTRA, ["--lr", "0.01", "--warmup-epochs", "0", "--epochs", "3"]),
    ]
    # --finetune-recipe: searchers.train's --finetune with its own 1 epoch, whatever --short-epochs says
    got = LM.arms(_args(finetune_recipe=True, short_epochs=3), EXTRA)
    assert got == [("supernet_finetune", EXTRA + ["--finetune"], [])]
    # without --short-epochs: no short arms; the fine-tuning arm keeps the default epochs
    got = LM.arms(_args(renorm="bn", perturb=0.5, perturb_short=True, scratch_short=True, finetune_lr=0.02), EXTRA)
    assert [n for n, _, _ in got] == ["supernet_renorm", "supernet_perturb", "supernet_ft"]
    assert got[-1][2] == ["--lr", "0.02", "--warmup-epochs", "0"]


def test_first_epoch_reaching():
    h = [{"epoch": 0, "val_top1_ema": 0.9}, {"epoch": 1, "val_top1_ema": 0.5}, {"epoch": 2, "val_top1_ema": 0.8}]
    assert LM.first_epoch_reaching(h, 0.8) == 2            # epoch 0 (the initial weights) does not count
    assert LM.first_epoch_reaching(h, 0.85) is None


def test_bad_renorm_mode_is_one_line(capsys):
    with pytest.raises(SystemExit, match=r"--renorm: got 'se'; allowed: bn, all"):
        LM.main(["--renorm", "se", "--out", "/nonexistent/x"])             # before anything runs or is written
    assert not Path("/nonexistent/x").exists()


@pytest.mark.parametrize("argv, line", [
    (["--perturb", "2"], "--perturb: got 2; allowed: a number in [0, 1] (0: no such run)"),
    (["--perturb", "nan"], "--perturb: got nan; allowed: a number in [0, 1] (0: no such run)"),
    (["--finetune-lr", "-0.1"], "--finetune-lr: got -0.1; allowed: a number in [0, 10) (0: no such run)"),
])
def test_bad_perturb_and_finetune_lr_are_one_line_before_any_run(tmp_path, argv, line):
    with pytest.raises(SystemExit) as e:
        LM.main(argv + ["--out", str(tmp_path / "out")])
    assert str(e.value) == line and not (tmp_path / "out").exists()


# --- session 5: --reuse-from, the inherited-accuracy curve, the cost lines ---------------------------------

def test_command_key_drops_only_the_out_folder():
    a = "python -m searchers.train --arch m --out runs/a/scratch --threads 1 --init scratch --epochs 3"
    assert LM.command_key(a) == LM.command_key(a.replace("runs/a/scratch", "runs/b/scratch"))
    assert "--out" not in LM.command_key(a) and "runs/a/scratch" not in LM.command_key(a)
    assert LM.command_key(a) != LM.command_key(a + " --seed 1")
    assert LM.command_key(a) != LM.command_key(a.replace("--epochs 3", "--epochs 2"))


def test_reuse_from_takes_the_same_command_from_another_folder(tmp_path, monkeypatch):
    """--reuse-from: a card written by the same command to another --out is reused (nothing runs); one made
    by another command (here another seed) is not."""
    ran = []
    monkeypatch.setattr(LM.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or types.SimpleNamespace(returncode=9))
    old, new = tmp_path / "old", tmp_path / "new"
    args = types.SimpleNamespace(arch="mobilenet_v3_small", threads=1, latency_rounds=0, formats="py",
                                 recipe_args=["--train-images", "0"], reuse=True, reuse_from=[str(old)])
    cmd = ["python -m searchers.train", "--arch", "mobilenet_v3_small", "--dataset", "fashion-mnist", "--out",
           str(old / "scratch"), "--threads", "1", "--no-progress", "--latency-rounds", "0", "--formats",
           "py,onnx,yaml,pt", "--init", "scratch", "--train-images", "0"]
    (old / "scratch").mkdir(parents=True)
    (old / "scratch" / "card.json").write_text(json.dumps({"command": " ".join(cmd), "accuracy": {"top1": 0.875}}))
    card = LM.run_cli("scratch", args, new, ["--init", "scratch"], full=False)
    assert card["accuracy"]["top1"] == 0.875 and card["reused_from"] == str(old / "scratch") and ran == []
    (old / "scratch" / "card.json").write_text(json.dumps({"command": " ".join(cmd + ["--seed", "1"])}))
    with pytest.raises(SystemExit, match="scratch: searchers.train exited 9"):
        LM.run_cli("scratch", args, new, ["--init", "scratch"], full=False)
    assert len(ran) == 1 and str(new / "scratch") in ran[0]


def test_inherited_accuracy_is_the_supernet_init_runs_epoch_0(tmp_path):
    """inherited_accuracy scores Supernet.extract(arch) after supernet_model's BN re-estimation (what
    --init supernet starts from), and reads the steps of a mid-training checkpoint."""
    import torch

    from searchers import supernet as S
    from searchers.data import load_dataset
    from searchers.trainer import evaluate, supernet_model

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _toy_space import ToySpace, toy_npz

    torch.set_num_threads(1)
    data = load_dataset(toy_npz(tmp_path / "toy.npz"))
    recipe = S.SupernetRecipe(epochs=2, images_per_epoch=64, batch_size=32, envelope_samples=40)
    net = S.build_supernet(ToySpace(), data.num_classes, recipe, seed=0)
    with torch.no_grad():                              # weights unlike a fresh init's, so accuracies differ
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "checkpoint.pt"
    from dataclasses import asdict

    torch.save({"meta": net.meta(), "model": net.state_dict(), "step": 3, "recipe": asdict(recipe)}, path)
    arch = net.largest
    got = LM.inherited_accuracy(path, arch, data, seed=0)
    ref = evaluate(supernet_model(net, arch, data, 0), data.val)
    assert got["val_top1"] == ref["top1"] and got["images"] == ref["images"] == len(data.val)
    assert (got["steps"], got["total_steps"], got["file"]) == (3, recipe.total_steps, str(path))
    assert LM.inherited_accuracy(path, net.smallest, data, seed=0)["val_top1"] == \
        evaluate(supernet_model(net, net.smallest, data, 0), data.val)["top1"]


def test_cost_lines_add_the_supernets_training():
    def run(epochs, seconds):
        return {"training": {"epochs": epochs, "seconds": seconds}}

    runs = {"scratch": run(5, 217.0), "supernet_short": run(3, 180.4), "lenet": run(5, 100.0)}
    assert LM.cost_lines(runs, 2500.0) == [
        "supernet_short: 3 epochs, fine-tune 180 s + supernet 2,500 s = 2,680 s vs scratch 5 epochs 217 s"]
    assert "not recorded" in LM.cost_lines(runs, None)[0]


def test_missing_init_curve_file_is_one_line_before_any_run(tmp_path):
    with pytest.raises(SystemExit) as e:
        LM.main(["--init-curve", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "out")])
    assert str(e.value).startswith(f"--init-curve: {tmp_path / 'nope.pt'} does not exist; allowed: ")
    assert not (tmp_path / "out").exists()


def test_lenet_result_is_reused_only_for_the_same_recipe(tmp_path, monkeypatch):
    """--reuse takes a LeNet result only when epochs, training images and scored images all match."""
    last_mile = LM
    trained = []
    monkeypatch.setattr(last_mile, "_train_lenet", lambda args, out: trained.append(1) or
                        {"name": "lenet5", "recipe": last_mile._lenet_recipe(args), "fresh": True})
    args = types.SimpleNamespace(epochs=5, train_images=0, eval_images=0, reuse=True, reuse_from=[])
    (tmp_path / "lenet").mkdir()
    old = {"name": "lenet5", "recipe": {"epochs": 5, "train_images": 2000, "eval_images": 0},
           "training": {"history": [{}] * 6}}
    (tmp_path / "lenet" / "result.json").write_text(json.dumps(old))
    assert last_mile.run_lenet(args, tmp_path)["fresh"] and trained == [1]  # same epochs, other images: trained
    assert "fresh" in last_mile.run_lenet(args, tmp_path) and trained == [1]  # its own result now: reused
