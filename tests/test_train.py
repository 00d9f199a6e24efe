"""The last mile (searchers.train / trainer / card): learning, exact resume, top-5, the model card's
numbers, the exports' checks, supernet-inherited initial weights, and one-line errors."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_space import export as E
from search_space import zoo
from search_space.arch import Arch
from search_space.profile import profile
from searchers import supernet as S
from searchers.data import load_dataset
from searchers.train import main as train_main
from searchers.trainer import (EMA, TrainError, Trainer, TrainRecipe, augment, evaluate, scratch_model,
                               supernet_model, weights_fingerprint)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy_space import ToySpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# a small MBConv net (4 layers, head dropout so that the torch RNG matters for resume)
SMALL = ("stem_i3_o16_k3_s2_re-mbconv_i16_o24_m48_k3_s2_re-mbconv_i24_o24_m72_k3_s1_re_skip-"
         "mbconv_i24_o32_m96_k3_s2_hs-head_l128_h0_hs_d0.2")


@pytest.fixture(scope="module")
def fmnist():
    torch.set_num_threads(1)
    return load_dataset("fashion-mnist", seed=0)


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "searchers.train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_learns_on_a_tiny_subset(fmnist, tmp_path):
    arch = Arch.from_string(SMALL)
    # 1,280 images (80 steps): with 640 the EMA weights scored 0.23-0.3 depending on the CPU's arithmetic
    # (an Intel Xeon in session 9 vs the AMD EPYC before; the raw weights 0.39), too close to the bar
    r = TrainRecipe(epochs=2, batch_size=32, lr=0.2, warmup_epochs=0.2, train_images=1280, eval_images=500)
    tr = Trainer(arch, fmnist, r, tmp_path, scratch_model(arch, 10, 0), progress=False)
    tr.run()
    h = tr.history
    assert [x["epoch"] for x in h] == [0, 1, 2] and h[2]["train_loss"] < h[1]["train_loss"] < 2.3
    test = tr.test()
    assert test["images"] == 500 and test["top1"] > 0.25          # chance: 0.10
    assert 0 <= test["top1"] <= test["top5"] <= 1 and "top5_raw" in test
    assert tr.step == 2 * (1280 // 32)


def test_resume_is_exact(fmnist, tmp_path):
    """2 epochs straight == 1 epoch, stop (as a kill at the epoch's checkpoint), resume, 1 epoch."""
    arch = Arch.from_string(SMALL)
    r = TrainRecipe(epochs=2, batch_size=32, train_images=192, eval_images=64)
    a = Trainer(arch, fmnist, r, tmp_path / "a", scratch_model(arch, 10, 0), progress=False)
    a.run()
    b = Trainer(arch, fmnist, r, tmp_path / "b", scratch_model(arch, 10, 0), progress=False)
    assert b.run(stop_after=1) == {"resumed_from": None, "epochs_done": 1, "finished": False}
    del b
    c = Trainer(arch, fmnist, r, tmp_path / "b", scratch_model(arch, 10, 0), progress=False)
    assert c.run()["resumed_from"] == 1
    for ours, theirs in ((a.model, c.model), (a.ema.module, c.ema.module)):
        sa, sc = ours.state_dict(), theirs.state_dict()
        assert sa.keys() == sc.keys() and all(torch.equal(sa[k], sc[k]) for k in sa)
    def drop_time(h):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in h]

    assert drop_time(a.history) == drop_time(c.history) and len(a.history) == 3 and a.step == c.step
    oa, oc = a.opt.state_dict()["state"], c.opt.state_dict()["state"]
    assert all(torch.equal(oa[k]["momentum_buffer"], oc[k]["momentum_buffer"]) for k in oa)
    # a checkpoint of another run is refused, not silently continued
    other = Trainer(arch, fmnist, TrainRecipe(epochs=3, batch_size=32, train_images=192, eval_images=64),
                    tmp_path / "b", scratch_model(arch, 10, 0), progress=False)
    with pytest.raises(TrainError, match="another run .*recipe"):
        other.run()


def test_resume_mid_epoch_is_exact(fmnist, tmp_path):
    """Stopped mid-epoch (after step 4 of 6 of epoch 1; checkpoint every 2 steps) and resumed in a fresh
    Trainer with the process RNG disturbed == uninterrupted: weights, EMA, BN statistics, optimizer,
    history; also with the batch cut into 2 shards (gradient accumulation, dropout seeded per shard)."""
    arch = Arch.from_string(SMALL)
    r = TrainRecipe(epochs=2, batch_size=32, train_images=192, eval_images=64)
    for accum in (1, 2):
        a = Trainer(arch, fmnist, r, tmp_path / f"a{accum}", scratch_model(arch, 10, 0), progress=False, accum=accum)
        a.run()
        b = Trainer(arch, fmnist, r, tmp_path / f"b{accum}", scratch_model(arch, 10, 0), progress=False,
                    accum=accum, checkpoint_every=2)
        assert b.run(stop_after_steps=4) == {"resumed_from": None, "epochs_done": 0, "finished": False}
        ck = torch.load(tmp_path / f"b{accum}" / "checkpoint.pt", weights_only=False)
        assert ck["step"] == 4 and ck["epoch"] == 0 and ck["order"] is not None and len(ck["epoch_losses"]) == 4
        torch.manual_seed(12345)
        c = Trainer(arch, fmnist, r, tmp_path / f"b{accum}", scratch_model(arch, 10, 0), progress=False,
                    accum=accum, checkpoint_every=2)
        assert c.run()["resumed_from"] == 0 and c.step == a.step == 12
        for ours, theirs in ((a.model, c.model), (a.ema.module, c.ema.module)):
            sa, sc = ours.state_dict(), theirs.state_dict()
            assert sa.keys() == sc.keys() and all(torch.equal(sa[k], sc[k]) for k in sa), accum
        strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
        assert strip(a.history) == strip(c.history)
        oa, oc = a.opt.state_dict()["state"], c.opt.state_dict()["state"]
        assert all(torch.equal(oa[k]["momentum_buffer"], oc[k]["momentum_buffer"]) for k in oa)
    # the 2-shard run is another run: its checkpoint is refused by a 1-shard trainer
    with pytest.raises(TrainError, match="another run .*shards"):
        Trainer(arch, fmnist, r, tmp_path / "b2", scratch_model(arch, 10, 0), progress=False).run()


def test_augment_and_ema():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    assert torch.equal(augment(x, g, padding=0, hflip=False), x)
    y = augment(x, torch.Generator().manual_seed(1), padding=2, hflip=True)
    assert y.shape == x.shape and y.dtype == torch.uint8
    for i in range(2):      # every output row is a shifted (maybe flipped) window of the zero-padded input
        vals = set(y[i].flatten().tolist()) - {0}
        assert vals <= set(x[i].flatten().tolist())
    assert torch.equal(augment(x, torch.Generator().manual_seed(1), 2), y)        # draws from the generator only
    m = torch.nn.Linear(2, 1)
    ema = EMA(m, decay=0.5)
    with torch.no_grad():
        m.weight.add_(1.0)
    w0 = ema.module.weight.clone()
    ema.update(m, step=100)                                                        # decay min(0.5, 101/110)
    assert torch.allclose(ema.module.weight, 0.5 * w0 + 0.5 * m.weight)


def test_evaluate_top5_only_with_more_than_5_classes(fmnist):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    r = evaluate(net, fmnist.test, limit=200)
    assert r["images"] == 200 and "top5" in r and r["top1"] <= r["top5"]
    few = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    assert "top5" not in evaluate(few, fmnist.test, limit=50)


def test_cli_trains_exports_and_writes_the_card(tmp_path):
    out = tmp_path / "run"
    args = ["--arch", "mobilenet_v3_small@0.35", "--epochs", "1", "--train-images", "256", "--eval-images", "300",
            "--batch-size", "64", "--threads", "1", "--latency-rounds", "1", "--out", str(out), "--no-progress",
            "--formats", ",".join(E.FORMATS)]     # the mobile formats take minutes to lower; test_export_mobile has them
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    arch = zoo.get("mobilenet_v3_small", 0.35)
    assert card["arch"] == arch.to_string() and card["name"] == "mobilenet_v3_small@0.35"
    prof = profile(arch, 224, 10)
    # the analytic count; also the 1000-class count less 990 outputs of the 1024-wide classifier
    assert card["params"] == prof["params"] == profile(arch, 224, 1000)["params"] - 990 * 1025 == 344058
    assert card["macs"] == prof["macs"] and card["macs_at_data_resolution"] == profile(arch, 32, 10)["macs"]
    acc = card["accuracy"]
    assert acc["split"] == "test" and acc["images"] == 300 and 0 <= acc["top1"] <= acc["top5"] <= 1
    import latency_models

    pred = card["latency"]["predicted"]
    assert sorted(pred) == sorted(latency_models.targets())
    for t, v in pred.items():
        assert v["ms"] == pytest.approx(latency_models.load(t).predict(arch, 224), rel=1e-3)
    meas = card["latency"]["measured"]["224"]
    assert set(meas) == {"onnxruntime", "torch"} and all(v["ms"] > 0 for v in meas.values())
    assert card["latency"]["machine"]["cpu"]
    assert set(card["exports"]) == set(E.FORMATS)
    for fmt, v in card["exports"].items():
        assert (out / "export" / v["file"]).is_file() and v["passed"] is True, (fmt, v)
        assert v["max_abs_diff"] is not None and v["max_abs_diff"] <= v.get("tolerance", 0.0)
    tr = card["training"]
    assert tr["init"] == "scratch" and tr["epochs"] == 1 and len(tr["history"]) == 2
    assert tr["recipe"]["optimizer"] == "sgd" and tr["recipe"]["label_smoothing"] == 0.1
    assert tr["recipe"]["warmup_epochs"] == 1.0 and tr["recipe"]["peak_lr"] == pytest.approx(0.1 * 64 / 128)
    assert card["dataset"]["train_images"] == 256 and card["dataset"]["num_classes"] == 10
    md = (out / "card.md").read_text()
    assert arch.to_string() in md and "top-5" in md and "onnxruntime" in md and "pixel-cpu" in md
    # the exported weights are the EMA weights of the checkpoint
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    w = torch.load(out / "export" / "weights.pt", weights_only=True)
    assert all(torch.equal(w[k], ck["ema"][k]) for k in w)
    # running the same command again resumes (nothing left to train) and rewrites the card
    r2 = _cli(*args)
    assert r2.returncode == 0 and "resumed from" in r2.stderr
    assert json.loads((out / "card.json").read_text())["accuracy"]["top1"] == acc["top1"]


def test_init_supernet_inherits_the_weights(fmnist, tmp_path):
    """--init supernet starts from Supernet.extract(arch) (BN statistics re-estimated), in the API and CLI."""
    space = ToySpace()
    tiny = S.SupernetRecipe(envelope_samples=40)
    net = S.build_supernet(space, 10, tiny, seed=0)
    arch = net.largest
    model = supernet_model(net, arch, fmnist, seed=0, calib_batches=0)
    ref = net.extract(arch).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    scratch = scratch_model(arch, 10, 0)
    assert weights_fingerprint(model) != weights_fingerprint(scratch)
    calibrated = supernet_model(net, arch, fmnist, seed=0)
    assert weights_fingerprint(calibrated) == weights_fingerprint(model)        # BN re-estimation: buffers only
    path = tmp_path / "supernet.pt"
    torch.save({"meta": net.meta(), "model": net.state_dict()}, path)
    out = tmp_path / "run"
    r = _cli("--arch", arch.to_string(), "--init", "supernet", "--supernet", str(path), "--epochs", "1",
             "--train-images", "128", "--eval-images", "100", "--batch-size", "64", "--threads", "1",
             "--latency-rounds", "0", "--out", str(out), "--no-progress", "--formats", "onnx")
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["init"] == "supernet" and card["training"]["supernet"]["path"] == str(path)
    assert card["training"]["init_weights_sha1"] == weights_fingerprint(model)
    # inherited weights train with the scratch recipe (a shorter warm-up / lower lr measured worse)
    assert card["training"]["recipe"]["warmup_epochs"] == 1.0
    assert card["training"]["recipe"]["peak_lr"] == pytest.approx(0.1 * 64 / 128)
    assert card["latency"]["measured"] == {} and list(card["exports"]) == ["onnx"]
    assert card["exports"]["onnx"]["passed"] is True
    assert "renorm" not in card["training"]["supernet"]
    # --renorm: the run starts from the inherited weights with fresh-init norms on its BN-followed convs
    from searchers.trainer import renormalize

    rows = renormalize(calibrated)
    r = _cli("--arch", arch.to_string(), "--init", "supernet", "--supernet", str(path), "--renorm", "--epochs", "1",
             "--train-images", "64", "--eval-images", "64", "--batch-size", "64", "--threads", "1",
             "--latency-rounds", "0", "--out", str(tmp_path / "rn"), "--no-progress", "--formats", "yaml")
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((tmp_path / "rn" / "card.json").read_text())
    assert card["training"]["init_weights_sha1"] == weights_fingerprint(calibrated) != weights_fingerprint(model)
    rn = card["training"]["supernet"]["renorm"]
    assert rn["mode"] == "bn" and "se" not in rn
    assert rn["bn"]["convs"] == len(rows) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert rn["bn"]["scale_min"] == pytest.approx(min(x["scale"] for x in rows), abs=1e-4)
    assert "rescaled to a fresh init's norm" in (tmp_path / "rn" / "card.md").read_text()


def test_extracted_subnet_is_the_built_module_with_inherited_weights(fmnist):
    """Supernet.extract (meta-built, weights assigned) gives what arch.build() gives: the same modules and
    settings (BN eps / momentum, dropout, SE), the same trainable parameters in the same optimizer groups;
    its state loads strictly into a fresh build and computes the same logits there."""
    from searchers.trainer import make_optimizer

    space = ToySpace()
    net = S.build_supernet(space, 10, S.SupernetRecipe(envelope_samples=40), seed=0)
    arch = net.largest
    arch = Arch(arch.stem, arch.blocks, type(arch.head)(last_ch=32, act="hswish", dropout=0.2))   # dropout: no weights
    ext, built = net.extract(arch), scratch_model(arch, 10, 0)
    assert repr(ext) == repr(built) and any(isinstance(m, torch.nn.Dropout) for m in ext.modules())
    rows = lambda m: [(n, tuple(p.shape), p.dtype, p.requires_grad, p.is_leaf) for n, p in m.named_parameters()]
    assert rows(ext) == rows(built) and all(r[3] for r in rows(ext))
    bn = lambda m: [(b.eps, b.momentum, b.affine, b.track_running_stats) for b in m.modules()
                    if isinstance(b, torch.nn.BatchNorm2d)]
    assert bn(ext) == bn(built) and len(bn(ext)) > 5
    ptrs = [p.untyped_storage().data_ptr() for p in ext.parameters()]
    assert len(set(ptrs)) == len(ptrs)                                  # no two parameters share memory
    groups = lambda m: [(g["weight_decay"], [tuple(p.shape) for p in g["params"]])
                        for g in make_optimizer(m, TrainRecipe()).param_groups]
    assert groups(ext) == groups(built)
    assert groups(ext)[1][1] and all(len(s) == 1 for s in groups(ext)[1][1])   # no decay: BN and biases (1-D)
    built.load_state_dict(ext.state_dict(), strict=True)
    x, _ = fmnist.val.batch(torch.arange(64))
    ext.eval(), built.eval()
    with torch.no_grad():
        assert torch.equal(ext(x), built(x))
    torch.manual_seed(3)
    a = ext.train()(x)
    torch.manual_seed(3)
    assert torch.equal(a, built.train()(x))                          # dropout included


def test_renormalize_keeps_the_function_and_gives_fresh_init_norms(fmnist):
    """renormalize rescales each BN-followed conv to init_norm (the expected norm of build()'s init) and
    the BN statistics with it: the same logits in eval and train mode; other weights untouched."""
    import copy

    from searchers.trainer import bn_conv_pairs, init_norm, renormalize
    from searchers.training import recalibrate_bn

    for shape in ((64, 32, 3, 3), (96, 1, 5, 5), (40, 96, 1, 1)):        # init_norm vs build()'s kaiming init
        w = torch.empty(shape)
        torch.nn.init.kaiming_normal_(w, mode="fan_out")
        assert float(w.norm()) == pytest.approx(init_norm(w), rel=0.05)
    assert init_norm(torch.empty(64, 32, 3, 3)) == pytest.approx((64 * 32 * 9 * 2 / (64 * 9)) ** 0.5)
    arch = Arch.from_string(SMALL.replace("_hs-head", "_se24h_hs-head"))
    model = scratch_model(arch, 10, 0)
    pairs = bn_conv_pairs(model)
    assert len(pairs) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 11
    with torch.no_grad():                             # norms moved by training: x0.5, x3, x8 by turns
        for i, (conv, _) in enumerate(pairs):
            conv.weight.mul_((0.5, 3.0, 8.0)[i % 3])
    recalibrate_bn(model, fmnist.train, batches=2, batch_size=128)
    x, _ = fmnist.val.batch(torch.arange(128))
    before = copy.deepcopy(model)
    rows = renormalize(model)
    assert len(rows) == 11
    for (conv, _), r in zip(bn_conv_pairs(model), rows):
        assert float(conv.weight.norm()) == pytest.approx(init_norm(conv.weight), rel=1e-5)
        assert r["scale"] == pytest.approx(r["norm_after"] / r["norm_before"], rel=1e-6)
    for i, r in enumerate(rows):                      # back to a fresh init's norm: ~1 / the factor
        assert r["scale"] == pytest.approx(1 / (0.5, 3.0, 8.0)[i % 3], rel=0.1)
    for n, p in model.named_parameters():             # SE convs, classifier, BN affine: as they were
        if not any(p is c.weight for c, _ in bn_conv_pairs(model)):
            assert torch.equal(p, dict(before.named_parameters())[n]), n
    with torch.no_grad():
        a, b = before.eval()(x), model.eval()(x)
        assert (a - b).abs().max() < 1e-2 * a.abs().max()      # BN eps: not scaled with the statistics
        torch.manual_seed(5)
        a = before.train()(x)                           # batch statistics (the head's dropout: same seed)
        torch.manual_seed(5)
        b = model.train()(x)
        assert (a - b).abs().max() < 1e-2 * a.abs().max()      # BN eps: not scaled with the statistics
    # se=True: the SE convs too (fc1's bias with its weight; fc2's bias kept), BN-followed ones as before
    from searchers.trainer import se_convs

    se = se_convs(model)
    assert len(se) == 2 and se[0] is model.blocks[2].se.fc1 and se[1] is model.blocks[2].se.fc2
    with torch.no_grad():
        se[0].weight.mul_(0.25), se[0].bias.fill_(0.5), se[1].weight.mul_(0.5), se[1].bias.fill_(0.1)
    rows = renormalize(model, se=True)
    assert [r["kind"] for r in rows] == ["se", "se"] + ["bn"] * 11
    assert [r["scale"] for r in rows[:2]] == [pytest.approx(4.0, rel=0.1), pytest.approx(2.0, rel=0.1)]
    assert float(se[0].bias[0]) == pytest.approx(0.5 * rows[0]["scale"]) and float(se[1].bias[0]) == pytest.approx(0.1)
    assert all(float(c.weight.norm()) == pytest.approx(init_norm(c.weight), rel=1e-5) for c in se)
    assert all(r["scale"] == pytest.approx(1.0, rel=1e-5) for r in rows[2:])     # already at init norms


def test_perturb_mixes_conv_and_linear_weights_with_the_fresh_init():
    from searchers.trainer import perturb

    arch = Arch.from_string(SMALL)
    inherited, fresh = scratch_model(arch, 10, 1), scratch_model(arch, 10, 0)
    with torch.no_grad():
        for p in inherited.parameters():
            if p.ndim == 1:
                p.add_(0.25)                          # BN / bias values a fresh init does not have
    ref = {k: v.clone() for k, v in inherited.state_dict().items()}
    m = copy.deepcopy(inherited)
    n = perturb(m, fresh, 0.25)
    assert n == sum(p.ndim > 1 for p in m.parameters()) == 12      # 11 convs + the classifier
    for (k, p), q in zip(m.named_parameters(), fresh.parameters()):
        want = 0.75 * ref[k] + 0.25 * q if p.ndim > 1 else ref[k]
        assert torch.allclose(p, want, atol=1e-7), k
    m = copy.deepcopy(inherited)
    perturb(m, fresh, 1.0)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), fresh.parameters()) if p.ndim > 1)
    with pytest.raises(TrainError, match=r"--perturb: got 1.5; allowed: a number in \[0, 1\]"):
        perturb(m, fresh, 1.5)


def test_bad_input_is_one_error_line(tmp_path, capsys):
    # as a user runs it: a separate process, one stderr line, exit 2, no traceback, nothing written
    r = _cli("--arch", "runs/nope/best/arch.yaml", "--out", str(tmp_path / "o"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines == ["error: --arch: file runs/nope/best/arch.yaml does not exist; allowed: "
                                           "an arch .yaml/.json file, a zoo name, name@width or an arch string"]
    assert not (tmp_path / "o").exists()
    # the others through the same cli_entry-wrapped main, in this process (faster)
    for args, needle in (
            (["--arch", "mobilenet_v3_small@0.35", "--dataset", "/nonexistent/data.npz"], "/nonexistent/data.npz"),
            (["--arch", "mobilenet_v2", "--init", "supernet", "--space", "mobilenetv3"], "not in space 'mobilenetv3'"),
            (["--arch", "mobilenet_v2@1.4", "--init", "supernet"], "reduced-scale supernet of 'mobile-unified'"),
            (["--arch", "mobilenet_v3_small", "--supernet", "x.pt"], "only with --init supernet"),
            (["--arch", "mobilenet_v3_small", "--renorm"], "--space/--supernet/--renorm/--perturb: only with --init supernet"),
            (["--arch", "mobilenet_v3_small", "--init", "supernet", "--perturb", "2"],
             "--perturb: got 2.0; allowed: a number in [0, 1]"),
            (["--arch", "mobilenet_v3_small", "--init", "supernet", "--renorm", "se"],
             "--renorm: got 'se'; allowed: bn, all"),
            (["--arch", "mobilenet_v3_small", "--init", "supernet", "--supernet", str(tmp_path / "none.pt")],
             "none.pt does not exist")):
        assert train_main([*args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (args, err)
        assert not (tmp_path / "o").exists()


def test_default_formats_are_the_base_ones_and_every_installed_mobile_one():
    from searchers.train import export_formats

    formats, missing = export_formats("all")
    assert formats[:len(E.FORMATS)] == E.FORMATS and set(formats) | set(missing) == set(E.ALL_FORMATS)
    for f in E.MOBILE_FORMATS:
        try:
            E.require(f)
            assert f in formats
        except E.ExportError:
            assert "pip install 'edgenas[" in missing[f]
            with pytest.raises(E.ExportError, match="pip install"):          # asked for explicitly: refused
                export_formats(f"py,{f}")
    assert export_formats("onnx,yaml") == (("onnx", "yaml"), {})


def test_bad_options_in_process(capsys):
    for args, needle in ((["--arch", "mobilenet_v3_small", "--init", "imagenet"], "--init: got 'imagenet'; allowed: scratch, supernet"),
                         (["--arch", "mobilenet_v3_small", "--optimizer", "adam"], "--optimizer: got 'adam'; allowed: sgd, rmsprop"),
                         (["--arch", "mobilenet_v3_small@0.3"], "allowed: 1.0, 0.75, 0.5, 0.35"),
                         (["--arch", "mobilenet_v3_small", "--epochs", "0"], "--epochs: got 0"),
                         (["--arch", "mobilenet_v3_small", "--formats", "py,coreml"], "--formats: format: got 'coreml'"),
                         (["--arch", "nosuchnet"], "zoo name"),
                         (["--arch", "mobilenet_v3_small", "--accum", "0"], "--accum: got 0; allowed: an integer >= 1"),
                         (["--arch", "mobilenet_v3_small", "--image-size", "224"],
                          "--image-size: only with an image folder; got dataset fashion-mnist"),
                         (["--arch", "mobilenet_v3_small", "--device", "tpu"], "--device: got 'tpu'; allowed: cpu, cuda"),
                         (["--arch", "mobilenet_v3_small", "--batch-size", "127", "--accum", "2"],
                          "--batch-size: got 127, not divisible by 1 process(es) x 2")):
        assert train_main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (args, err)


def test_init_supernet_default_path_trains_and_caches_the_spaces_supernet(fmnist, tmp_path, monkeypatch):
    """Without --supernet the space's cached supernet is used, trained on first use (a tiny recipe here)."""
    import searchers.evaluators.supernet as ES
    from searchers.train import _supernet

    tiny = S.SupernetRecipe(epochs=1, images_per_epoch=64, batch_size=32, envelope_samples=30, n_random=1,
                            calib_batches=1, calib_batch_size=32, eval_images=48)
    monkeypatch.setattr(ES, "default_recipe", lambda space=None, **kw: tiny)
    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path))
    net, info = _supernet(ToySpace(), None, fmnist, 0, False)
    assert info["trained_now"] is True and Path(info["path"]).is_file() and info["space"] == "toy"
    assert Path(info["path"]).is_relative_to(tmp_path)
    again, info2 = _supernet(ToySpace(), None, fmnist, 0, False)
    assert info2["trained_now"] is False and info2["path"] == info["path"]
    arch = net.smallest
    assert weights_fingerprint(supernet_model(again, arch, fmnist, 0)) == weights_fingerprint(net.extract(arch))


def test_more_bad_input_is_one_error_line(tmp_path, capsys):
    """Usage errors without the usage text; a supernet file that is not one; --backend outside torchrun;
    --out that is a file: one line each, before any data or training work."""
    f = tmp_path / "afile"
    f.write_text("keep")
    for args, line in (
            ([], "error: python -m searchers.train: the following arguments are required: --arch"),
            (["--arch", "mobilenet_v3_small", "--epochs", "abc"],
             "error: python -m searchers.train: argument --epochs: invalid int value: 'abc'; allowed: a whole number"),
            (["--arch", "mobilenet_v3_small", "--init", "supernet", "--supernet", "/etc/passwd"],
             "error: --supernet: /etc/passwd is not a readable supernet checkpoint (UnpicklingError); "
             "allowed: a supernet.pt written by 'python -m searchers.supernet train'"),
            (["--arch", "mobilenet_v3_small", "--backend", "mpi"], "error: --backend: got 'mpi'; allowed: nccl, gloo"),
            (["--arch", "mobilenet_v3_small", "--out", str(f)],
             f"error: --out: {f} is a file; allowed: a folder (new or existing)")):
        assert train_main(args) == 2
        assert capsys.readouterr().err.strip().splitlines() == [line], args
    assert f.read_text() == "keep"


def test_given_supernet_is_read_once(fmnist, tmp_path, monkeypatch):
    """--supernet is read before any data work (to check it) and that read is the one trained from: the
    checkpoint is loaded once, not twice."""
    import searchers.supernet as supernet_mod
    from searchers.train import main

    net = S.build_supernet(ToySpace(), 10, S.SupernetRecipe(envelope_samples=40), seed=0)
    path = tmp_path / "supernet.pt"
    torch.save({"meta": net.meta(), "model": net.state_dict()}, path)
    calls = []
    real = supernet_mod.load_supernet
    monkeypatch.setattr(supernet_mod, "load_supernet", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert main(["--arch", net.smallest.to_string(), "--init", "supernet", "--supernet", str(path), "--epochs", "1",
                 "--train-images", "64", "--eval-images", "64", "--batch-size", "64", "--threads", "1",
                 "--latency-rounds", "0", "--out", str(tmp_path / "run"), "--no-progress", "--formats", "yaml"]) == 0
    assert [Path(c) for c in calls] == [path]
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["training"]["supernet"]["path"] == str(path)


def test_finetune_recipe_and_explicit_options_win(fmnist, tmp_path, capsys):
    """--finetune (with --init supernet): lr 0.01, no warm-up, no crop or flip, 1 epoch -- the recipe that kept
    the inherited weights' accuracy (docs/train.md, session 7); an option given explicitly still wins."""
    from searchers.train import FINETUNE, main

    net = S.build_supernet(ToySpace(), 10, S.SupernetRecipe(envelope_samples=40), seed=0)
    path = tmp_path / "supernet.pt"
    torch.save({"meta": net.meta(), "model": net.state_dict()}, path)
    common = ["--arch", net.smallest.to_string(), "--init", "supernet", "--supernet", str(path), "--train-images",
              "64", "--eval-images", "64", "--batch-size", "64", "--threads", "1", "--latency-rounds", "0",
              "--no-progress", "--formats", "yaml"]

    def recipe(out):
        return json.loads((out / "card.json").read_text())["training"]["recipe"]

    assert main([*common, "--finetune", "--out", str(tmp_path / "ft")]) == 0
    r = recipe(tmp_path / "ft")
    assert (r["epochs"], r["peak_lr"], r["warmup_epochs"], r["crop_padding"], r["hflip"]) == (1, 0.01, 0.0, 0, False)
    assert FINETUNE == {"epochs": 1, "lr": 0.01, "warmup_epochs": 0.0, "crop_padding": 0}
    assert main([*common, "--finetune", "--lr", "0.05", "--crop-padding", "2", "--out", str(tmp_path / "ft2")]) == 0
    r = recipe(tmp_path / "ft2")
    assert (r["epochs"], r["peak_lr"], r["warmup_epochs"], r["crop_padding"], r["hflip"]) == (1, 0.05, 0.0, 2, False)
    # without --finetune: the scratch recipe's defaults, --no-hflip still works
    assert main([*common, "--epochs", "1", "--no-hflip", "--out", str(tmp_path / "d")]) == 0
    r = recipe(tmp_path / "d")
    assert (r["peak_lr"], r["warmup_epochs"], r["crop_padding"], r["hflip"]) == (pytest.approx(0.05), 1.0, 4, False)
    capsys.readouterr()
    assert main(["--arch", "mobilenet_v3_small", "--finetune", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == "error: --finetune: got 'scratch'; allowed: only with --init supernet\n"
