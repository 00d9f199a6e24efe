"""The stand-alone short-training recipe: one fixed recipe for every architecture.

It is the ground truth the supernet and the zero-cost proxy are judged against, the ``train``
evaluator, and the short-term fine-tuning of NetAdapt and the last-mile trainer (``train_model``
takes any ``nn.Module``, e.g. a subnet extracted from the supernet).

Recipe (``Recipe()``): SGD with Nesterov momentum 0.9, peak learning rate 0.05 after a linear
warm-up over the first 5% of the steps, cosine decay to 0, weight decay 4e-5 on conv/linear weights
only (not on BatchNorm or biases), no label smoothing, batch 64, ``epochs`` (2) passes over a
fixed-size random subset of the training split (``images_per_epoch`` = 10,000, drawn anew each epoch
from ``seed``): 314 steps, about a minute for a MobileNetV2 at 32x32 on one core.  (Measured on
MobileNetV2 1.0: this recipe reaches 82.6% val; batch 128 / lr 0.1 / smoothing 0.1 reached 77.4%,
batch 64 / lr 0.2 65.9%.)
After training, BatchNorm statistics are re-estimated on ``precise_bn`` batches of 256 training
images ("precise BN"; a short run's running averages lag behind its weights), the same step the
supernet evaluator applies to an inherited subnet.  Scores are top-1 accuracy on the validation
split (or its first ``eval_images`` images).
Every random draw (init, batch order, dropout) comes from ``seed``, so a run is repeatable.
While it trains (and ``train_arch`` scores) the model's convs run as ``SmallMapConv2d``, which leaves out
the kernel taps that meet only zero padding (the last stages' 1x1 and 2x2 maps at 32x32): the same
arithmetic to float rounding; the model is handed back with ``nn.Conv2d``.
The model is put in the channels-last memory format before training (``to_channels_last``): the
same arithmetic, 2.4x faster on this CPU for MobileNetV3-Small (``benchmarks/train_throughput.py
--compare-memory-format``); its weights keep that layout, which loading a state dict ignores.
Device: the model's own (``train_arch(..., device="cuda")`` puts it there); every batch is moved to the
device of the model's parameters, so ``train_model``, ``accuracy`` and ``recalibrate_bn`` run wherever the
model is.  The losses are kept on that device and read once at the end (no host sync per step on a GPU; a progress
bar reads the loss every step on the CPU, every 20 steps elsewhere).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from search_space.errors import EdgenasError, field_error


class RecipeError(EdgenasError, ValueError):
    """A training recipe field is out of range."""


@dataclass(frozen=True)
class Recipe:
    epochs: int = 2
    images_per_epoch: int = 10000
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    warmup: float = 0.05          # fraction of the steps with a linear warm-up
    eval_images: int = 5000       # validation images scored (the whole 5k split by default)
    precise_bn: int = 4           # batches (of 256) re-estimating BN statistics after training; 0: off

    def __post_init__(self) -> None:
        for name in ("epochs", "images_per_epoch", "batch_size", "eval_images", "precise_bn"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0 and not (name == "precise_bn" and v == 0):
                raise field_error(RecipeError, f"recipe.{name}", v, "a positive integer")
        for name, lo, hi in (("lr", 0.0, 10.0), ("momentum", 0.0, 1.0), ("weight_decay", 0.0, 1.0),
                             ("label_smoothing", 0.0, 1.0), ("warmup", 0.0, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not lo <= float(v) < hi or (name == "lr" and v == 0):
                raise field_error(RecipeError, f"recipe.{name}", v, f"a number in [{lo}, {hi})")

    def steps(self, train_size: int) -> int:
        per_epoch = math.ceil(min(self.images_per_epoch, train_size) / self.batch_size)
        return self.epochs * per_epoch

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "Recipe":
        return replace(self, **changes)


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D weights in the channels-last (NHWC) memory format, in place.

    oneDNN's (and cuDNN's) NHWC convolutions run mobile nets' depthwise and pointwise layers much
    faster than NCHW; a convolution whose weight is channels-last gives a channels-last output, so
    the whole net runs NHWC without converting the input."""
    return model.to(memory_format=torch.channels_last)


def _live_taps(n: int, k: int, s: int, p: int) -> tuple[int, int, int, int] | None:
    """For one spatial dim (input size ``n``, kernel ``k``, stride ``s``, zero padding ``p`` each side):
    the kernel taps ``[lo, hi)`` that meet the input at some output position (a window, not always
    the centre: stride 2 on a 2x2 map keeps taps 3-4 of 7), and the left / right padding that gives
    every output position the same input under those taps; None when all taps meet the input or
    there is no output."""
    m = (n + 2 * p - k) // s + 1                 # output size
    if m < 1:
        return None
    lo, hi = max(0, p - (m - 1) * s), min(k, n + p)
    if lo == 0 and hi == k:
        return None
    left = p - lo
    return lo, hi, left, max(0, (m - 1) * s + (hi - lo) - n - left)


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` that leaves out the kernel taps which meet only zero padding.

    At the evaluators' 32x32 input the last stages run on 1x1 and 2x2 maps, where a 7x7 depthwise
    conv with padding 3 multiplies 40-48 of its 49 taps by padding zeros; oneDNN still runs all of
    them (forward and backward), which cost a third of a supernet training step.  Convolving with
    the live taps only (``_live_taps``' window of the kernel, padding adjusted) gives the same outputs
    and gradients -- the left-out products are exact zeros; the kept ones may be summed in another
    order, so results agree to float rounding, not bit for bit -- and the cropped taps' gradients are
    zero, as before.  On the CPU only (not measured on a GPU yet); tracing (jit, FX, ONNX, torch.export,
    compile) sees the plain convolution.  ``use_small_map_convs`` / ``small_map_convs`` put a model's
    convs in this class (same parameters and state names), ``plain_convs`` takes them back.
    ``SmallMapConv2d.crop = False`` runs the plain convolution everywhere
    (``benchmarks/train_throughput.py --compare-small-map-convs``)."""

    crop = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p = self.kernel_size, self.stride, self.padding
        if (self.crop and k != (1, 1) and self.padding_mode == "zeros" and self.dilation == (1, 1)
                and isinstance(p, tuple) and not _tracing() and x.device.type == "cpu" and x.dim() == 4):
            h = _live_taps(x.shape[-2], k[0], s[0], p[0])
            w = _live_taps(x.shape[-1], k[1], s[1], p[1])
            if h or w:
                h = h or (0, k[0], p[0], p[0])
                w = w or (0, k[1], p[1], p[1])
                weight = self.weight[:, :, h[0]:h[1], w[0]:w[1]]
                if h[2] == h[3] and w[2] == w[3]:
                    return nn.functional.conv2d(x, weight, self.bias, s, (h[2], w[2]), 1, self.groups)
                x = nn.functional.pad(x, (w[2], w[3], h[2], h[3]))
                return nn.functional.conv2d(x, weight, self.bias, s, 0, 1, self.groups)
        return self._conv_forward(x, self.weight, self.bias)


def _tracing() -> bool:
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting() or is_fx_symbolic_tracing())


def use_small_map_convs(model: nn.Module) -> nn.Module:
    """Every plain ``nn.Conv2d`` of ``model`` becomes a ``SmallMapConv2d``, in place (parameters,
    state names and results unchanged).  For modules that stay inside the evaluators (the supernet's
    subnet templates, a subnet extracted to be scored); ``small_map_convs`` for a model that is
    handed back."""
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = SmallMapConv2d
    return model


def plain_convs(model: nn.Module) -> nn.Module:
    """``use_small_map_convs`` undone: every ``SmallMapConv2d`` of ``model`` is an ``nn.Conv2d`` again."""
    for m in model.modules():
        if type(m) is SmallMapConv2d:
            m.__class__ = nn.Conv2d
    return model


@contextmanager
def small_map_convs(*models: nn.Module):
    """Within the block the models' convs are ``SmallMapConv2d``; after it (also on an error) every
    ``SmallMapConv2d`` in them is an ``nn.Conv2d`` again, so a trained model is handed back with plain
    convs (what FX, TorchScript and eager quantization expect)."""
    for m in models:
        use_small_map_convs(m)
    try:
        yield models
    finally:
        for m in models:
            plain_convs(m)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv / linear weights only (ndim > 1), not on BN or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    """Linear warm-up then cosine decay to zero (step counts from 0)."""
    warm = int(total * warmup)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, t)))


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


def epoch_indices(n: int, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """This epoch's training images: a fresh random subset of ``images_per_epoch``."""
    return torch.randperm(n, generator=generator)[: min(recipe.images_per_epoch, n)]


def train_model(model: nn.Module, data, recipe: Recipe = Recipe(), seed: int = 0,
                progress: bool | Callable = False, desc: str = "train") -> dict:
    """Train ``model`` in place on ``data.train`` with ``recipe``; returns stats (loss, seconds).
    Its convs run as ``SmallMapConv2d`` meanwhile and are ``nn.Conv2d`` again when it returns."""
    to_channels_last(model)
    with small_map_convs(model):
        return _train_model(model, data, recipe, seed, progress, desc)


def _train_model(model: nn.Module, data, recipe: Recipe, seed: int, progress: bool | Callable, desc: str) -> dict:
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    model.train()
    dev = model_device(model)
    opt = make_optimizer(param_groups(model, recipe.weight_decay), recipe)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    total = recipe.steps(len(data.train))
    bar = _bar(total, desc, progress)
    step, t0 = 0, time.perf_counter()
    losses = torch.empty(total, device=dev)     # read once at the end: no host sync per step on a GPU
    for _ in range(recipe.epochs):
        idx = epoch_indices(len(data.train), recipe, g)
        for start in range(0, len(idx), recipe.batch_size):
            x, y = data.train.batch(idx[start:start + recipe.batch_size])
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, recipe.lr, recipe.warmup)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[step] = loss.detach()
            step += 1
            if bar is not None:
                bar.update(1)
                if dev.type == "cpu" or step % 20 == 0 or step == total:
                    bar.set_postfix(loss=f"{float(losses[step - 1]):.3f}")
    if bar is not None:
        bar.close()
    losses = losses[:step].tolist()
    if not all(math.isfinite(v) for v in losses[-5:]):
        raise RecipeError(f"training diverged (loss {losses[-1]}); allowed: a smaller recipe.lr than {recipe.lr}")
    if recipe.precise_bn:
        recalibrate_bn(model, data.train, batches=recipe.precise_bn, batch_size=256, seed=seed + 1)
    return {"steps": step, "seconds": time.perf_counter() - t0,
            "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:]))}


@torch.no_grad()
def accuracy(model: nn.Module, split, limit: int | None = None, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on the first ``limit`` images of ``split``."""
    was = model.training
    model.eval()
    dev = model_device(model)
    correct = torch.zeros((), dtype=torch.long, device=dev)
    seen = 0
    for x, y in split.batches(batch_size, limit=limit):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        correct += (model(x).argmax(1) == y).sum()
        seen += len(y)
    correct = int(correct)
    model.train(was)
    return correct / max(1, seen)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, split, batches: int = 4, batch_size: int = 256, seed: int = 0) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on
    ``batches`` random training batches: what a subnet needs after inheriting supernet weights."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was = model.training
    model.train()
    g = torch.Generator().manual_seed(int(seed))
    dev = model_device(model)
    try:
        for x, _ in split.batches(batch_size, shuffle=True, generator=g, limit=batches * batch_size):
            model(x.to(dev, non_blocking=True))
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was)


def train_arch(arch, data, recipe: Recipe = Recipe(), seed: int = 0, progress: bool | Callable = False,
               split: str = "val", device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build ``arch`` for the data set's classes, train it with ``recipe`` on ``device``, score it.

    Returns (model, stats) with stats["accuracy"] on ``split`` ("val" or "test").  The weights are
    initialised on the CPU from ``seed`` whatever the device, so a GPU run starts from the CPU run's
    weights and sees the same batches; the arithmetic's rounding differs, and so do dropout masks (drawn
    from the device's generator)."""
    if split not in ("val", "test"):
        raise field_error(RecipeError, "split", split, ["val", "test"])
    torch.manual_seed(int(seed))
    model = arch.build(num_classes=data.num_classes).to(device)
    stats = train_model(model, data, recipe, seed=seed, progress=progress, desc=f"train {arch.to_string()[:40]}")
    t0 = time.perf_counter()
    with small_map_convs(model):
        stats["accuracy"] = accuracy(model, getattr(data, split), limit=recipe.eval_images)
    stats["eval_seconds"] = time.perf_counter() - t0
    return model, stats


def _bar(total: int, desc: str, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


__all__ = ["Recipe", "RecipeError", "SmallMapConv2d", "accuracy", "lr_at", "model_device", "param_groups",
           "plain_convs", "recalibrate_bn", "small_map_convs", "to_channels_last", "train_arch", "train_model",
           "use_small_map_convs"]
