"""Data sets for the accuracy evaluators: the built-in Fashion-MNIST and user data.

``load_dataset(name_or_path, seed=0)`` returns a ``Dataset`` with ``train``, ``val`` and ``test``
splits, each a ``Split`` holding the whole split in memory as a uint8 tensor (N, C, H, W) and int64
labels; batches are cut by an index permutation and turned into normalised float tensors only
when asked for, which is the fast way to feed small CNNs on a CPU.

Built-in data set ``fashion-mnist``
    Read from the idx ``.gz`` files of the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist/``, or ``$EDGENAS_FASHION_MNIST_DIR``) with numpy and gzip.
    The 60,000 training images are split by ``seed`` into 55,000 train and 5,000 validation images;
    the 10,000 ``t10k`` images are the test split.  Images are zero-padded from 28x28 to 32x32
    (two pixels each side), the resolution the evaluators train and score at.

    One documented choice: the single grey channel is repeated to three channels, so that every
    network of the search space keeps its 3-channel stem unchanged (the same Arch is trained here
    and priced by the latency model).  The repeat is done per batch (``expand``), so memory holds
    one channel.

Full-size data (``--dataset PATH --image-size 224``)
    An image folder in the ImageNet layout (``PATH/train/<class>/...``, ``PATH/val/<class>/...``) is
    streamed from disk (``load_image_folder``): Pillow decodes in DataLoader worker processes, training
    images get the standard ImageNet augmentation (RandomResizedCrop to 224 with scale 0.08-1 and ratio
    3/4-4/3, random horizontal flip), evaluation images are resized to 256 (short side) and centre-cropped
    to 224; batches travel as uint8 (pinned memory on CUDA) and are normalised with the ImageNet mean / std
    on the device.  ``GlobalBatchSampler`` hands each process its part of every global batch.  (Pillow's
    ``resize(box=...)`` does crop + resize in one resampling; torchvision is not needed.)

User data (``--dataset PATH``)
    * a folder of class sub-folders (``PATH/<class>/<image>``), read with Pillow; if ``PATH`` holds
      ``train/`` and ``test/`` (and optionally ``val/``) folders of class sub-folders, those are the
      splits, otherwise the images are split by ``seed`` (80% train, 10% val, 10% test);
    * an ``.npz`` with ``x`` (N, H, W), (N, H, W, C) or (N, C, H, W) images (uint8, or floats in
      [0, 1]) and ``y`` (N,) integer labels; optional ``x_val``/``y_val`` and ``x_test``/``y_test``
      arrays give fixed splits, otherwise the split is by ``seed`` as for folders.
    Images of different sizes are resized to the most common size; one-channel data is repeated
    to three channels as for Fashion-MNIST.

Resolution: accuracy is measured at the data set's own resolution (32x32 for Fashion-MNIST)
while latency is predicted at the deployment resolution (224x224).  Like the proxy tasks of
MnasNet (a 5-epoch ImageNet proxy) and OFA (accuracy predictors trained on a subset), the small-input
accuracy ranks architectures; it is not their ImageNet accuracy.  The networks are not changed for
the small input (no stride adaptation): at 32x32 the last stages of a 224-designed network run at 1x1.

A missing or malformed data set raises ``DataError`` with a one-line message naming the path.
"""
from __future__ import annotations

import functools
import gzip
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from search_space.errors import DataError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte.gz", "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz", "test_y": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")
BUILTIN = ("fashion-mnist",)
_ALIASES = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "fmnist": "fashion-mnist"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VAL_SIZE_FMNIST = 5000


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------
@dataclass
class Split:
    """One split in memory: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    channels: int = 3          # channels handed to the network (C is repeated when 1 < channels)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batch(self, idx: torch.Tensor | slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as normalised float32 (B, channels, H, W) and their labels."""
        x = self.x if idx is None else self.x[idx]
        y = self.y if idx is None else self.y[idx]
        xf = x.float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        xf = (xf - mean) / std
        if xf.shape[1] != self.channels:
            xf = xf.expand(-1, self.channels, -1, -1).contiguous()
        return xf, y

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches over the split (or over its first ``limit`` images of the permutation)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if limit is not None:
            order = order[: min(limit, n)]
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])

    def subset(self, n: int, seed: int = 0) -> "Split":
        """A fixed random subset of ``n`` images (all if ``n`` >= len)."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return Split(self.x[idx], self.y[idx], self.mean, self.std, self.channels)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    classes: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    @property
    def key(self) -> str:
        """Identifies the data and its split in cache keys."""
        return f"{self.name}:{len(self.train)}/{len(self.val)}/{len(self.test)}@{self.resolution[0]}x{self.resolution[1]}"

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
                f"classes={self.num_classes}, resolution={self.resolution})")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def dataset_names() -> list[str]:
    return list(BUILTIN)


def load_dataset(name_or_path: str | os.PathLike = "fashion-mnist", seed: int = 0, image_size: int | None = None,
                 workers: int = 4):
    """The data set ``name_or_path``: a built-in name, an image-folder tree or an ``.npz`` file (in
    memory); with ``image_size`` an image folder streamed from disk at that size with the ImageNet
    augmentation (``load_image_folder``, a ``FolderDataset``)."""
    if name_or_path is None:
        name_or_path = "fashion-mnist"
    text = str(name_or_path)
    if image_size is not None:
        if text.lower() in _ALIASES or not Path(text).expanduser().is_dir():
            raise DataError(f"--image-size: only with an image folder; got dataset {text}; allowed: a folder "
                            "root/train/<class>/..., root/val/<class>/... (or root/<class>/...)")
        return load_image_folder(text, image_size, seed=seed, workers=workers)
    if text.lower() in _ALIASES:
        return _fashion_mnist(os.environ.get("EDGENAS_FASHION_MNIST_DIR", FASHION_MNIST_DIR), seed)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"dataset: {path} does not exist; allowed: {', '.join(BUILTIN)}, "
                        "a folder of class sub-folders, or an .npz file with x and y")
    if path.is_dir():
        return _image_folder(path.resolve(), seed)
    if path.suffix.lower() == ".npz":
        return _npz(path.resolve(), seed)
    raise DataError(f"dataset: {path} is neither a folder nor an .npz file; allowed: {', '.join(BUILTIN)}, "
                    "a folder of class sub-folders, or an .npz file with x and y")


# --------------------------------------------------------------------------------------------
# Fashion-MNIST (idx gz)
# --------------------------------------------------------------------------------------------
def _read_idx(path: Path, ndim: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"dataset fashion-mnist: {path} not found; install it with: {FASHION_MNIST_INSTALL}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"dataset fashion-mnist: {path} is not a readable gzip file ({exc}); "
                        f"reinstall it with: {FASHION_MNIST_INSTALL}") from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic != 0x0800 + ndim:
        raise DataError(f"dataset fashion-mnist: {path} is not an idx file of {ndim} dimension(s) "
                        f"(magic {magic:#x}); reinstall it with: {FASHION_MNIST_INSTALL}")
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(raw) != header + count:
        raise DataError(f"dataset fashion-mnist: {path} is truncated ({len(raw) - header} of {count} bytes); "
                        f"reinstall it with: {FASHION_MNIST_INSTALL}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


@functools.lru_cache(maxsize=4)
def _fashion_mnist_arrays(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"dataset fashion-mnist: {r} not found; install it with: {FASHION_MNIST_INSTALL}")
    tx = _read_idx(r / FASHION_MNIST_FILES["train_x"], 3)
    ty = _read_idx(r / FASHION_MNIST_FILES["train_y"], 1)
    vx = _read_idx(r / FASHION_MNIST_FILES["test_x"], 3)
    vy = _read_idx(r / FASHION_MNIST_FILES["test_y"], 1)
    if len(tx) != len(ty) or len(vx) != len(vy):
        raise DataError(f"dataset fashion-mnist: {r}: image and label counts differ; "
                        f"reinstall it with: {FASHION_MNIST_INSTALL}")
    return tx, ty, vx, vy


def _pad32(x: np.ndarray) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 32, 32) uint8, zero padding 2 pixels each side."""
    t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
    return torch.nn.functional.pad(t, (2, 2, 2, 2)).contiguous()


def _fashion_mnist(root: str, seed: int) -> Dataset:
    tx, ty, vx, vy = _fashion_mnist_arrays(str(root))
    x, y = _pad32(tx), torch.from_numpy(ty.astype(np.int64))
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(y), generator=g)
    val_idx, train_idx = perm[:VAL_SIZE_FMNIST].sort().values, perm[VAL_SIZE_FMNIST:].sort().values
    mean, std = _stats(x[train_idx])
    mk = lambda xx, yy: Split(xx.contiguous(), yy.contiguous(), mean, std, 3)  # noqa: E731
    return Dataset("fashion-mnist", mk(x[train_idx], y[train_idx]), mk(x[val_idx], y[val_idx]),
                   mk(_pad32(vx), torch.from_numpy(vy.astype(np.int64))), 10, FASHION_MNIST_CLASSES,
                   source=str(root))


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (on at most 10,000 of them), in [0, 1] units."""
    sample = x[: 10000].float().div_(255.0)
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


# --------------------------------------------------------------------------------------------
# User data
# --------------------------------------------------------------------------------------------
def _split_by_seed(x: torch.Tensor, y: torch.Tensor, seed: int, fractions=(0.8, 0.1, 0.1)):
    n = len(y)
    need = 1 + sum(1 for f in fractions[1:] if f > 0)
    if n < need:
        raise DataError(f"dataset: {n} image(s); allowed: at least {need} (each split needs one)")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * fractions[1])))
    n_test = max(1, int(round(n * fractions[2]))) if fractions[2] > 0 else 0
    val, test, train = perm[:n_val], perm[n_val:n_val + n_test], perm[n_val + n_test:]
    return [(x[i.sort().values], y[i.sort().values]) for i in (train, val, test)]


def _finish(name: str, parts, classes: tuple[str, ...], source: str, num_classes: int | None = None) -> Dataset:
    (trx, tr_y), (vax, va_y), (tex, te_y) = parts
    labels = torch.unique(torch.cat([tr_y.long(), va_y.long(), te_y.long()]))
    if len(labels) < 2:  # every score would be 100%: nothing to learn or to rank archs by
        only = ", ".join(str(classes[int(v)]) if classes and int(v) < len(classes) else str(int(v)) for v in labels)
        raise DataError(f"dataset: {source} has {len(labels)} class ({only or 'none'}); allowed: at least 2 classes")
    channels = 3
    mean, std = _stats(trx)
    mk = lambda xx, yy: Split(xx.contiguous(), yy.long().contiguous(), mean, std, channels)  # noqa: E731
    k = num_classes or int(max(int(tr_y.max()), int(va_y.max()), int(te_y.max())) + 1)
    return Dataset(name, mk(trx, tr_y), mk(vax, va_y), mk(tex, te_y), k,
                   classes or tuple(str(i) for i in range(k)), source=source)


def _to_nchw_uint8(x: np.ndarray, where: str) -> torch.Tensor:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{where}: x has shape {tuple(x.shape)}; allowed: (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if x.shape[1] not in (1, 3):
        raise DataError(f"{where}: x has {x.shape[1]} channels; allowed: 1 or 3")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
            raise DataError(f"{where}: float x must lie in [0, 1]; allowed: uint8 in [0, 255] or floats in [0, 1]")
        x = np.round(x * 255.0).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: integer x must lie in [0, 255]; allowed: uint8 in [0, 255] or floats in [0, 1]")
        x = x.astype(np.uint8)
    else:
        raise DataError(f"{where}: x has dtype {x.dtype}; allowed: uint8 or float in [0, 1]")
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: y has shape {tuple(y.shape)}; allowed: ({n},) integer labels, one per image")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: y has dtype {y.dtype}; allowed: integer class labels >= 0")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: y has negative labels; allowed: integer class labels >= 0")
    return torch.from_numpy(y.astype(np.int64))


def _same_channels(parts):
    """Make all splits share one channel count (1-channel data is kept 1 and repeated per batch)."""
    chans = {p[0].shape[1] for p in parts}
    if len(chans) > 1:  # mixing grey and colour: repeat grey to 3 channels
        parts = [(p[0].expand(-1, 3, -1, -1).contiguous() if p[0].shape[1] == 1 else p[0], p[1]) for p in parts]
    sizes = {tuple(p[0].shape[2:]) for p in parts}
    if len(sizes) > 1:
        raise DataError(f"dataset: splits have different image sizes {sorted(sizes)}; allowed: one size")
    return parts


def _npz(path: Path, seed: int) -> Dataset:
    where = f"dataset {path}"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
        raise DataError(f"{where}: not a readable .npz file ({type(exc).__name__}); allowed: an .npz with x and y") from None
    for need in ("x", "y"):
        if need not in arrays:
            raise DataError(f"{where}: missing array {need!r}; has {sorted(arrays)}; allowed: x, y "
                            "(optional x_val, y_val, x_test, y_test)")

    def pair(kx, ky):
        x = _to_nchw_uint8(arrays[kx], where)
        return x, _labels(arrays[ky], len(x), where)

    if "x_test" in arrays and "y_test" in arrays:
        train = pair("x", "y")
        test = pair("x_test", "y_test")
        if "x_val" in arrays and "y_val" in arrays:
            val = pair("x_val", "y_val")
        else:
            train, val, _ = _split_by_seed(*train, seed, fractions=(0.9, 0.1, 0.0))
        parts = [train, val, test]
    else:
        parts = _split_by_seed(*pair("x", "y"), seed)
    parts = _same_channels(parts)
    return _finish(path.stem, parts, (), str(path))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folder(root: Path, classes: list[str]) -> tuple[list, list[int]]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, cls in enumerate(classes):
        d = root / cls
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
                continue
            try:
                with Image.open(f) as im:
                    im.load()
                    images.append(im.convert("L") if im.mode in ("L", "1", "I;16", "I", "LA") else im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"dataset: {f} is not a readable image ({type(exc).__name__}); "
                                f"allowed: {', '.join(IMAGE_SUFFIXES)}") from None
            labels.append(label)
    return images, labels


def _stack(images, size: tuple[int, int], rgb: bool) -> torch.Tensor:
    from PIL import Image

    arrs = []
    for im in images:
        if rgb and im.mode != "RGB":
            im = im.convert("RGB")
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrs))


def _image_folder(root: Path, seed: int) -> Dataset:
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" in split_dirs and "test" in split_dirs:
        classes = sorted({p.name for s in split_dirs.values() for p in _class_dirs(s)})
        read = {s: _read_folder(d, classes) for s, d in split_dirs.items()}
        all_images = [im for imgs, _ in read.values() for im in imgs]
    else:
        classes = [p.name for p in _class_dirs(root)]
        read = {"all": _read_folder(root, classes)}
        all_images = read["all"][0]
    if not classes or not all_images:
        raise DataError(f"dataset: {root} holds no class folders with images; allowed: {root}/<class>/<image> "
                        f"({', '.join(IMAGE_SUFFIXES)}), optionally under train/ and test/")
    rgb = any(im.mode == "RGB" for im in all_images)
    size = Counter((im.size[1], im.size[0]) for im in all_images).most_common(1)[0][0]
    if "all" in read:
        imgs, labels = read["all"]
        parts = _split_by_seed(_stack(imgs, size, rgb), torch.tensor(labels, dtype=torch.int64), seed)
    else:
        got = {s: (_stack(imgs, size, rgb), torch.tensor(labels, dtype=torch.int64))
               for s, (imgs, labels) in read.items() if imgs}
        if "train" not in got or "test" not in got:
            raise DataError(f"dataset: {root}: train/ and test/ must each hold images in class folders")
        if "val" in got:
            parts = [got["train"], got["val"], got["test"]]
        else:
            tr, va, _ = _split_by_seed(*got["train"], seed, fractions=(0.9, 0.1, 0.0))
            parts = [tr, va, got["test"]]
    return _finish(root.name, parts, tuple(classes), str(root), num_classes=len(classes))


__all__ = ["Dataset", "Split", "load_dataset", "dataset_names", "FASHION_MNIST_DIR", "FASHION_MNIST_INSTALL"]


# --------------------------------------------------------------------------------------------
# Full-size image folders (ImageNet layout), streamed from disk
# --------------------------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_crop_box(width: int, height: int, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The crop box (left, top, right, bottom) of the standard ImageNet RandomResizedCrop (the
    Inception / torchvision algorithm): area in ``scale`` of the image, aspect ratio log-uniform in
    ``ratio``, 10 tries, else the central crop at the nearest allowed ratio."""
    area = width * height
    lo, hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = float(np.exp(rng.uniform(lo, hi)))
        w = int(round((target * ar) ** 0.5))
        h = int(round((target / ar) ** 0.5))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def center_crop_box(width: int, height: int, resize: int, size: int):
    """Eval transform as a box on the original image: resize the short side to ``resize`` then crop
    the central ``size`` x ``size`` -- i.e. the central square of side ``size / resize`` x short side."""
    side = min(width, height) * size / resize
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


class FolderImages(torch.utils.data.Dataset):
    """The files of one split of an image folder, decoded with Pillow when asked for (in DataLoader
    workers).  ``train``: RandomResizedCrop to ``size`` (scale 0.08-1, ratio 3/4-4/3) and a random
    horizontal flip; else resize the short side to ``resize`` (256) and crop the central ``size``
    (224).  Returns (uint8 (3, size, size), label); normalisation (``IMAGENET_MEAN``/``STD`` by default)
    happens on the device, after the 4x smaller uint8 copy.  The random draws of image ``i`` come from
    (seed, epoch, i), so an epoch is the same whatever the number of workers or processes, and a
    resumed run sees the same crops."""

    def __init__(self, files: list[tuple[str, int]], train: bool, size: int = 224, resize: int = 256,
                 seed: int = 0, hflip: bool = True):
        self.files, self.train, self.size, self.resize, self.seed, self.hflip = files, train, size, resize, seed, hflip
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int):
        import random as _random

        from PIL import Image

        path, label = self.files[int(i)]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError as exc:
            raise DataError(f"dataset: {path} is not a readable image ({type(exc).__name__})") from None
        w, h = im.size
        if self.train:
            rng = _random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(i))
            box = random_resized_crop_box(w, h, rng)
            im = im.resize((self.size, self.size), Image.BILINEAR, box=box)
            if self.hflip and rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            im = im.resize((self.size, self.size), Image.BILINEAR,
                           box=center_crop_box(w, h, self.resize, self.size))
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
        return x, label


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Batch sampler of one process: each epoch a permutation of the split drawn from (seed, epoch);
    global batches of ``global_batch`` cut from it (last incomplete one dropped); this rank gets its
    contiguous part of each (``searchers.distributed.rank_slice``: world x accum shards), so every rank
    sees a disjoint 1/world of the epoch, as DistributedSampler does, and the same images per step as a
    1-process run.  ``set_epoch(epoch, start_step)`` also resumes mid-epoch."""

    def __init__(self, n: int, global_batch: int, rank: int = 0, world: int = 1, accum: int = 1, seed: int = 0,
                 shuffle: bool = True):
        self.n, self.bs, self.rank, self.world, self.accum = n, global_batch, rank, world, accum
        self.seed, self.shuffle = seed, shuffle
        self.epoch = self.start = 0
        self.part = global_batch // (world * accum) * accum

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start_step)

    def steps(self) -> int:
        return self.n // self.bs

    def __len__(self) -> int:
        return self.steps() - self.start

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def __iter__(self):
        order = self.order()
        for s in range(self.start, self.steps()):
            g = order[s * self.bs:(s + 1) * self.bs]
            yield g[self.rank * self.part:(self.rank + 1) * self.part].tolist()


def _collate(batch):
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.int64)


def to_float(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32 on ``x``'s device (keeps channels-last if it is)."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - m) / s


def make_loader(images: FolderImages, batch_sampler=None, batch_size: int = 256, workers: int = 4,
                pin_memory: bool | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over ``images``: ``workers`` decoding processes (persistent, 4 batches prefetched
    each), pinned memory when CUDA is available (``pin_memory`` None)."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    kw = dict(num_workers=workers, pin_memory=pin_memory, collate_fn=_collate)
    if workers:
        kw.update(persistent_workers=False, prefetch_factor=4)
    if batch_sampler is not None:
        return torch.utils.data.DataLoader(images, batch_sampler=batch_sampler, **kw)
    return torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, **kw)


class FolderSplit:
    """One split of a full-size image folder, streamed: ``len``, ``batches(batch_size, limit)`` (the
    evaluation transform, normalised floats, in file order), ``images(train)`` for training loaders."""

    def __init__(self, files, size: int, resize: int, seed: int, workers: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.files, self.size, self.resize, self.seed, self.workers = files, size, resize, seed, workers
        self.mean, self.std, self.channels = mean, std, 3
        self.y = torch.tensor([lab for _, lab in files], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.files)

    def images(self, train: bool, hflip: bool = True) -> FolderImages:
        return FolderImages(self.files, train, self.size, self.resize, self.seed, hflip)

    def batches(self, batch_size: int = 256, shuffle: bool = False, generator=None, limit: int | None = None):
        files = self.files
        if shuffle:
            order = torch.randperm(len(files), generator=generator).tolist()
            files = [files[i] for i in order]
        if limit is not None:
            files = files[:limit]
        ds = FolderImages(files, False, self.size, self.resize, self.seed)
        for x, y in make_loader(ds, batch_size=batch_size, workers=self.workers):
            yield to_float(x, self.mean, self.std), y

    def batch(self, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The images ``idx`` (all when None), evaluation transform, normalised floats."""
        idx = torch.arange(len(self)) if idx is None else torch.as_tensor(idx)
        ds = FolderImages(self.files, False, self.size, self.resize, self.seed)
        x, y = _collate([ds[int(i)] for i in idx])
        return to_float(x, self.mean, self.std), y

    def subset(self, n: int, seed: int = 0) -> "FolderSplit":
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return FolderSplit([self.files[i] for i in idx.tolist()], self.size, self.resize, self.seed, self.workers,
                           self.mean, self.std)


@dataclass
class FolderDataset:
    """A full-size image folder (``load_dataset(path, image_size=224)``): splits are ``FolderSplit``s
    streamed from disk; ``streaming`` tells the trainer to use DataLoaders."""

    name: str
    train: FolderSplit
    val: FolderSplit
    test: FolderSplit
    num_classes: int
    classes: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""
    streaming: bool = True

    @property
    def resolution(self) -> tuple[int, int]:
        return self.train.size, self.train.size

    @property
    def key(self) -> str:
        return f"{self.name}:{len(self.train)}/{len(self.val)}/{len(self.test)}@{self.train.size}x{self.train.size}"


def _folder_files(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    out = []
    for label, cls in enumerate(classes):
        d = root / cls
        if d.is_dir():
            out += [(str(f), label) for f in sorted(d.rglob("*"))
                    if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    return out


def load_image_folder(root: str | os.PathLike, image_size: int = 224, resize: int | None = None, seed: int = 0,
                      workers: int = 4) -> FolderDataset:
    """A full-size image folder streamed from disk: ``root/train/<class>/...`` and ``root/val/<class>/...``
    (the ImageNet layout; ``root/test/`` too if present, else the val folder is also the test split and
    a held-out val of 10,000 images at most / 10% is cut from train by ``seed``), or ``root/<class>/...``
    split 80/10/10 by ``seed``.  Training: RandomResizedCrop(``image_size``) + flip; evaluation: resize
    to ``resize`` (default image_size x 8/7: 256 for 224) + central crop."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset: {root} is not a folder; allowed: an image folder (root/train/<class>/..., "
                        "root/val/<class>/...) with --image-size")
    if not isinstance(image_size, int) or image_size < 16:
        raise DataError(f"--image-size: got {image_size}; allowed: an integer >= 16")
    resize = resize or int(round(image_size * 256 / 224))
    if (root / "train").is_dir():
        classes = [p.name for p in _class_dirs(root / "train")]
        train = _folder_files(root / "train", classes)
        evald = next((root / s for s in ("val", "validation", "test") if (root / s).is_dir()), None)
        if evald is None:
            raise DataError(f"dataset: {root} has train/ but no val/ (or test/); allowed: root/train/<class>/... and "
                            "root/val/<class>/...")
        held = _folder_files(evald, classes)
        test = _folder_files(root / "test", classes) if (root / "test").is_dir() and evald.name != "test" else held
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(len(train), generator=g).tolist()
        n_val = min(10000, max(1, len(train) // 10))
        val = [train[i] for i in sorted(perm[:n_val])] if test is held else held
        train = [train[i] for i in sorted(perm[n_val:])] if test is held else train
    else:
        classes = [p.name for p in _class_dirs(root)]
        files = _folder_files(root, classes)
        if len(files) < 3:
            raise DataError(f"dataset: {root} holds {len(files)} image(s) in class folders; allowed: at least 3")
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(len(files), generator=g).tolist()
        n = max(1, len(files) // 10)
        val, test, train = ([files[i] for i in sorted(p)] for p in (perm[:n], perm[n:2 * n], perm[2 * n:]))
    if not classes or not train:
        raise DataError(f"dataset: {root} holds no class folders with images; allowed: root/train/<class>/<image> "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    mk = lambda f: FolderSplit(f, image_size, resize, seed, workers)  # noqa: E731
    return FolderDataset(root.name, mk(train), mk(val), mk(test), len(classes), tuple(classes), str(root))


__all__ += ["FolderDataset", "FolderImages", "FolderSplit", "GlobalBatchSampler", "IMAGENET_MEAN", "IMAGENET_STD",
            "center_crop_box", "load_image_folder", "make_loader", "random_resized_crop_box", "to_float"]
