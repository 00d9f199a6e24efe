"""The weight-sharing supernet: exact inheritance, exact extraction, BN recalibration, cache, resume, CLI."""
from __future__ import annotations

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
    resumed = S.train_supernet(space, data, TINY, 0, out, progress=False)
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


def test_cli_bad_dataset_fails_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "searchers.supernet", "train", "--space", "mobile-unified",
                        "--dataset", str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: dataset:") and str(tmp_path / "missing") in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_mobile_unified_reduced_scale_caps():
    """mobile-unified is too wide for a full supernet: its default recipe caps width and MACs; the
    widest zoo points (1,792/2,048-channel heads, >600M MACs) lie outside, archs beyond are refused."""
    from search_space.space import load_space

    space = load_space("mobile-unified")
    recipe = S.default_recipe(space)
    assert (recipe.max_channels, recipe.max_macs) == (1280, 600_000_000)
    assert S.default_recipe(ToySpace()).max_macs == 0
    outside = {f"{n}@{w}" for n, w in space.zoo_entries()
               if not S.within_caps(zoo.get(n, w), recipe.max_channels, recipe.max_macs)}
    assert {"mobilenet_v2@1.4", "mobilenet_v2@1.3", "mnasnet_a1@1.4", "mnasnet_b1@1.3", "fbnet_c@1.0",
            "shufflenet_v2@2.0", "mobilenext@1.4"} <= outside
    inside = {f"{n}@{w}" for n, w in space.zoo_entries()} - outside
    assert {"mobilenet_v2@1.0", "mobilenet_v3_large@1.0", "mnasnet_a1@1.0", "proxylessnas_mobile@1.0",
            "shufflenet_v2@1.0", "mobilenext@1.0", "mobilenet_v1@1.0"} <= inside
    net = S.Supernet({}, 10, "mobile-unified", max_channels=1280, max_macs=600_000_000)
    with pytest.raises(SpaceError, match="reduced-scale"):
        net.check(zoo.get("mobilenet_v2", 1.4))
