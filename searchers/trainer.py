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
from searchers.training import (RecipeError, lr_at, param_groups, plain_convs, recalibrate_bn, small_map_convs,
                                use_small_map_convs)

FORMAT = 1
OPTIMIZERS = ("sgd", "rmsprop")
INITS = ("scratch", "supernet")


class TrainError(EdgenasError, ValueError):
    """A training run cannot start or continue (checkpoint of another run, diverged loss...)."""


@dataclass(frozen=True)
class TrainRecipe:
    epochs: int = 5
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
def evaluate(model: nn.Module, split, limit: int | None = None, batch_size: int = 500,
             channels_last: bool = False) -> dict:
    """Top-1 (and top-5 when there are more than 5 classes) of ``model`` in eval mode on the first
    ``limit`` images of ``split``: {"top1", "top5"?, "images"}."""
    was = model.training
    model.eval()
    n = c1 = c5 = 0
    k5 = None
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    for x, y in split.batches(batch_size, limit=limit or None):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
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


def bn_conv_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, BN) pairs in which the BatchNorm normalises the conv's output directly: a module with
    ``conv`` and ``bn`` attributes (``ConvBNAct``, ``Stem``, ``Head``), or a ``Conv2d`` followed by a
    ``BatchNorm2d`` of its width in an ``nn.Sequential``.  Such a conv's weight is scale-invariant: the
    network computes the same function for any positive scale of it (BN's eps aside), and SGD's
    effective step on it is ``lr / |w|^2``."""
    pairs, seen = [], set()
    for m in model.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
            pairs.append((conv, bn))
        elif isinstance(m, nn.Sequential):
            kids = list(m)
            for a, b in zip(kids, kids[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) and b.num_features == a.out_channels:
                    pairs.append((a, b))
    out = []
    for c, b in pairs:
        if id(c) not in seen:
            seen.add(id(c))
            out.append((c, b))
    return out


def init_norm(weight: torch.Tensor) -> float:
    """The norm a fresh ``init_weights`` gives a conv weight in expectation (kaiming normal, fan_out):
    sqrt(numel x 2 / fan_out)."""
    fan_out = weight.shape[0] * (weight[0][0].numel() if weight.dim() > 2 else 1)
    return math.sqrt(weight.numel() * 2.0 / fan_out)


def se_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The two 1x1 convs (``fc1``, ``fc2``) of every squeeze-excite module: not BN-followed, so their
    scale is part of the function (the gate's input-dependent part grows with |fc1| x |fc2|)."""
    out = []
    for m in model.modules():
        fc1, fc2 = getattr(m, "fc1", None), getattr(m, "fc2", None)
        if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d) and hasattr(m, "gate"):
            out += [fc1, fc2]
    return out


@torch.no_grad()
def renormalize(model: nn.Module, se: bool = False) -> list[dict]:
    """Rescale every BN-followed conv weight (``bn_conv_pairs``) to the norm a fresh init gives it
    (``init_norm``), and the BN's running mean / variance with it, so that the network computes the
    same function (exactly in eval mode up to BN's eps, and in train mode the same batch statistics)
    while SGD's effective learning rate on those weights, ``lr / |w|^2``, is the one a scratch run
    starts with.  (Inherited weights carry other norms: on MobileNetV3-Small from the ``mobilenetv3``
    supernet, pointwise convs 0.5-1.1x a fresh init's, sliced from envelope tensors initialised for
    larger shapes, and depthwise convs 1.1-3.9x, grown in training.  Measured on Fashion-MNIST it does
    not change how the run ends: docs/train.md.)  Returns one row per rescaled conv:
    {"shape", "norm_before", "norm_after", "scale", "kind"}.

    ``se``: also rescale each squeeze-excite conv (weight; ``fc1``'s bias with it, so that its ReLU sees the
    same pattern) to a fresh init's norm.  That changes the function: the input-dependent part of every SE
    gate is multiplied by the product of the two scales (a supernet's envelope initialisation leaves a
    sliced SE at a fraction of a fresh init's norm, and a small product learns slowly)."""
    rows = []
    if se:
        convs = se_convs(model)
        for k, conv in enumerate(convs):
            w = conv.weight
            before = float(w.norm())
            if before == 0:
                continue
            c = init_norm(w) / before
            w.mul_(c)
            if k % 2 == 0 and conv.bias is not None:          # fc1 (fc2's bias sets the gate's mean: kept)
                conv.bias.mul_(c)
            rows.append({"shape": tuple(w.shape), "norm_before": before, "norm_after": float(w.norm()), "scale": c,
                         "kind": "se"})
    for conv, bn in bn_conv_pairs(model):
        w = conv.weight
        before = float(w.norm())
        if before == 0:
            continue
        target = init_norm(w)
        c = target / before
        w.mul_(c)
        if conv.bias is not None:
            conv.bias.mul_(c)
        if bn.running_mean is not None:
            bn.running_mean.mul_(c)
            bn.running_var.mul_(c * c)
        rows.append({"shape": tuple(w.shape), "norm_before": before, "norm_after": float(w.norm()), "scale": c,
                     "kind": "bn"})
    return rows


@torch.no_grad()
def perturb(model: nn.Module, fresh: nn.Module, p: float) -> int:
    """Shrink and perturb (Ash & Adams, "On warm-starting neural network training", 2020) towards the
    network's own fresh init: every conv / linear weight becomes ``(1 - p) x inherited + p x fresh``
    (``fresh``: the same architecture's ``build()`` init); BN parameters and biases stay inherited.
    ``p`` = 0 keeps the inherited weights, 1 is the scratch init.  Returns the number of tensors mixed.
    (The function changes: re-estimate BN statistics afterwards.)"""
    if not 0.0 <= p <= 1.0:
        raise field_error(TrainError, "--perturb", p, "a number in [0, 1]")
    mine, theirs = dict(model.named_parameters()), dict(fresh.named_parameters())
    if [(k, v.shape) for k, v in mine.items()] != [(k, v.shape) for k, v in theirs.items()]:
        raise TrainError("perturb: the fresh model's parameters differ from the inherited one's (names or shapes)")
    n = 0
    for k, w in mine.items():
        if w.ndim > 1:
            w.mul_(1.0 - p).add_(theirs[k].to(w.device), alpha=p)
            n += 1
    return n


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
    recipe, data, seed, init and number of batch shards), else raises TrainError (pass ``resume=False``
    to start over).  ``stop_after`` (epochs) or ``stop_after_steps`` end the call early, as a kill
    would, for tests and time-sliced runs.

    Distributed (``dist``, a ``searchers.distributed.Dist`` from ``init_from_env``): every rank draws the
    same batch order and augmentation (same seeded generator), runs its share of each global batch
    (``searchers.distributed.sharded_backward``: ``recipe.batch_size`` is the global batch, cut into
    world x ``accum`` shards) inside DDP; rank 0 alone validates (the row is broadcast), logs and writes
    checkpoints.  ``accum`` > 1 on one process is gradient accumulation, the 1-process equal of
    ``accum`` processes.  ``checkpoint_every`` (steps, 0: only at epoch ends) adds mid-epoch checkpoints
    (the epoch's order and position are in them, so resume is exact).  ``amp`` (float16 autocast + grad
    scaler) acts on CUDA only (a no-op on CPU); ``channels_last`` (the default) runs the model in the
    NHWC memory format on CPU and CUDA alike (2.4x faster MobileNetV3-Small training on this CPU, the same
    arithmetic up to float rounding)."""

    def __init__(self, arch: Arch, data, recipe: TrainRecipe, out: Path, model: nn.Module, seed: int = 0,
                 init: str = "scratch", progress: bool = True, log: Callable[[str], None] | None = None,
                 dist=None, accum: int = 1, checkpoint_every: int = 0, amp: bool = False,
                 channels_last: bool = True, sync_bn: bool = False, workers: int = 4):
        from searchers.distributed import SINGLE, shard_size

        if init not in INITS:
            raise field_error(TrainError, "--init", init, INITS)
        for name, v in (("--accum", accum), ("--checkpoint-every", checkpoint_every + 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise field_error(TrainError, name, accum if name == "--accum" else checkpoint_every,
                                  "an integer >= 1" if name == "--accum" else "an integer >= 0")
        self.arch, self.data, self.recipe, self.seed, self.init = arch, data, recipe, int(seed), init
        self.dist = dist or SINGLE
        self.accum, self.checkpoint_every = int(accum), int(checkpoint_every)
        self.workers = int(workers)          # loader processes for streamed (full-size) data
        self.out = Path(out)
        self.progress = progress and self.dist.is_main
        self.log = (log or (lambda m: None)) if self.dist.is_main else (lambda m: None)
        self.train_split = data.train.subset(recipe.train_images, seed=self.seed) if recipe.train_images \
            else data.train
        n = len(self.train_split)
        self.batch_size = min(recipe.batch_size, n)
        self.shards = self.dist.world * self.accum
        if self.shards > 1:
            shard_size(self.batch_size, self.dist, self.accum)
        self.steps_per_epoch = max(1, n // self.batch_size)
        self.total_steps = recipe.epochs * self.steps_per_epoch
        self.history: list[dict] = []
        self.seconds = 0.0
        self.init_fingerprint = weights_fingerprint(model)
        self.device = self.dist.device
        cuda = self.device.type == "cuda"
        self.amp, self.channels_last = bool(amp and cuda), bool(channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        from searchers.distributed import wrap

        self.ddp = wrap(self.model, self.dist, sync_bn=sync_bn) if self.dist.active else None
        if self.ddp is not None and sync_bn and cuda:
            self.model = self.ddp.module

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def identity(self) -> dict:
        arch = self.arch.to_string() if isinstance(self.arch, Arch) else type(self.model).__name__
        ident = {"arch": arch, "recipe": asdict(self.recipe), "data": self.data.key,
                 "seed": self.seed, "init": self.init, "init_weights": self.init_fingerprint}
        if not self.channels_last:        # NCHW (the old default): a resume must not switch layouts silently
            ident["channels_last"] = False
        if self.shards > 1:               # BatchNorm statistics per shard: part of what the run computes
            ident["shards"] = self.shards
        return ident

    def _fresh_state(self):
        torch.manual_seed(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed + 1)
        self.opt = make_optimizer(self.model, self.recipe)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.ema = EMA(self.model, self.recipe.ema_decay)
        self.epoch = 0
        self.step = 0
        self.order: torch.Tensor | None = None     # the current epoch's batch order (mid-epoch checkpoints)
        self.epoch_losses: list[float] = []
        self.epoch_seconds = 0.0

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
            mine = self.identity()
            diff = sorted(k for k in set(ident) | set(mine) if ident.get(k) != mine.get(k))
            raise TrainError(f"checkpoint: {p} belongs to another run (different {', '.join(diff)}); allowed: "
                             "the same options, another --out, or --fresh to start over")
        self.model.load_state_dict(st["model"])
        self.ema.module.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["optimizer"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])
        np.random.set_state(st["np_rng"])
        self.epoch, self.step = st["epoch"], st["step"]
        self.history, self.seconds = st["history"], st["seconds"]
        self.order = st.get("order")
        self.epoch_losses = list(st.get("epoch_losses") or [])
        self.epoch_seconds = st.get("epoch_seconds", 0.0)
        return True

    def _save(self) -> None:
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        cpu = lambda sd: {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in sd.items()}  # noqa: E731
        _atomic_save({"format": FORMAT, "identity": self.identity(), "epoch": self.epoch, "step": self.step,
                      "model": cpu(self.model.state_dict()), "ema": cpu(self.ema.module.state_dict()),
                      "optimizer": self.opt.state_dict(), "gen": self.gen.get_state(),
                      "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                      "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(),
                      "np_rng": np.random.get_state(), "history": self.history, "seconds": self.seconds,
                      "order": self.order, "epoch_losses": self.epoch_losses,
                      "epoch_seconds": self.epoch_seconds, "world": self.dist.world},
                     self.checkpoint_path)

    def _val(self) -> dict:
        row = None
        if self.dist.is_main:
            lim = self.recipe.eval_images or None
            raw = evaluate(self.model, self.data.val, lim, channels_last=self.channels_last)
            ema = evaluate(self.ema.module, self.data.val, lim, channels_last=self.channels_last)
            row = {"val_top1": raw["top1"], "val_top1_ema": ema["top1"]}
        return self.dist.broadcast_object(row)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn) -> float:
        from searchers.distributed import sharded_backward

        net = self.ddp if self.ddp is not None else self.model

        def shard_loss(xs, ys):
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                return loss_fn(net(xs), ys)

        self.opt.zero_grad(set_to_none=True)
        loss = sharded_backward(shard_loss, x, y, self.dist, self.accum, self.seed, self.step, self.model,
                                self.ddp, self.scaler)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        return loss

    def run(self, resume: bool = True, stop_after: int | None = None, stop_after_steps: int | None = None) -> dict:
        """Train to ``recipe.epochs`` (or ``stop_after`` more epochs / ``stop_after_steps`` more steps);
        returns {"resumed_from", "epochs_done", "finished"}.  The model (and its EMA copy) run with
        ``SmallMapConv2d`` convs meanwhile and are handed back with ``nn.Conv2d`` ones."""
        use_small_map_convs(self.model)           # (not the small_map_convs context: the EMA copy is made in _run)
        try:
            return self._run(resume, stop_after, stop_after_steps)
        finally:
            plain_convs(self.model)
            if getattr(self, "ema", None) is not None:
                plain_convs(self.ema.module)

    def _run(self, resume: bool, stop_after: int | None, stop_after_steps: int | None) -> dict:
        from searchers.distributed import rank_slice

        self._fresh_state()
        self.dist.barrier()                       # rank 0 may still be writing the last checkpoint
        resumed = self._load() if resume else False
        if resumed:
            at = f"epoch {self.epoch}/{self.recipe.epochs}"
            if self.order is not None:
                at += f", step {self.step - self.epoch * self.steps_per_epoch}/{self.steps_per_epoch} of epoch " \
                      f"{self.epoch + 1}"
            self.log(f"resumed from {self.checkpoint_path} at {at}")
        elif not self.history:
            self.history.append({"epoch": 0, "train_loss": None, "lr": 0.0, **self._val(), "seconds": 0.0})
            self.log(f"epoch 0 (init {self.init}): val top-1 {self.history[-1]['val_top1']:.4f}")
        start_epoch, start_step = self.epoch, self.step
        loss_fn = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)
        warm = min(0.5, self.recipe.warmup_epochs / self.recipe.epochs)     # warm-up: at most half the run
        split, bs, r = self.train_split, self.batch_size, self.recipe
        rs = rank_slice(bs, self.dist, self.accum) if self.shards > 1 else slice(0, bs)

        def stopped() -> bool:
            return ((stop_after is not None and self.epoch - start_epoch >= stop_after)
                    or (stop_after_steps is not None and self.step - start_step >= stop_after_steps))

        lr = 0.0
        streaming = bool(getattr(self.data, "streaming", False))
        images = split.images(train=True, hflip=r.hflip) if streaming else None
        while self.epoch < r.epochs and not stopped():
            t0 = time.perf_counter()
            self.model.train()
            first = self.step - self.epoch * self.steps_per_epoch
            if first == 0:
                self.epoch_losses, self.epoch_seconds = [], 0.0
            batches = None
            if streaming:                  # full-size data: decoding + augmentation in loader workers
                from searchers.data import GlobalBatchSampler, make_loader

                sampler = GlobalBatchSampler(len(split), bs, self.dist.rank, self.dist.world, self.accum, self.seed)
                sampler.set_epoch(self.epoch, first)
                images.set_epoch(self.epoch)
                batches = iter(make_loader(images, sampler, workers=self.workers))
            elif self.order is None:
                self.order = torch.randperm(len(split), generator=self.gen)
            bar = _bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{r.epochs}", self.progress)
            if bar is not None and first:
                bar.update(first)
            for i in range(first, self.steps_per_epoch):
                if stopped():
                    break
                if batches is not None:
                    from searchers.data import to_float

                    xb, y = next(batches)
                    x = to_float(xb.to(self.device, non_blocking=True), split.mean, split.std)
                    y = y.to(self.device, non_blocking=True)
                else:
                    idx = self.order[i * bs:(i + 1) * bs]
                    xb = augment(split.x[idx], self.gen, r.crop_padding, r.hflip)[rs]
                    x, y = type(split)(xb, split.y[idx][rs], split.mean, split.std, split.channels).batch()
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                lr = lr_at(self.step, self.total_steps, r.peak_lr, warm)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                loss = self._train_step(x, y, loss_fn)
                self.ema.update(self.model, self.step)
                self.step += 1
                self.epoch_losses.append(loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.4f}")
                if (self.checkpoint_every and self.step % self.checkpoint_every == 0
                        and i + 1 < self.steps_per_epoch) or (stopped() and i + 1 < self.steps_per_epoch):
                    self.epoch_seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._save()
            if bar is not None:
                bar.close()
            if self.step - self.epoch * self.steps_per_epoch < self.steps_per_epoch:
                break                                                   # stopped mid-epoch (checkpoint written)
            losses = self.dist.all_mean(torch.tensor(self.epoch_losses, dtype=torch.float64)).tolist()
            if not all(math.isfinite(v) for v in losses[-5:]):
                raise TrainError(f"training diverged at epoch {self.epoch + 1} (loss {losses[-1]}); allowed: "
                                 f"a smaller --lr than {r.peak_lr:g}")
            self.epoch += 1
            train_s = self.epoch_seconds + time.perf_counter() - t0
            self.seconds += train_s
            row = {"epoch": self.epoch, "train_loss": sum(losses) / len(losses), "lr": lr, **self._val(),
                   "seconds": round(train_s, 2)}
            self.history.append(row)
            self.order, self.epoch_losses, self.epoch_seconds = None, [], 0.0
            self._save()
            self.log(f"epoch {self.epoch}/{r.epochs}: loss {row['train_loss']:.4f}  val top-1 {row['val_top1']:.4f}"
                     f"  (EMA {row['val_top1_ema']:.4f})  {train_s:.0f}s")
        self.dist.barrier()
        return {"resumed_from": start_epoch if resumed else None, "epochs_done": self.epoch,
                "finished": self.epoch >= r.epochs}

    def test(self) -> dict:
        """Test-split scores of the EMA weights (shipped) and of the raw weights."""
        lim = self.recipe.eval_images or None
        with small_map_convs(self.ema.module, self.model):
            ema = evaluate(self.ema.module, self.data.test, lim, channels_last=self.channels_last)
            raw = evaluate(self.model, self.data.test, lim, channels_last=self.channels_last)
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


__all__ = ["EMA", "INITS", "OPTIMIZERS", "TrainError", "TrainRecipe", "Trainer", "augment", "bn_conv_pairs",
           "default_lr", "evaluate", "init_norm", "make_optimizer", "perturb", "renormalize", "scratch_model", "se_convs",
           "supernet_model",
           "weights_fingerprint"]
