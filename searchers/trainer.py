"""The full ("last-mile") training of one architecture: a standard mobile recipe with EMA and
checkpoint / exact resume.  ``searchers.train`` is its command line; ``searchers.training`` keeps
the short fixed recipe the evaluators use (this module reuses its weight-decay groups, warm-up +
cosine schedule, BN re-estimation and accuracy helpers).

Recipe (``TrainRecipe()``, the MobileNet / MnasNet family's recipe scaled to small data):

* SGD with Nesterov momentum 0.9 (or ``optimizer="rmsprop"``: RMSProp, alpha 0.9, eps 1e-3,
  momentum 0.9, as MnasNet/MobileNetV3), peak learning rate ``lr`` (default 0.1 per 128 images for
  SGD, 0.016 per 256 for RMSProp, scaled linearly with the batch), a linear warm-up over
  ``warmup_epochs`` (at most half the run) then cosine decay to 0, stepped every batch;
* label smoothing 0.1; weight decay 4e-5 on conv / linear weights only (no decay on BatchNorm
  parameters or biases);
* an exponential moving average of the weights and BN buffers (decay ``ema_decay``, with the
  usual warm-up ``min(decay, (1 + step) / (10 + step))``); the EMA weights are the ones scored
  on the test split and shipped;
* light augmentation for small grey images: random crop with ``crop_padding`` pixels of zero
  padding, random horizontal flip;
* ``epochs`` passes over the training split (or over a fixed random subset of ``train_images`` of
  it), batches cut from a fresh permutation each epoch; the last incomplete batch is dropped (a
  batch of one breaks BatchNorm on the 1x1 maps that 224-designed networks reach at 32x32).

Every random draw (init, batch order, augmentation, dropout) comes from ``seed``; a checkpoint is
written at the end of each epoch holding the model, the EMA, the optimizer, the step (the schedule
is a pure function of it), the data generator's and torch's RNG states and the history, so a run
killed and resumed ends with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from search_space.arch import Arch
from search_space.errors import EdgenasError, field_error
from searchers.training import RecipeError, lr_at, param_groups, recalibrate_bn

FORMAT = 1
OPTIMIZERS = ("sgd", "rmsprop")
INITS = ("scratch", "supernet")


class TrainError(EdgenasError, ValueError):
    """A training run cannot start or continue (checkpoint of another run, diverged loss...)."""


@dataclass(frozen=True)
class TrainRecipe:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.0                # 0: the optimizer's default, scaled with the batch (see default_lr)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    ema_decay: float = 0.999
    crop_padding: int = 4
    hflip: bool = True
    train_images: int = 0          # 0: the whole training split; else a fixed random subset of it
    eval_images: int = 0           # 0: the whole val / test split; else their first N images

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise field_error(RecipeError, f"--{name.replace('_', '-')}", v, "a positive integer")
        for name in ("crop_padding", "train_images", "eval_images"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise field_error(RecipeError, f"--{name.replace('_', '-')}", v, "an integer >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise field_error(RecipeError, "--optimizer", self.optimizer, OPTIMIZERS)
        for name, lo, hi in (("lr", 0.0, 10.0), ("momentum", 0.0, 1.0), ("weight_decay", 0.0, 1.0),
                             ("label_smoothing", 0.0, 1.0), ("ema_decay", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) < hi:
                raise field_error(RecipeError, f"--{name.replace('_', '-')}", v, f"a number in [{lo}, {hi})")
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 100:
            raise field_error(RecipeError, "--warmup-epochs", w, "a number in [0, 100] (capped at half the epochs)")

    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr else default_lr(self.optimizer, self.batch_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["peak_lr"] = self.peak_lr
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainRecipe":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def default_lr(optimizer: str, batch_size: int) -> float:
    """0.1 per 128 images for SGD, 0.016 per 256 for RMSProp (MnasNet), linear in the batch."""
    return 0.1 * batch_size / 128 if optimizer == "sgd" else 0.016 * batch_size / 256


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=recipe.peak_lr, alpha=0.9, eps=1e-3, momentum=recipe.momentum)
    return torch.optim.SGD(groups, lr=recipe.peak_lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


# --------------------------------------------------------------------------------------------
# Augmentation and EMA
# --------------------------------------------------------------------------------------------
def augment(x: torch.Tensor, generator: torch.Generator, padding: int = 4, hflip: bool = True) -> torch.Tensor:
    """Random crop of the zero-padded images (same size back) and random horizontal flip, on a
    uint8 (B, C, H, W) batch; draws come from ``generator`` only."""
    b, c, h, w = x.shape
    if padding:
        xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]            # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, :]            # (B, 1, W)
        x = xp.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class EMA:
    """Exponential moving average of a model's weights and floating-point buffers (BN statistics);
    integer buffers are copied.  ``module`` is the averaged model (eval mode)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(m.detach(), alpha=1.0 - d)
            else:
                e.copy_(m)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, split, limit: int | None = None, batch_size: int = 500) -> dict:
    """Top-1 (and top-5 when there are more than 5 classes) of ``model`` in eval mode on the first
    ``limit`` images of ``split``: {"top1", "top5"?, "images"}."""
    was = model.training
    model.eval()
    n = c1 = c5 = 0
    k5 = None
    for x, y in split.batches(batch_size, limit=limit or None):
        logits = model(x)
        if k5 is None:
            k5 = 5 if logits.shape[1] > 5 else 0
        c1 += int((logits.argmax(1) == y).sum())
        if k5:
            c5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(1).sum())
        n += len(y)
    model.train(was)
    out = {"top1": c1 / max(1, n), "images": n}
    if k5:
        out["top5"] = c5 / max(1, n)
    return out


# --------------------------------------------------------------------------------------------
# Initial weights
# --------------------------------------------------------------------------------------------
def scratch_model(arch: Arch, num_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(int(seed))
    return arch.build(num_classes=num_classes)


def supernet_model(supernet, arch: Arch, data, seed: int, calib_batches: int = 4) -> nn.Module:
    """``arch`` with the weights it inherits from ``supernet`` (``Supernet.extract``), BatchNorm
    statistics re-estimated on ``calib_batches`` training batches (the supernet evaluator's step;
    the shared statistics belong to no single subnet)."""
    supernet.check(arch)
    if supernet.num_classes != data.num_classes:
        raise TrainError(f"--init supernet: the supernet has {supernet.num_classes} classes, the data set "
                         f"{data.num_classes}; allowed: a supernet trained on this data set")
    model = supernet.extract(arch)
    if calib_batches:
        recalibrate_bn(model, data.train, batches=calib_batches, batch_size=256, seed=seed)
    return model


# --------------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------------
def weights_fingerprint(model: nn.Module) -> str:
    """sha1 of the model's parameters (names, shapes, float32 bytes): identifies initial weights
    (a resumed run must start from the same ones; the card records it)."""
    import hashlib

    h = hashlib.sha1()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Train ``model`` (built from ``arch``) on ``data`` with ``recipe``, checkpointing into ``out``.
    (``arch`` may be None for a plain module, e.g. a baseline: the checkpoint then names its class.)

    ``run()`` resumes from ``out/checkpoint.pt`` when it belongs to the same run (same arch,
    recipe, data, seed and init), else raises TrainError (pass ``resume=False`` to start over).
    ``stop_after`` (epochs) ends the call early, as a kill would, for tests and time-sliced runs."""

    def __init__(self, arch: Arch, data, recipe: TrainRecipe, out: Path, model: nn.Module, seed: int = 0,
                 init: str = "scratch", progress: bool = True, log: Callable[[str], None] | None = None):
        if init not in INITS:
            raise field_error(TrainError, "--init", init, INITS)
        self.arch, self.data, self.recipe, self.seed, self.init = arch, data, recipe, int(seed), init
        self.out = Path(out)
        self.model = model
        self.progress, self.log = progress, log or (lambda m: None)
        self.train_split = data.train.subset(recipe.train_images, seed=self.seed) if recipe.train_images \
            else data.train
        n = len(self.train_split)
        self.batch_size = min(recipe.batch_size, n)
        self.steps_per_epoch = max(1, n // self.batch_size)
        self.total_steps = recipe.epochs * self.steps_per_epoch
        self.history: list[dict] = []
        self.seconds = 0.0
        self.init_fingerprint = weights_fingerprint(model)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def identity(self) -> dict:
        arch = self.arch.to_string() if isinstance(self.arch, Arch) else type(self.model).__name__
        return {"arch": arch, "recipe": asdict(self.recipe), "data": self.data.key,
                "seed": self.seed, "init": self.init, "init_weights": self.init_fingerprint}

    def _fresh_state(self):
        torch.manual_seed(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed + 1)
        self.opt = make_optimizer(self.model, self.recipe)
        self.ema = EMA(self.model, self.recipe.ema_decay)
        self.epoch = 0
        self.step = 0

    def _load(self) -> bool:
        p = self.checkpoint_path
        if not p.is_file():
            return False
        try:
            st = torch.load(p, map_location="cpu", weights_only=False)
            ident = st["identity"]
        except Exception as exc:  # noqa: BLE001 -- any unreadable checkpoint is reported the same way
            raise TrainError(f"checkpoint: {p} is not readable ({type(exc).__name__}); allowed: delete it "
                             "or pass --fresh") from None
        if ident != self.identity():
            diff = sorted(k for k in ident if ident.get(k) != self.identity().get(k))
            raise TrainError(f"checkpoint: {p} belongs to another run (different {', '.join(diff)}); allowed: "
                             "the same options, another --out, or --fresh to start over")
        self.model.load_state_dict(st["model"])
        self.ema.module.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["optimizer"])
        self.gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])
        np.random.set_state(st["np_rng"])
        self.epoch, self.step = st["epoch"], st["step"]
        self.history, self.seconds = st["history"], st["seconds"]
        return True

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        _atomic_save({"format": FORMAT, "identity": self.identity(), "epoch": self.epoch, "step": self.step,
                      "model": self.model.state_dict(), "ema": self.ema.module.state_dict(),
                      "optimizer": self.opt.state_dict(), "gen": self.gen.get_state(),
                      "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(),
                      "np_rng": np.random.get_state(), "history": self.history, "seconds": self.seconds},
                     self.checkpoint_path)

    def _val(self) -> dict:
        lim = self.recipe.eval_images or None
        raw = evaluate(self.model, self.data.val, lim)
        ema = evaluate(self.ema.module, self.data.val, lim)
        return {"val_top1": raw["top1"], "val_top1_ema": ema["top1"]}

    def run(self, resume: bool = True, stop_after: int | None = None) -> dict:
        """Train to ``recipe.epochs`` (or ``stop_after`` more epochs); returns {"resumed_from", ...}."""
        self._fresh_state()
        resumed = self._load() if resume else False
        if resumed:
            self.log(f"resumed from {self.checkpoint_path} at epoch {self.epoch}/{self.recipe.epochs}")
        elif not self.history:
            self.history.append({"epoch": 0, "train_loss": None, "lr": 0.0, **self._val(), "seconds": 0.0})
            self.log(f"epoch 0 (init {self.init}): val top-1 {self.history[-1]['val_top1']:.4f}")
        start_epoch = self.epoch
        loss_fn = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)
        warm = min(0.5, self.recipe.warmup_epochs / self.recipe.epochs)     # warm-up: at most half the run
        split, bs, r = self.train_split, self.batch_size, self.recipe
        while self.epoch < r.epochs and (stop_after is None or self.epoch - start_epoch < stop_after):
            t0 = time.perf_counter()
            self.model.train()
            order = torch.randperm(len(split), generator=self.gen)
            bar = _bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{r.epochs}", self.progress)
            losses = []
            for i in range(self.steps_per_epoch):
                idx = order[i * bs:(i + 1) * bs]
                xb = augment(split.x[idx], self.gen, r.crop_padding, r.hflip)
                x, y = type(split)(xb, split.y[idx], split.mean, split.std, split.channels).batch()
                lr = lr_at(self.step, self.total_steps, r.peak_lr, warm)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                loss = loss_fn(self.model(x), y)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.ema.update(self.model, self.step)
                self.step += 1
                losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.4f}")
            if bar is not None:
                bar.close()
            if not all(math.isfinite(v) for v in losses[-5:]):
                raise TrainError(f"training diverged at epoch {self.epoch + 1} (loss {losses[-1]}); allowed: "
                                 f"a smaller --lr than {r.peak_lr:g}")
            self.epoch += 1
            train_s = time.perf_counter() - t0
            self.seconds += train_s
            row = {"epoch": self.epoch, "train_loss": sum(losses) / len(losses), "lr": lr, **self._val(),
                   "seconds": round(train_s, 2)}
            self.history.append(row)
            self._save()
            self.log(f"epoch {self.epoch}/{r.epochs}: loss {row['train_loss']:.4f}  val top-1 {row['val_top1']:.4f}"
                     f"  (EMA {row['val_top1_ema']:.4f})  {train_s:.0f}s")
        return {"resumed_from": start_epoch if resumed else None, "epochs_done": self.epoch,
                "finished": self.epoch >= r.epochs}

    def test(self) -> dict:
        """Test-split scores of the EMA weights (shipped) and of the raw weights."""
        lim = self.recipe.eval_images or None
        ema = evaluate(self.ema.module, self.data.test, lim)
        raw = evaluate(self.model, self.data.test, lim)
        out = dict(ema)
        out["top1_raw"] = raw["top1"]
        if "top5" in raw:
            out["top5_raw"] = raw["top5"]
        return out


def _bar(total: int, desc: str, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


__all__ = ["EMA", "INITS", "OPTIMIZERS", "TrainError", "TrainRecipe", "Trainer", "augment", "default_lr",
           "evaluate", "make_optimizer", "scratch_model", "supernet_model", "weights_fingerprint"]
