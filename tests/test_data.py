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
