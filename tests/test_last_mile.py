"""benchmarks/last_mile.py: the optional arms' commands (what --reuse matches cards against)."""
from __future__ import annotations

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
