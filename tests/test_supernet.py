"""The weight-sharing supernet: exact inheritance, exact extraction, BN recalibration, cache, resume, CLI."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_space import zoo
from search_space.errors import SpaceError
from searchers import supernet as S
from searchers.data import load_dataset
from searchers.evaluators.base import EvaluatorError
from searchers.training import recalibrate_bn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy_space import ToySpace, toy_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = S.SupernetRecipe(epochs=2, images_per_epoch=64, batch_size=32, envelope_samples=60, n_random=1,
                        checkpoint_every=1, calib_batches=1, calib_batch_size=32, eval_images=48)


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    space = ToySpace()
    return space, S.build_supernet(space, 10, TINY, seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_dataset(toy_npz(tmp_path_factory.mktemp("d") / "toy.npz"))


def test_inherited_weights_are_the_supernets_slices(toy):
    space, net = toy
    rng = random.Random(3)
    checked_crop = False
    for _ in range(5):
        arch = space.sample(rng)
        sub = net.extract(arch).state_dict()
        pos = S.position_keys(arch)
        for local, t in sub.items():
            full = net.tensor(S.shared_name(local, pos, t.ndim))
            if t.ndim == 4:
                off = (full.shape[2] - t.shape[2]) // 2
                want = full[: t.shape[0], : t.shape[1], off:off + t.shape[2], off:off + t.shape[3]]
                checked_crop |= off > 0
            else:
                want = full[tuple(slice(0, n) for n in t.shape)]
            assert torch.equal(t, want), local
    assert checked_crop                                   # a k3 kernel was cut from the k5 centre


def test_extracted_subnet_matches_supernet_path(toy):
    space, net = toy
    rng = random.Random(5)
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    for _ in range(4):
        arch = space.sample(rng)
        with torch.no_grad():
            a = net(x, arch)
            b = net.extract(arch).eval()(x)
        assert a.shape == (4, 10) and torch.allclose(a, b, atol=1e-5)


def test_every_block_type_of_the_zoo_runs_in_one_supernet():
    """A supernet over real zoo networks of all four block families (mbconv+SE, dwsep, sandglass,
    shufflev2): the supernet path equals the extracted module, which equals arch.build()."""
    archs = [zoo.get("mobilenet_v1", 0.25), zoo.get("mobilenet_v3_small", 0.35), zoo.get("shufflenet_v2", 0.5),
             zoo.get("mobilenext", 0.5), zoo.get("mnasnet_a1", 0.35)]
    net = S.Supernet(S.envelope(archs, 10), 10, "zoo")
    assert {k.split("/")[0].rsplit(".", 1)[1] for k in net.shapes if k.startswith("o")} == \
        {"mbconv", "dwsep", "sandglass", "shufflev2"}
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    for arch in archs:
        built = arch.build(num_classes=10)
        sub = net.extract(arch)
        assert [(k, v.shape) for k, v in sub.state_dict().items()] == \
               [(k, v.shape) for k, v in built.state_dict().items()]
        assert [type(m) for m in sub.modules()] == [type(m) for m in built.modules()]
        assert not any(t.is_meta for t in sub.state_dict().values())
        with torch.no_grad():
            assert torch.allclose(net(x, arch), sub.eval()(x), atol=1e-5)


def test_arch_outside_the_envelope_is_refused(toy):
    space, net = toy
    with pytest.raises(SpaceError, match="supernet"):
        net.check(zoo.get("mobilenet_v2", 1.0))


def test_bn_recalibration_changes_running_stats(toy, data):
    space, net = toy
    arch = space.sample(random.Random(0))
    model = net.extract(arch)
    before = model.blocks[0].dw.bn.running_mean.clone()
    assert torch.equal(before, torch.zeros_like(before))     # untrained supernet: initial stats
    recalibrate_bn(model, data.train, batches=2, batch_size=32)
    after = model.blocks[0].dw.bn.running_mean
    assert not torch.allclose(before, after)
    assert model.blocks[0].dw.bn.momentum == 0.1               # restored


def test_training_is_cached_and_resumes_exactly(tmp_path, data, monkeypatch):
    space = ToySpace()
    calls = S.TRAIN_CALLS["count"]
    net, trained = S.get_supernet(space, data, TINY, seed=0, root=tmp_path, progress=False)
    assert trained and S.TRAIN_CALLS["count"] == calls + 1
    again, trained2 = S.get_supernet(space, data, TINY, seed=0, root=tmp_path, progress=False)
    assert not trained2 and S.TRAIN_CALLS["count"] == calls + 1        # cache hit: no retraining
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    d = S.supernet_dir(space, data, TINY, 0, tmp_path)
    assert (d / "supernet.pt").is_file() and (d / "info.json").is_file()
    # a different recipe is a different cache entry
    assert S.supernet_dir(space, data, TINY.__class__(**{**TINY.__dict__, "lr": 0.02}), 0, tmp_path) != d

    # interrupt a fresh run after 3 steps, resume it: same weights as the uninterrupted run
    out = tmp_path / "interrupted"
    real_sample = space.sample
    n = {"calls": 0}

    def flaky(rng):
        n["calls"] += 1
        # the envelope takes envelope_samples draws, then each step one (n_random=1): fail in step 4 of 4
        if n["calls"] == TINY.envelope_samples + 4:
            raise KeyboardInterrupt
        return real_sample(rng)

    monkeypatch.setattr(space, "sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.train_supernet(space, data, TINY, 0, out, progress=False)
    monkeypatch.setattr(space, "sample", real_sample)
    assert (out / "checkpoint.pt").is_file() and not (out / "supernet.pt").exists()
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["seconds"] > 0                                                     # the interrupted segment's
    ck["seconds"] = 1e6                     # a marker: the resumed run must carry it, not only its own segment
    torch.save(ck, out / "checkpoint.pt")
    resumed = S.train_supernet(space, data, TINY, 0, out, progress=False)
    # the recorded training time counts the interrupted segment too (not only the resumed one)
    assert 1e6 < torch.load(out / "supernet.pt", weights_only=False)["train_seconds"] < 1e6 + 600
    for k, v in net.state_dict().items():
        assert torch.allclose(v.float(), resumed.state_dict()[k].float(), atol=1e-6), k


def test_supernet_learns_and_scores(data, tmp_path):
    from searchers.evaluators import get_evaluator

    recipe = S.SupernetRecipe(epochs=3, images_per_epoch=192, batch_size=32, envelope_samples=60, n_random=1,
                              calib_batches=2, calib_batch_size=48, eval_images=48, lr=0.05)
    ev = get_evaluator("supernet", space=ToySpace(), dataset=data, recipe=recipe, cache_root=tmp_path,
                       progress=False)
    ev.prepare()
    big = ev.evaluate(ev.supernet.largest)
    assert 0.0 <= big <= 1.0 and ev.last_cost_s > 0
    assert big > 0.6                                          # three easy classes: chance is 1/3
    sub = ev.extract(ev.supernet.smallest)
    assert sum(p.numel() for p in sub.parameters()) < ev.supernet.num_params()
    # the device option: an explicit CPU scores the same; a device this machine lacks is one clear error
    same = get_evaluator("supernet", space=ToySpace(), dataset=data, recipe=recipe, cache_root=tmp_path,
                         progress=False, device="cpu")
    assert same.evaluate(ev.supernet.largest) == big
    if not torch.cuda.is_available():
        with pytest.raises(EvaluatorError, match=r"device: got 'cuda'; allowed: cpu, auto"):
            get_evaluator("supernet", space=ToySpace(), dataset=data, recipe=recipe, device="cuda")
    with pytest.raises(EvaluatorError, match=r"device: got 'tpu'; allowed: cpu, cuda, cuda:N, auto"):
        get_evaluator("supernet", space=ToySpace(), dataset=data, recipe=recipe, device="tpu")


def test_cli_bad_dataset_fails_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "searchers.supernet", "train", "--space", "mobile-unified",
                        "--dataset", str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: dataset:") and str(tmp_path / "missing") in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_mobile_unified_scope():
    """mobile-unified is too wide for one supernet here: its default recipe covers a scope, itself a
    space whose every arch is an arch of mobile-unified; the supernet samples from it and refuses
    archs outside it with the field and the allowed values."""
    from search_space.space import load_space

    space = load_space("mobile-unified")
    recipe = S.default_recipe(space)
    assert recipe.scope == "mobile-unified/mbconv" and S.default_recipe(ToySpace()).scope == ""
    scope = S.scope_space(recipe.scope)
    rng = random.Random(0)
    for _ in range(15):
        a = scope.sample(rng)
        assert space.contains(a) and all(b.type == "mbconv" for b in a.blocks)
    cards = scope.cardinalities()
    big, small = scope.decode([c - 1 for c in cards]), scope.decode([0] * len(cards))
    assert space.contains(big) and space.contains(small)
    # the recipe's caps are implied by the scope (a cheap first test): its largest arch keeps them
    assert S.within_caps(big, recipe.max_channels, recipe.max_macs)
    assert not S.within_caps(zoo.get("mobilenet_v2", 1.4), recipe.max_channels, recipe.max_macs)
    net = S.Supernet(S.envelope([big, small], 10), 10, "mobile-unified", big, small, scope=recipe.scope)
    a = net.sample(space, random.Random(1))
    assert scope.contains(a) and net.fits(a) and net.fits(big)
    assert net.covered_space(space) is scope
    b = scope.mutate(a, random.Random(2))
    assert b != a and net.fits(b) and space.contains(b)
    v2 = zoo.get("mobilenet_v2", 1.0)
    assert space.contains(v2) and not net.fits(v2)
    with pytest.raises(SpaceError, match=r"outside the supernet's scope .*stem.out_ch: got 32; allowed: 16, 24"):
        net.check(v2)
    with pytest.raises(S.SupernetError, match="recipe.scope: got 'nope'"):
        S.SupernetRecipe(scope="nope")


def test_sandwich_loss_is_the_sum_of_the_subnets_losses(toy):
    """One forward of all subnets of a step: the summed loss, and its gradient, are those of the
    subnets run one by one (the largest on the labels, the others on its soft labels)."""
    space, net = toy
    net.train()
    archs = S.sandwich_archs(net, space, random.Random(4), n_random=2)
    assert len(archs) == 4 and archs[:2] == [net.largest, net.smallest]
    assert archs == S.sandwich_archs(net, space, random.Random(4), n_random=2)    # same rng, same archs
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    net.zero_grad(set_to_none=True)
    total = S.sandwich_loss(net, x, y, archs, TINY)
    total.backward()
    g_sum = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    big = net(x, archs[0])
    parts = [torch.nn.functional.cross_entropy(big, y)]
    soft = big.detach().softmax(1)
    parts += [torch.sum(-soft * torch.log_softmax(net(x, a), 1), 1).mean() for a in archs[1:]]
    sum(parts).backward()
    assert torch.allclose(total, sum(parts).detach(), atol=1e-5)
    assert net.last_losses == pytest.approx([float(p) for p in parts], abs=1e-5)
    for k, p in net.named_parameters():
        if p.grad is not None:
            assert torch.allclose(g_sum[k], p.grad, atol=1e-5), k
    net.zero_grad(set_to_none=True)


def test_fast_evaluation_matches_the_plain_path(toy, data):
    """evaluate_subnet (images cached, inference mode) gives the accuracy of extract +
    recalibrate_bn + accuracy on the same batches."""
    from searchers.training import accuracy

    space, net = toy
    recipe = S.SupernetRecipe(calib_batches=2, calib_batch_size=32, eval_images=100)
    for a in (space.sample(random.Random(9)), net.largest):
        fast = S.evaluate_subnet(net, a, data, recipe, seed=3)
        model = net.extract(a)
        recalibrate_bn(model, data.train, batches=2, batch_size=32, seed=3)
        assert fast == accuracy(model, data.val, limit=100)


def test_bn_folding_keeps_the_function_and_the_scores(toy, data):
    """``fold_bn`` after calibration: no BatchNorm left after a conv, the same logits within float
    rounding, and ``evaluate_subnet`` gives the same per-image verdicts folded or not (a trained
    supernet's real archs: benchmarks/predictor.py --cost counts the verdicts that differ)."""
    from search_space import modules as M

    space, net = toy
    recipe = S.SupernetRecipe(calib_batches=2, calib_batch_size=32, eval_images=100)
    xb, _ = next(iter(data.val.batches(40)))
    for a in [space.sample(random.Random(s)) for s in range(4)] + [net.largest]:
        model = net.extract(a)
        recalibrate_bn(model, data.train, batches=2, batch_size=32, seed=1)
        model.eval()
        with torch.no_grad():
            want = model(xb)
            folded = S.fold_bn(model)
            got = folded(xb)
        convs = [m for m in folded.modules() if isinstance(m, (M.ConvBNAct, M.Stem, M.Head)) and m.conv is not None]
        assert convs and all(isinstance(m.bn, torch.nn.Identity) and m.conv.bias is not None for m in convs)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
        on = S.evaluate_subnet_correct(net, a, data, recipe, seed=3, fold=True)
        off = S.evaluate_subnet_correct(net, a, data, recipe, seed=3, fold=False)
        assert len(on) == min(100, len(data.val)) == 24 and torch.equal(on, off)
        assert S.evaluate_subnet(net, a, data, recipe, seed=3) == int(on.sum()) / len(on)
    # a module in training mode is left alone (its BN still normalises by batch statistics)
    model = net.extract(net.largest).train()
    S.fold_bn(model)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_evaluation_settings_do_not_change_the_supernets_key(data):
    """Scored images and calibration batches are evaluation settings: the cached supernet is the same."""
    from dataclasses import replace

    space = ToySpace()
    base = S.supernet_key(space, data, TINY, 0)
    for change in ({"eval_images": 5000}, {"calib_batches": 8}, {"calib_batch_size": 256}):
        assert S.supernet_key(space, data, replace(TINY, **change), 0) == base
    assert S.supernet_key(space, data, replace(TINY, lr=0.1), 0) != base


OUTSIDE = ("stem_i3_o16_k3_s2_hs-mbconv_i16_o16_m16_k3_s2_se8h_re-mbconv_i16_o24_m72_k3_s2_re-mbconv_i24_o24_m88_k3_s1"
           "_re_skip-mbconv_i24_o40_m96_k5_s2_se24h_hs-head_l576_h1024_hs_d0.2")


def test_cli_eval_refuses_an_arch_outside_the_scope_and_bad_options(tmp_path, capsys):
    """``supernet eval`` checks each arch as the evaluator does (an arch outside the supernet's scope is one
    line, exit 2, nothing scored); --threads -1, a bad recipe flag, an unknown command: one line each."""
    from search_space.space import load_space

    npz = toy_npz(tmp_path / "toy.npz")
    data, space = load_dataset(npz), load_space("mobile-unified")
    recipe = S.default_recipe(space)
    net = S.build_supernet(space, data.num_classes, recipe, 0, data.resolution)  # untrained: scores are not the point
    d = S.supernet_dir(space, data, recipe, 0, tmp_path / "cache")
    d.mkdir(parents=True)
    torch.save({"meta": net.meta(), "model": net.state_dict()}, d / "supernet.pt")
    common = ["--space", "mobile-unified", "--dataset", str(npz), "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert S.main(["eval", *common, "--arch", net.smallest.to_string(), "--arch", OUTSIDE]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "error: --arch: the arch is outside the supernet's scope 'mobile-unified/mbconv' of space 'mobile-unified' "
        "(arch.blocks[0].stride: got 2; allowed: 1 (stages[1])); allowed: " + S.SCOPE_NOTES[recipe.scope]]
    assert S.main(["eval", *common, "--arch", net.smallest.to_string()]) == 0
    score = capsys.readouterr().out.split("\t")
    assert 0.0 <= float(score[0]) <= 1.0 and score[-1].strip() == net.smallest.to_string()
    for args, line in ((["train", "--threads", "-1"], "error: --threads: got -1; allowed: an integer >= 0 (0: torch's default)"),
                       (["train", *common, "--epochs", "0"], "error: --epochs: got 0; allowed: a positive integer"),
                       (["fit"], "error: python -m searchers.supernet: argument cmd: invalid choice: 'fit' "
                                 "(choose from 'train', 'eval', 'info')"),
                       (["eval", *common, "--cache-dir", str(tmp_path / "empty"), "--arch", OUTSIDE],
                        f"error: --arch: no trained supernet in {S.supernet_dir(space, data, recipe, 0, tmp_path / 'empty')}; "
                        "allowed: after 'python -m searchers.supernet train' with the same options")):
        assert S.main(args) == 2
        assert capsys.readouterr().err.splitlines() == [line], args


def test_load_supernet_reads_train_seconds_or_refuses_the_file(toy, tmp_path):
    """load_supernet keeps the checkpoint's training time; a checkpoint whose fields are not what
    'supernet train' writes is one line naming the option and the file (not a supernet with a bad field)."""
    _, net = toy
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save({"meta": net.meta(), "model": net.state_dict(), "train_seconds": 12.5}, good)
    torch.save({"meta": net.meta(), "model": net.state_dict(), "train_seconds": "soon"}, bad)
    assert S.load_supernet(good, "--supernet").train_seconds == 12.5
    with pytest.raises(S.SupernetError, match=rf"^--supernet: {bad} is not a readable supernet checkpoint \(ValueError\); "
                                              r"allowed: a supernet.pt written by 'python -m searchers.supernet train'$"):
        S.load_supernet(bad, "--supernet")


def test_a_recipe_asking_more_images_than_the_split_says_so_and_counts_real_steps(tmp_path, data, monkeypatch,
                                                                                  capsys):
    # the toy split holds 192 training images; the recipe asks 300 per epoch in batches of 50: 6 scheduled
    # steps per epoch, of which ceil(192 / 50) = 4 get images (50, 50, 50, 42) and 2 are skipped
    n_train = len(data.train)
    assert n_train == 192
    recipe = S.SupernetRecipe(epochs=2, images_per_epoch=300, batch_size=50, envelope_samples=60, n_random=1,
                              checkpoint_every=1, calib_batches=1, calib_batch_size=32, eval_images=48)
    assert recipe.total_steps == 12
    assert S.real_steps_per_epoch(recipe, n_train) == 4
    assert [S.real_steps_done(k, recipe, n_train) for k in range(13)] == [0, 1, 2, 3, 4, 4, 4, 5, 6, 7, 8, 8, 8]
    batches = []
    real_loss = S.sandwich_loss

    def counting(net, images, labels, archs, rec):          # called once per step that trains
        batches.append(len(images))
        return real_loss(net, images, labels, archs, rec)

    monkeypatch.setattr(S, "sandwich_loss", counting)
    lines = []
    S.train_supernet(ToySpace(), data, recipe, 0, tmp_path / "a", progress=True, log=lines.append)
    assert batches == [50, 50, 50, 42] * 2
    info = json.loads((tmp_path / "a" / "info.json").read_text())
    assert (info["steps"], info["real_steps"], info["images_seen"]) == (12, 8, 384)
    said = [m for m in lines if "exceeds" in m]
    assert said == ["supernet: recipe.images_per_epoch 300 exceeds the training split (192 images): each epoch "
                    "trains 4 of its 6 scheduled steps (8 of 12 in all, 384 images seen; the learning-rate "
                    "schedule counts all 12)"]
    assert lines.index(said[0]) == 0                                  # said at the start, before any step
    err = capsys.readouterr().err
    assert "8/8" in err and "/12" not in err                         # the bar counts the real steps only
    # without a log the line goes to stderr (through the bar when there is one); a recipe within the
    # split says nothing and records every step as real
    S.train_supernet(ToySpace(), data, recipe, 0, tmp_path / "b", progress=False)
    assert capsys.readouterr().err.strip().splitlines() == [said[0]]
    batches.clear()
    within = S.SupernetRecipe(**{**recipe.__dict__, "images_per_epoch": 100, "epochs": 1})
    lines.clear()
    S.train_supernet(ToySpace(), data, within, 0, tmp_path / "c", progress=False, log=lines.append)
    assert batches == [50, 50] and not [m for m in lines if "exceeds" in m]
    info = json.loads((tmp_path / "c" / "info.json").read_text())
    assert (info["steps"], info["real_steps"], info["images_seen"]) == (2, 2, 100)


def test_the_ddp_trainer_says_the_same_and_records_real_steps(tmp_path, data, capsys):
    # train_supernet_ddp (one process) skips the same steps: the same line, a bar of real steps, the same info.json
    from searchers.distributed import SINGLE, train_supernet_ddp

    recipe = S.SupernetRecipe(epochs=2, images_per_epoch=300, batch_size=50, envelope_samples=60, n_random=1,
                              checkpoint_every=100, calib_batches=1, calib_batch_size=32, eval_images=48)
    train_supernet_ddp(ToySpace(), data, recipe, seed=0, out_dir=tmp_path / "d", d=SINGLE, accum=1, resume=False,
                       progress=True)
    info = json.loads((tmp_path / "d" / "info.json").read_text())
    assert (info["steps"], info["real_steps"], info["images_seen"]) == (12, 8, 384)
    err = capsys.readouterr().err
    assert S.overshoot_message(recipe, len(data.train)) in err.splitlines()
    assert "8/8" in err and "/12" not in err


def test_real_steps_under_ddp_skip_a_last_batch_smaller_than_world_x_accum(data, tmp_path, capsys):
    # 160 images in batches of 50: 50, 50, 50, 10; under 1 process x 25 accumulation steps the batch of 10 is
    # skipped (DDP needs batch_size % (world x accum) == 0: 25 divides 50)
    from searchers.distributed import SINGLE, train_supernet_ddp

    recipe = S.SupernetRecipe(epochs=2, images_per_epoch=160, batch_size=50, envelope_samples=60, n_random=1,
                              checkpoint_every=100, calib_batches=1, calib_batch_size=32, eval_images=48)
    n = len(data.train)
    assert [S.real_steps_per_epoch(recipe, n, m) for m in (1, 10, 25)] == [4, 4, 3]
    assert [S.images_seen(recipe, n, m) for m in (1, 25)] == [320, 300]
    assert S.overshoot_message(recipe, n) is None and S.overshoot_message(recipe, n, 10) is None
    said = ("supernet: each epoch's last batch (10 images) holds fewer than world x accumulation = 25: each epoch "
            "trains 3 of its 4 scheduled steps (6 of 8 in all, 300 images seen; the learning-rate schedule counts all 8)")
    assert S.overshoot_message(recipe, n, 25) == said
    train_supernet_ddp(ToySpace(), data, recipe, seed=0, out_dir=tmp_path / "e", d=SINGLE, accum=25, resume=False,
                       progress=True)
    info = json.loads((tmp_path / "e" / "info.json").read_text())
    assert (info["steps"], info["real_steps"], info["images_seen"]) == (8, 6, 300)
    err = capsys.readouterr().err
    assert said in err.splitlines() and "6/6" in err and "/8" not in err
    # more images asked than the split holds but no step lost (200 of 192 at batch 100: 2 scheduled, 2 real): said
    over = S.SupernetRecipe(epochs=1, images_per_epoch=200, batch_size=100, envelope_samples=60, n_random=1)
    assert S.real_steps_per_epoch(over, n) == 2 == over.steps_per_epoch
    assert S.overshoot_message(over, n).startswith("supernet: recipe.images_per_epoch 200 exceeds the training split")


def test_mobile_unified_default_recipe_trains_860_of_its_1000_steps():
    from searchers.data import VAL_SIZE_FMNIST

    recipe = S.default_recipe("mobile-unified")
    n_train = 60000 - VAL_SIZE_FMNIST                # Fashion-MNIST's training split
    assert (recipe.total_steps, n_train) == (1000, 55000)
    assert S.real_steps_done(recipe.total_steps, recipe, n_train) == 860
    assert S.real_steps_done(recipe.total_steps, S.SupernetRecipe(), n_train) == S.SupernetRecipe().total_steps


def test_the_ranking_benchmark_records_a_checkpoints_own_recipe(toy, data, tmp_path, monkeypatch):
    # benchmarks/evaluators_ranking.py --checkpoint: the scores file names the checkpoint's recipe and training
    # time, not the evaluator's default recipe (session 8's files said 1 epoch for a 3-epoch supernet)
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluators_ranking", ROOT / "benchmarks" / "evaluators_ranking.py")
    er = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(er)
    monkeypatch.setattr(er, "DATA_DIR", tmp_path)
    space = toy[0]
    net = S.build_supernet(space, data.num_classes, TINY, seed=0)
    recipe = {**TINY.__dict__, "epochs": 3}
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"meta": net.meta(), "model": net.state_dict(), "step": 7, "recipe": recipe, "seconds": 12.5}, ckpt)
    arch = space.sample(random.Random(0))
    info = er.run_supernet(space, [arch], data, 0, lambda *a: None, checkpoint=str(ckpt), tag="t")
    assert (info["checkpoint_step"], info["recipe"]["epochs"], info["train_seconds"]) == (7, 3, 12.5)
    assert json.loads((tmp_path / f"supernet_scores_{space.name}_t.json").read_text())["recipe"] == recipe
