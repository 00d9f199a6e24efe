"""Distributed training (searchers.distributed): 2 CPU processes with gloo launched by torchrun.

* both ranks end with identical weights (parameters, BN running statistics, EMA, optimizer state);
* a 2-process run equals a 1-process run on the same global batch: the 1-process run cuts each global
  batch into the same 2 shards (``accum=2``: gradient accumulation; every shard normalises with its
  own BatchNorm statistics, as each rank does without SyncBatchNorm, which gloo/CPU lacks); equal
  within float tolerance (the all-reduce sums in another order);
* the same for the supernet's sandwich training (all subnets of a step in one forward, DDP with
  find_unused_parameters);
* without the shard rule (1 process, 1 shard) the result differs: the comparison can fail.

This file is also the torchrun worker (``python -m torch.distributed.run ... tests/test_distributed.py``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# a small MBConv net with SE, BatchNorm and head dropout (so RNG and BN statistics matter)
SMALL = ("stem_i3_o16_k3_s2_re-mbconv_i16_o24_m48_k3_s2_se8h_re-mbconv_i24_o24_m72_k3_s1_re_skip-"
         "mbconv_i24_o32_m96_k3_s2_hs-head_l128_h0_hs_d0.2")
RECIPE = dict(epochs=2, batch_size=32, train_images=128, eval_images=64, warmup_epochs=0.5)


def _standalone(out: Path, dist=None, accum: int = 1) -> dict:
    from search_space.arch import Arch
    from searchers.data import load_dataset
    from searchers.trainer import Trainer, TrainRecipe, scratch_model

    data = load_dataset("fashion-mnist", seed=0)
    arch = Arch.from_string(SMALL)
    tr = Trainer(arch, data, TrainRecipe(**RECIPE), out, scratch_model(arch, 10, 0), seed=0, progress=False,
                 dist=dist, accum=accum)
    tr.run(resume=False)
    return {"model": tr.model.state_dict(), "ema": tr.ema.module.state_dict(),
            "momentum": [s["momentum_buffer"] for s in tr.opt.state.values()], "history": tr.history,
            "step": tr.step}


def _tiny_supernet_recipe():
    from searchers import supernet as S

    return S.SupernetRecipe(epochs=1, images_per_epoch=96, batch_size=32, envelope_samples=30, n_random=1,
                            checkpoint_every=100)


def _supernet(out: Path, dist=None, accum: int = 1) -> dict:
    from _toy_space import ToySpace
    from searchers.data import load_dataset
    from searchers.distributed import SINGLE, train_supernet_ddp

    net = train_supernet_ddp(ToySpace(), load_dataset("fashion-mnist", seed=0), _tiny_supernet_recipe(), seed=0,
                             out_dir=out, d=dist or SINGLE, accum=accum, resume=False, progress=False)
    return {"model": net.state_dict()}


def _worker(kind: str, out: str) -> None:
    torch.set_num_threads(1)
    from searchers.distributed import init_from_env, shutdown

    d = init_from_env()
    try:
        fn = _standalone if kind == "train" else _supernet
        res = fn(Path(out) / "run", d)
        torch.save(res, Path(out) / f"rank{d.rank}.pt")
    finally:
        shutdown(d)


def _torchrun(kind: str, out: Path) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        __file__, kind, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return [torch.load(out / f"rank{k}.pt", weights_only=False) for k in (0, 1)]


def _max_diff(a: dict, b: dict) -> float:
    assert list(a) == list(b)
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a.values(), b.values()))


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(x, y) for x, y in zip(a.values(), b.values()))


def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    torch.set_num_threads(1)
    r0, r1 = _torchrun("train", tmp_path)
    # both ranks: bit-identical weights, BN statistics, EMA and momentum buffers
    assert _same(r0["model"], r1["model"]) and _same(r0["ema"], r1["ema"])
    assert all(torch.equal(x, y) for x, y in zip(r0["momentum"], r1["momentum"]))
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert r0["step"] == 8 and strip(r0["history"]) == strip(r1["history"])
    # rank 0 wrote the checkpoint, for the 2-shard run
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ck["world"] == 2 and ck["identity"]["shards"] == 2 and ck["step"] == 8
    # 1 process, the same global batches cut into the same 2 shards
    one = _standalone(tmp_path / "one", accum=2)
    assert _max_diff(one["model"], r0["model"]) < 1e-5
    assert _max_diff(one["ema"], r0["ema"]) < 1e-5
    assert max(float((x - y).abs().max()) for x, y in zip(one["momentum"], r0["momentum"])) < 1e-5
    assert [h["epoch"] for h in one["history"]] == [0, 1, 2]
    assert abs(one["history"][-1]["train_loss"] - r0["history"][-1]["train_loss"]) < 1e-5
    # ... and the weights moved, and one plain shard (BN over the whole batch) is a different run
    plain = _standalone(tmp_path / "plain", accum=1)
    assert _max_diff(plain["model"], r0["model"]) > 1e-3


def test_supernet_sandwich_under_ddp_matches_one_process(tmp_path):
    torch.set_num_threads(1)
    r0, r1 = _torchrun("supernet", tmp_path)
    assert _same(r0["model"], r1["model"])
    from searchers.supernet import load_supernet

    saved = load_supernet(tmp_path / "run" / "supernet.pt")          # the file the evaluator loads
    assert _same({k: v for k, v in saved.state_dict().items()}, r0["model"])
    one = _supernet(tmp_path / "one", accum=2)
    assert _max_diff(one["model"], r0["model"]) < 1e-5
    from _toy_space import ToySpace
    from searchers import supernet as S
    from searchers.data import load_dataset

    init = S.build_supernet(ToySpace(), 10, _tiny_supernet_recipe(), 0, load_dataset("fashion-mnist").resolution)
    assert _max_diff(init.state_dict(), r0["model"]) > 1e-3                     # it trained


def test_machines_search_one_postgres_study_with_a_supernet_trained_by_torchrun(tmp_path):
    """The cluster recipe of docs/scale.md in small: torchrun (2 gloo processes) trains the supernet into
    a shared folder; two "machines" (processes with their own, empty $EDGENAS_CACHE) run the same
    ``searchers.evolve`` command against one PostgreSQL study, both loading that supernet file
    (``--eval-opt supernet_path=...``): every trial recorded once, both machines evaluated, none trained
    a supernet of its own."""
    import json
    import random

    import optuna
    from optuna.trial import TrialState

    import latency_models
    import pg_server
    from search_space.space import load_space
    from searchers.records import open_storage

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    shared = tmp_path / "shared"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "searchers.distributed", "supernet", "--space", "proxylessnas", "--epochs", "1",
                        "--images-per-epoch", "64", "--batch-size", "32", "--n-random", "1", "--envelope-samples", "40",
                        "--out", str(shared), "--no-progress", "--threads", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    sup = shared / "supernet.pt"
    assert sup.is_file() and json.loads((shared / "info.json").read_text())["world"] == 2

    space, model = load_space("proxylessnas"), latency_models.load("pixel-cpu")
    lats = sorted(float(x) for x in model.predict_many([space.sample(random.Random(2)) for _ in range(40)]))
    srv = pg_server.start()
    try:
        cmd = [sys.executable, "-m", "searchers.evolve", "--space", "proxylessnas", "--target", "pixel-cpu",
               "--budget", f"{lats[len(lats) // 2]:.1f}ms", "--evaluator", "supernet",
               "--eval-opt", f"supernet_path={sup}", "--eval-opt", "eval_images=64", "--eval-opt", "calib_batches=1",
               "--eval-opt", "calib_batch_size=32", "--trials", "8", "--population", "4", "--sample-size", "2",
               "--storage", srv.url, "--study", "cluster", "--no-progress", "--no-zoo"]
        procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"m{i}")], cwd=ROOT,
                                  env={**env, "EDGENAS_CACHE": str(tmp_path / f"cache{i}")},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-2000:]
        study = optuna.load_study(study_name="cluster", storage=open_storage(srv.url))
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        assert 8 <= len(trials) <= 9
        journals = [[json.loads(x) for f in (tmp_path / f"m{i}" / "journal").glob("*.jsonl")
                     for x in f.read_text().split("\n") if x] for i in range(2)]
        assert all(journals), "both machines evaluated trials"
        assert sorted(j["trial"] for js in journals for j in js) == sorted(t.number for t in trials)
        assert all(0.0 <= t.values[0] <= 1.0 for t in trials)
        assert not list(tmp_path.glob("cache*/**/supernet.pt")), "a machine trained its own supernet"
    finally:
        srv.stop()


def test_shard_rule_errors():
    import pytest

    from searchers.distributed import Dist, DistError, rank_slice, shard_size

    d = Dist(rank=1, world=2)
    assert shard_size(64, d, 2) == 16 and rank_slice(64, d, 2) == slice(32, 64)
    with pytest.raises(DistError, match=r"--batch-size: got 30, not divisible by 2 process\(es\) x 2"):
        shard_size(30, d, 2)


def test_amp_no_op_on_cpu_and_channels_last_same_arithmetic(tmp_path):
    """--amp acts on CUDA only: on a CPU it is the plain run, bit for bit.  --channels-last (the
    default) acts on CPU too: the weights are NHWC and the result is the NCHW run's up to float rounding."""
    from search_space.arch import Arch
    from searchers.data import load_dataset
    from searchers.trainer import Trainer, TrainRecipe, scratch_model

    torch.set_num_threads(1)
    data, arch = load_dataset("fashion-mnist", seed=0), Arch.from_string(SMALL)
    r = TrainRecipe(epochs=1, batch_size=32, train_images=64, eval_images=32)
    runs = []
    for flags in ({"channels_last": False}, {"amp": True, "channels_last": False}, {}):
        tr = Trainer(arch, data, r, tmp_path / str(len(runs)), scratch_model(arch, 10, 0), progress=False, **flags)
        tr.run(resume=False)
        assert tr.device.type == "cpu" and tr.amp is False and tr.scaler is None
        assert tr.channels_last is flags.get("channels_last", True)
        convs = [p for p in tr.model.parameters() if p.ndim == 4 and p.shape[2] > 1]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs) is tr.channels_last
        runs.append(tr.model.state_dict())
    assert _same(runs[0], runs[1])
    diff = max(float((runs[0][k].float() - runs[2][k].float()).abs().max()) for k in runs[0])
    assert 0 <= diff < 1e-3, diff


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])


def test_cli_bad_input_is_one_line(capsys):
    """No command, an unknown option, a negative --threads, --backend outside torchrun: one line, exit 2."""
    from searchers.distributed import init_from_env, main

    for args, line in (
            ([], "error: command: missing; allowed: supernet, train (see python -m searchers.distributed --help)"),
            (["fit"], "error: command: got 'fit'; allowed: supernet, train"),
            (["supernet", "--threads", "-1"], "error: --threads: got -1; allowed: an integer >= 0 (0: torch's default)"),
            (["supernet", "--epochs", "x"], "error: torchrun ... -m searchers.distributed supernet: argument --epochs: "
                                            "invalid int value: 'x'; allowed: a whole number"),
            (["train", "--arch", "mobilenet_v3_small", "--backend", "mpi"],
             "error: --backend: got 'mpi'; allowed: nccl, gloo"),
            (["supernet", "--seed", "1", "--data-seed", "0"],
             "error: --data-seed: got 0 with --seed 1 but no --out; allowed: --out DIR with it (the supernet cache "
             "is keyed by one seed)")):
        assert main(args) == 2
        assert capsys.readouterr().err.strip().splitlines() == [line], args
    import pytest

    from searchers.distributed import DistError

    with pytest.raises(DistError, match=r"^--backend: got 'mpi'; allowed: nccl, gloo$"):
        init_from_env("mpi")  # (WORLD_SIZE unset: one process, still a wrong value)
