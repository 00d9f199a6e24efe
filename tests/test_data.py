"""Data sets: the built-in Fashion-MNIST, user npz / image folders, and clean failures."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from search_space.errors import DataError
from searchers import data as D
from searchers.data import load_dataset


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist", seed=0)


def test_fashion_mnist_splits_shapes_and_known_labels(fmnist):
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (55000, 5000, 10000)
    assert fmnist.num_classes == 10 and fmnist.resolution == (32, 32)
    assert fmnist.train.x.dtype == torch.uint8 and fmnist.train.x.shape[1:] == (1, 32, 32)
    # published class balance: 6,000 per class in the 60k training file, 1,000 per class in t10k
    counts = torch.bincount(torch.cat([fmnist.train.y, fmnist.val.y]), minlength=10)
    assert counts.tolist() == [6000] * 10
    assert torch.bincount(fmnist.test.y, minlength=10).tolist() == [1000] * 10
    # the first t10k label is 9 (ankle boot); padding keeps a 2-pixel zero border
    assert int(fmnist.test.y[0]) == 9
    assert fmnist.test.x[:, :, :2].max() == 0 and fmnist.test.x[:, :, :, -2:].max() == 0
    assert fmnist.test.x[:, :, 2:30, 2:30].max() == 255


def test_batches_are_normalised_three_channel(fmnist):
    x, y = fmnist.val.batch(torch.arange(256))
    assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])                       # grey repeated to 3 channels
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2
    seen = torch.cat([yb for _, yb in fmnist.val.batches(1000, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(seen.sort().values, fmnist.val.y.sort().values)
    assert sum(len(yb) for _, yb in fmnist.train.batches(100, limit=250)) == 250


def test_split_is_fixed_by_seed(fmnist):
    again = load_dataset("fashion-mnist", seed=0)
    other = load_dataset("fashion-mnist", seed=1)
    assert torch.equal(again.val.x, fmnist.val.x)
    assert not torch.equal(other.val.y, fmnist.val.y)


def _toy(n=60, size=8, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    x = rng.integers(0, 50, size=shape, dtype=np.uint8)
    x[y == 1] += 100                                            # classes differ in brightness
    x[y == 2] += 200
    return x, y


def test_npz_loader(tmp_path):
    x, y = _toy(channels=3)
    np.savez(tmp_path / "toy.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "toy.npz", seed=0)
    assert ds.num_classes == 3 and ds.resolution == (8, 8)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (48, 6, 6)
    # every image is kept exactly once, channels-last converted to channels-first
    allx = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    assert allx.shape == (60, 3, 8, 8)
    assert sorted(map(bytes, allx.permute(0, 2, 3, 1).numpy())) == sorted(map(bytes, x))
    # fixed test split and float input
    np.savez(tmp_path / "fixed.npz", x=x[:40].astype(np.float32) / 255, y=y[:40], x_test=x[40:], y_test=y[40:])
    ds2 = load_dataset(str(tmp_path / "fixed.npz"))
    assert len(ds2.test) == 20 and len(ds2.train) + len(ds2.val) == 40
    xb, _ = ds2.test.batch()
    assert xb.shape == (20, 3, 8, 8)


def test_image_folder_loader(tmp_path):
    from PIL import Image

    x, y = _toy(n=30, size=10)
    for i, (img, label) in enumerate(zip(x, y)):
        d = tmp_path / "imgs" / f"class_{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    (tmp_path / "imgs" / "class_0" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path / "imgs", seed=3)
    assert ds.classes == ("class_0", "class_1", "class_2") and ds.num_classes == 3
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30 and ds.resolution == (10, 10)
    xb, yb = ds.train.batch()
    assert xb.shape[1] == 3
    # labels follow the folder: class_2 images are the bright ones
    means = ds.train.x.float().mean(dim=(1, 2, 3))
    assert means[ds.train.y == 2].min() > means[ds.train.y == 0].max()


def test_missing_and_malformed_data_fail_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value) and "\n" not in str(e.value)

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        load_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "nox.npz", images=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4))
    with pytest.raises(DataError, match="missing array 'x'"):
        load_dataset(tmp_path / "nox.npz")
    np.savez(tmp_path / "ylen.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="y has shape"):
        load_dataset(tmp_path / "ylen.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path / "empty")

    # the default data set missing: the message names the path and the install command
    D._fashion_mnist_arrays.cache_clear()
    monkeypatch.setenv("EDGENAS_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg and str(tmp_path / "fm") in msg and "\n" not in msg
    # ... and a truncated idx file
    (tmp_path / "fm").mkdir()
    for f in D.FASHION_MNIST_FILES.values():
        with gzip.open(tmp_path / "fm" / f, "wb") as g:
            g.write(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") * 3 + b"\x00" * 5)
    with pytest.raises(DataError, match="truncated|not an idx"):
        load_dataset("fashion-mnist")
    D._fashion_mnist_arrays.cache_clear()


# --------------------------------------------------------------------------------------------
# Full-size image folders, streamed (load_dataset(path, image_size=...))
# --------------------------------------------------------------------------------------------
def _colour_tree(root, per_class=16, val_per_class=4):
    """train/ and val/ with 2 classes: mostly-red and mostly-blue images of varied sizes and noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c, name in enumerate(("red", "blue")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
                a = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
                a[..., 0 if c == 0 else 2] += 150
                Image.fromarray(a).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_random_resized_crop_box_follows_the_imagenet_rule():
    import random

    rng = random.Random(0)
    for w, h in ((500, 375), (64, 64), (1000, 120)):
        for _ in range(200):
            l, t, r, b = D.random_resized_crop_box(w, h, rng)
            assert 0 <= l < r <= w and 0 <= t < b <= h
            cw, ch = r - l, b - t
            if (w, h) != (1000, 120):     # the extreme shape often falls back to the central crop
                assert 0.08 * w * h * 0.9 <= cw * ch <= w * h
                assert 3 / 4 * 0.95 <= cw / ch <= 4 / 3 * 1.05
    # 10 failed tries -> central crop at the nearest allowed ratio (width 1000 > 4/3 x 120)
    class Never:                        # draws that never fit: scale 1 at ratio 4/3 on a very wide image
        def uniform(self, a, b):
            return b

        def randint(self, a, b):
            return a
    assert D.random_resized_crop_box(1000, 120, Never()) == (420, 0, 580, 120)
    # eval: resize short side to 256, central 224 == the central square of side 224/256 of the short side
    assert D.center_crop_box(500, 375, 256, 224) == pytest.approx((85.9375, 23.4375, 414.0625, 351.5625))


def test_eval_transform_matches_resize_then_centre_crop(tmp_path):
    """One-step crop+resize == the two-step torchvision recipe (Resize(256) + CenterCrop(224)) up to
    resampling differences, on a smooth image."""
    from PIL import Image

    yy, xx = np.mgrid[0:375, 0:500]
    a = np.stack([xx * 255 // 500, yy * 255 // 375, (xx + yy) * 255 // 875], -1).astype(np.uint8)
    (tmp_path / "c").mkdir()
    Image.fromarray(a).save(tmp_path / "c" / "x.png")
    ds = D.FolderImages([(str(tmp_path / "c" / "x.png"), 0)], train=False, size=224, resize=256)
    x, _ = ds[0]
    two = Image.fromarray(a).resize((341, 256), Image.BILINEAR)              # short side 256 (500 x 256/375)
    left, top = (341 - 224) // 2, (256 - 224) // 2
    ref = torch.from_numpy(np.asarray(two.crop((left, top, left + 224, top + 224))).copy()).permute(2, 0, 1)
    assert x.shape == (3, 224, 224) and x.dtype == torch.uint8
    assert float((x.float() - ref.float()).abs().mean()) < 2.0


def test_streamed_image_folder_loader_and_sampler(tmp_path):
    _colour_tree(tmp_path)
    data = load_dataset(tmp_path, seed=0, image_size=48, workers=2)
    assert isinstance(data, D.FolderDataset) and data.streaming and data.classes == ("blue", "red")
    assert (len(data.train), len(data.val), len(data.test)) == (29, 3, 8)   # val cut from train; val/ is test
    assert data.resolution == (48, 48) and data.key == f"{tmp_path.name}:29/3/8@48x48"
    x, y = next(data.test.batches(5))
    assert x.shape == (5, 3, 48, 48) and x.dtype == torch.float32 and y.tolist() == [0, 0, 0, 0, 1]
    # blue class: channel 2 high, red class: channel 0 high (after ImageNet normalisation)
    assert float(x[0, 2].mean()) > float(x[0, 0].mean()) and float(x[4, 0].mean()) > float(x[4, 2].mean())
    # training crops: a pure function of (seed, epoch, index): same with 0 or 2 workers, new each epoch
    imgs = data.train.images(train=True)
    imgs.set_epoch(3)
    a = [imgs[i][0] for i in range(4)]
    b = next(iter(D.make_loader(imgs, batch_size=4, workers=2)))[0]
    assert torch.equal(torch.stack(a), b)
    imgs.set_epoch(4)
    assert not torch.equal(imgs[0][0], a[0])
    # the sampler: 2 ranks get disjoint halves of each global batch = the 1-process batch; resume mid-epoch
    one = D.GlobalBatchSampler(29, 8, seed=1)
    r0, r1 = (D.GlobalBatchSampler(29, 8, rank=k, world=2, seed=1) for k in (0, 1))
    for s in (one, r0, r1):
        s.set_epoch(2)
    b1, b0, bb = list(one), list(r0), list(r1)
    assert len(b1) == 3 and all(len(b) == 4 for b in b0 + bb)
    assert [x0 + x1 for x0, x1 in zip(b0, bb)] == b1
    assert len(set(sum(b1, []))) == 24
    r0.set_epoch(2, start_step=1)
    assert list(r0) == b0[1:]
    with pytest.raises(DataError, match="--image-size: only with an image folder"):
        load_dataset("fashion-mnist", image_size=224)


def test_trainer_on_streamed_folder_learns_and_resumes_mid_epoch(tmp_path):
    from search_space.arch import Arch
    from searchers.trainer import Trainer, TrainRecipe, scratch_model

    torch.set_num_threads(1)
    _colour_tree(tmp_path / "data", per_class=24, val_per_class=8)
    data = load_dataset(tmp_path / "data", seed=0, image_size=32, workers=1)
    arch = Arch.from_string("stem_i3_o8_k3_s2_re-mbconv_i8_o16_m32_k3_s2_re-head_l32_h0_re")
    r = TrainRecipe(epochs=3, batch_size=8, lr=0.05, warmup_epochs=0.3, ema_decay=0.5)
    a = Trainer(arch, data, r, tmp_path / "a", scratch_model(arch, 2, 0), progress=False, workers=1)
    a.run()
    assert a.step == 3 * (43 // 8) and a.test()["top1"] >= 0.8            # red vs blue: chance is 0.5
    b = Trainer(arch, data, r, tmp_path / "b", scratch_model(arch, 2, 0), progress=False, workers=1)
    b.run(stop_after_steps=7)                                          # mid epoch 2 (5 steps per epoch)
    torch.manual_seed(99)
    c = Trainer(arch, data, r, tmp_path / "b", scratch_model(arch, 2, 0), progress=False, workers=1)
    assert c.run()["resumed_from"] == 1
    sa, sc = a.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        from searchers.data import DataError

        raise DataError(f"--dataset: /x/img{i}.jpg: got an unreadable image; allowed: JPEG or PNG files")


def test_data_error_from_a_loader_worker_is_one_line():
    # a DataLoader worker re-raises with its traceback in the message; the CLI keeps the original line
    from search_space.errors import one_line
    from searchers.data import DataError

    loader = torch.utils.data.DataLoader(_Unreadable(), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Original Traceback" in str(info.value)
    assert one_line(info.value) == "--dataset: /x/img0.jpg: got an unreadable image; allowed: JPEG or PNG files"


def test_one_class_data_set_is_refused(tmp_path):
    """Every accuracy of a one-class data set is 100%: refused in one line naming the class; two classes load."""
    from PIL import Image

    x, _ = _toy(channels=3)
    np.savez(tmp_path / "one.npz", x=x[:20], y=np.zeros(20, dtype=np.int64))
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "one.npz")
    assert str(e.value) == f"dataset: {tmp_path / 'one.npz'} has 1 class (0); allowed: at least 2 classes"
    d = tmp_path / "imgs" / "cats"
    d.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(x[i]).save(d / f"{i}.png")
    with pytest.raises(DataError, match=r"has 1 class \(cats\); allowed: at least 2 classes$"):
        load_dataset(tmp_path / "imgs")
    np.savez(tmp_path / "two.npz", x=x[:20], y=np.arange(20) % 2)
    assert load_dataset(tmp_path / "two.npz").num_classes == 2
