"""Training on several processes / machines: ``torch.distributed`` DistributedDataParallel launched
by ``torchrun`` (NCCL on GPUs, gloo on CPUs).  See docs/scale.md.

    torchrun --nproc_per_node 2 -m searchers.distributed supernet --space mobile-unified --dataset fashion-mnist
    torchrun --nproc_per_node 2 -m searchers.distributed train --arch mobilenet_v3_small --dataset fashion-mnist
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m searchers.distributed ...

``train`` is ``python -m searchers.train`` (every flag of it) run on every rank: the model is wrapped
in DDP, each rank trains on its share of every global batch, rank 0 alone logs, checkpoints, scores the
test split, exports and writes the card.  ``supernet`` trains the weight-sharing supernet of a space
with the sandwich rule of ``searchers.supernet`` (largest, smallest and ``n_random`` random subnets per
step), all subnets of a step in one forward (``sandwich_loss``) inside DDP with
``find_unused_parameters=True`` (a step's subnets leave parts of the envelope unused); every rank draws
the same subnets from the same seeded ``random.Random``.  The result is the ``supernet.pt`` the supernet
evaluator and ``searchers.train --init supernet --supernet PATH`` load.

How a global batch is split (the one rule, ``sharded_backward``)
    The global batch (``--batch-size``; the learning rate belongs to it, not to a rank) is cut into
    ``world x accum`` equal shards; rank r runs shards ``r*accum .. r*accum+accum-1`` (``accum`` > 1:
    gradient accumulation, DDP's all-reduce only after the last).  The gradient is the mean over the
    shards of each shard's mean-loss gradient -- the same for any (world, accum) with the same product.
    BatchNorm: a rank normalises with its shard's statistics (CUDA + NCCL: ``--sync-bn`` converts to
    SyncBatchNorm; gloo on CPUs has no SyncBatchNorm), so the 1-process run equal to an N-process run is
    the same global batch cut into N micro-batches of the same images (``--accum N``, "ghost batch
    norm").  The running statistics: every shard starts from the step's statistics and the mean of the
    shards' updates is kept (averaged across ranks every step) -- so 1 x accum N == N processes for the
    running statistics too.  Dropout: each shard draws its masks from a generator seeded by (seed, step,
    shard), not from the process's RNG.  tests/test_distributed.py checks all of this on 2 gloo
    processes against 1 process.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from search_space.errors import EdgenasError, cli_entry, field_error


class DistError(EdgenasError, ValueError):
    """A distributed run cannot start (bad world size, batch not divisible, backend missing)."""


# --------------------------------------------------------------------------------------------
# Process group
# --------------------------------------------------------------------------------------------
@dataclass
class Dist:
    """This process's place: rank, world size, local rank, backend ('' when not distributed) and device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def broadcast_object(self, obj):
        """``obj`` of rank 0 on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_mean(self, t: torch.Tensor) -> torch.Tensor:
        """In place: the mean of ``t`` over the ranks."""
        if self.active:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
            t.div_(self.world)
        return t


SINGLE = Dist()
BACKENDS = ("nccl", "gloo")


def init_from_env(backend: str | None = None, device: str | None = None) -> Dist:
    """The ``Dist`` of this process from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT); initialises the process group when WORLD_SIZE > 1.  Backend: NCCL when CUDA is
    available, else gloo (or ``backend``).  Without torchrun: a single process on ``device`` (default:
    CUDA if available, else CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if device not in (None, "cpu", "cuda"):
        raise field_error(DistError, "--device", device, ["cpu", "cuda"])
    if backend is not None and backend not in BACKENDS:  # checked with or without torchrun
        raise field_error(DistError, "--backend", backend, BACKENDS)
    if device == "cuda" and not torch.cuda.is_available():
        raise DistError("--device: got cuda but no CUDA device is visible; allowed: cpu")
    dev = torch.device("cuda", local % max(1, torch.cuda.device_count())) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if world <= 1:
        return Dist(0, 1, 0, "", dev)
    backend = backend or ("nccl" if cuda else "gloo")
    if backend not in ("nccl", "gloo"):
        raise field_error(DistError, "--backend", backend, ["nccl", "gloo"])
    if not torch.distributed.is_available():
        raise DistError("torch.distributed is not available in this torch build; allowed: a torch with it")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world,
                                             device_id=dev if backend == "nccl" else None)
    return Dist(rank, world, local, backend, dev)


def shutdown(d: Dist) -> None:
    if d.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap(model: nn.Module, d: Dist, find_unused: bool = False, sync_bn: bool = False) -> nn.Module:
    """``model`` in DDP when distributed (buffers kept in step by ``sharded_backward``, not broadcast);
    itself otherwise.  ``sync_bn`` (CUDA only): BatchNorm -> SyncBatchNorm first."""
    if not d.active:
        return model
    if sync_bn and d.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [d.device.index] if d.device.type == "cuda" else None
    import inspect

    # buffers: synced at init (same on every rank anyway), then kept in step by sharded_backward
    sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
            else {"broadcast_buffers": False})
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused, **sync)


# --------------------------------------------------------------------------------------------
# The one rule for cutting a global batch
# --------------------------------------------------------------------------------------------
def shard_size(global_batch: int, d: Dist, accum: int, what: str = "--batch-size") -> int:
    shards = d.world * accum
    if global_batch % shards:
        raise DistError(f"{what}: got {global_batch}, not divisible by {d.world} process(es) x {accum} "
                        f"accumulation step(s); allowed: a multiple of {shards}")
    return global_batch // shards


def rank_slice(n: int, d: Dist, accum: int) -> slice:
    """The part of a global batch of ``n`` this rank runs (its ``accum`` shards, contiguous)."""
    b = n // (d.world * accum)
    return slice(d.rank * accum * b, (d.rank + 1) * accum * b)


def shard_seed(seed: int, step: int, shard: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 9_973 + int(shard)) % (2 ** 63)


def sharded_backward(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                     y: torch.Tensor, d: Dist, accum: int, seed: int, step: int, module: nn.Module,
                     ddp: nn.Module | None = None, scaler=None) -> float:
    """Backward of this rank's part of a global batch (``x``, ``y``: the rank's ``accum`` shards,
    contiguous), gradients accumulated into ``module``'s parameters (DDP averages them over ranks on the
    last shard).  Returns the mean loss of this rank's shards (not yet averaged over ranks).
    With more than one shard in all: each shard starts from the step's BatchNorm running statistics, the
    mean of the shards' updated statistics is kept (and averaged over ranks), and dropout is seeded per
    shard by (seed, step, shard).  See the module docstring."""
    shards = d.world * accum
    b = len(x) // accum
    bufs = list(module.buffers())
    start = [t.detach().clone() for t in bufs] if shards > 1 else None
    acc = [torch.zeros_like(t) for t in bufs if t.dtype.is_floating_point] if shards > 1 else None
    total = 0.0
    for j in range(accum):
        s = d.rank * accum + j
        if shards > 1:
            with torch.no_grad():
                for t, t0 in zip(bufs, start):
                    t.copy_(t0)
            torch.manual_seed(shard_seed(seed, step, s))
        sync = contextlib.nullcontext() if ddp is None or j == accum - 1 else ddp.no_sync()
        with sync:
            loss = loss_fn(x[j * b:(j + 1) * b], y[j * b:(j + 1) * b]) / accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += float(loss.detach())
        if shards > 1:
            with torch.no_grad():
                for a, t in zip(acc, (t for t in bufs if t.dtype.is_floating_point)):
                    a.add_(t)
    if shards > 1:
        with torch.no_grad():
            for a, t in zip(acc, (t for t in bufs if t.dtype.is_floating_point)):
                t.copy_(d.all_mean(a.div_(accum)))
    return total


# --------------------------------------------------------------------------------------------
# Supernet under DDP
# --------------------------------------------------------------------------------------------
def _sandwich_fallback(net, images, labels, archs, recipe) -> torch.Tensor:
    """One forward of all subnets of a sandwich step (as ``Supernet`` training does it): cross-entropy
    for the first (largest) arch, in-place distillation from it for the others (``recipe.distill``)."""
    ce = nn.functional.cross_entropy
    soft, total = None, None
    for k, a in enumerate(archs):
        logits = net(images, a)
        if k == 0 or not recipe.distill:
            loss = ce(logits, labels, label_smoothing=recipe.label_smoothing)
            if k == 0:
                soft = logits.detach().softmax(1)
        else:
            loss = torch.sum(-soft * torch.log_softmax(logits, 1), 1).mean()
        total = loss if total is None else total + loss
    return total


def sandwich_loss(net, images, labels, archs, recipe) -> torch.Tensor:
    """``searchers.supernet.sandwich_loss`` when it exists, else the equivalent above."""
    from searchers import supernet as S

    fn = getattr(S, "sandwich_loss", None)
    return fn(net, images, labels, archs, recipe) if fn is not None else _sandwich_fallback(net, images, labels,
                                                                                             archs, recipe)


def sandwich_archs(net, space, rng: random.Random, recipe) -> list:
    """The step's subnets: largest, smallest, ``recipe.n_random`` random ones (same on every rank: same rng)."""
    from searchers import supernet as S

    fn = getattr(S, "sandwich_archs", None)
    if fn is not None:
        try:
            return list(fn(net, space, rng))
        except TypeError:
            pass
    return [net.largest, net.smallest] + [net.sample(space, rng) for _ in range(recipe.n_random)]


class SandwichStep(nn.Module):
    """A module whose forward is a sandwich step's loss, so DDP can wrap it."""

    def __init__(self, net, recipe):
        super().__init__()
        self.net, self.recipe = net, recipe

    def forward(self, images, labels, archs):
        return sandwich_loss(self.net, images, labels, archs, self.recipe)


def train_supernet_ddp(space, data, recipe, seed: int = 0, out_dir: Path | None = None, d: Dist = SINGLE,
                       accum: int = 1, resume: bool = True, progress: bool = True, log=None,
                       stop_after_steps: int | None = None):
    """``searchers.supernet.train_supernet`` on ``d.world`` processes: same recipe, same images per step
    (the recipe's ``batch_size`` is the global batch, cut by ``sharded_backward``), same archs per step,
    same checkpoint files (rank 0 writes; ``supernet.pt`` loads with ``load_supernet``)."""
    from searchers import supernet as S
    from searchers.training import lr_at, param_groups

    log = log if (log is not None and d.is_main) else (lambda m: None)
    shard_size(recipe.batch_size, d, accum, "recipe.batch_size")
    out_dir = Path(out_dir or S.supernet_dir(space, data, recipe, seed))
    ckpt_path = out_dir / "checkpoint.pt"
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    d.barrier()
    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net = S.Supernet.from_meta(state["meta"])
        net.load_state_dict(state["model"])
    else:
        net = S.build_supernet(space, data.num_classes, recipe, seed, data.resolution)
    net.to(d.device).train()
    step = state["step"] if state else 0
    opt = torch.optim.SGD(param_groups(net, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.momentum > 0)
    rng = random.Random(seed)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
    else:
        torch.manual_seed(int(seed))
    step_module = SandwichStep(net, recipe)
    ddp = wrap(step_module, d, find_unused=True)
    total, t0 = recipe.total_steps, time.perf_counter()
    seconds0 = (state or {}).get("seconds", 0.0)
    bar = None
    if progress and d.is_main:
        from tqdm.auto import tqdm

        # the bar counts the steps that train (S.real_steps_done: a recipe may ask more images than the split has)
        bar = tqdm(total=S.real_steps_done(total, recipe, len(data.train), d.world * accum),
                   initial=S.real_steps_done(step, recipe, len(data.train), d.world * accum),
                   desc=f"supernet {net.space_name} x{d.world}", dynamic_ncols=True)
    if d.is_main:
        S.say(S.overshoot_message(recipe, len(data.train), d.world * accum), bar=bar)
    idx, done = None, 0
    while step < total and (stop_after_steps is None or done < stop_after_steps):
        epoch, within = divmod(step, recipe.steps_per_epoch)
        if idx is None or within == 0 or state is not None:
            g = torch.Generator().manual_seed(int(seed) * 100003 + epoch)     # as train_supernet: exact resume
            idx = torch.randperm(len(data.train), generator=g)[: recipe.images_per_epoch]
            state = None
        batch = idx[within * recipe.batch_size:(within + 1) * recipe.batch_size]
        if len(batch) < d.world * accum:
            step += 1
            continue
        archs = sandwich_archs(net, space, rng, recipe)
        batch = batch[: len(batch) - len(batch) % (d.world * accum)]
        x, y = data.train.batch(batch[rank_slice(len(batch), d, accum)])
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        lr = lr_at(step, total, recipe.lr, recipe.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = sharded_backward(lambda xs, ys: ddp(xs, ys, archs), x, y, d, accum, seed, step, net,
                                ddp if d.active else None)
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        done += 1
        lt = d.all_mean(torch.tensor([loss], dtype=torch.float64))
        if not math.isfinite(float(lt)):
            raise S.SupernetError(f"supernet training diverged at step {step} (loss {float(lt)}); "
                                  f"allowed: a smaller recipe.lr than {recipe.lr}")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(lt):.3f}", lr=f"{lr:.3f}")
        if step % 10 == 0 or step == total:
            log(f"step {step}/{total} loss {float(lt):.4f} lr {lr:.4f} elapsed {time.perf_counter() - t0:.1f}s")
        if d.is_main and (step % recipe.checkpoint_every == 0 or step == total or
                          (stop_after_steps is not None and done >= stop_after_steps)):
            S._atomic_save({"meta": net.meta(), "model": _cpu(net.state_dict()), "optimizer": opt.state_dict(),
                            "step": step, "rng": rng.getstate(), "gen": torch.Generator().get_state(),
                            "torch_rng": torch.get_rng_state(), "recipe": asdict(recipe), "world": d.world,
                            "seconds": seconds0 + time.perf_counter() - t0}, ckpt_path)
    if bar is not None:
        bar.close()
    seconds = seconds0 + time.perf_counter() - t0
    if step >= total and d.is_main:
        S._atomic_save({"meta": net.meta(), "model": _cpu(net.state_dict()), "recipe": asdict(recipe),
                        "seed": seed, "data": data.key, "space": S.space_fingerprint(space),
                        "train_seconds": seconds, "world": d.world}, out_dir / "supernet.pt")
        (out_dir / "info.json").write_text(json.dumps(
            {"space": net.space_name, "data": data.key, "recipe": asdict(recipe), "seed": seed, "world": d.world,
             "train_seconds": round(seconds, 1), "steps": total,
             "real_steps": S.real_steps_done(total, recipe, len(data.train), d.world * accum),
             "images_seen": S.images_seen(recipe, len(data.train), d.world * accum),
             "params": net.num_params(),
             "largest": net.meta()["largest"], "smallest": net.meta()["smallest"]}, indent=1))
    d.barrier()
    net.train_seconds = seconds
    return net


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _supernet_parser() -> argparse.ArgumentParser:
    from search_space.errors import OneLineParser

    p = OneLineParser(prog="torchrun ... -m searchers.distributed supernet",
                      description="Train the supernet of a space on every torchrun process (DDP).")
    a = p.add_argument
    a("--space", default="mobile-unified")
    a("--dataset", default="fashion-mnist")
    a("--seed", type=int, default=0)
    a("--data-seed", type=int, default=None, help="seed of the data set's train/val split (default: --seed); "
      "another --seed with --data-seed 0 (and --out) is another training run scored on the same validation images")
    a("--epochs", type=int, default=None)
    a("--images-per-epoch", type=int, default=None)
    a("--batch-size", type=int, default=None, help="global batch (all processes together)")
    a("--lr", type=float, default=None)
    a("--n-random", type=int, default=None)
    a("--envelope-samples", type=int, default=None, help="random archs that shape the envelope (recipe default)")
    a("--accum", type=int, default=1, help="gradient accumulation steps per process (default 1)")
    a("--backend", default=None, help="nccl or gloo (default: nccl with CUDA, else gloo)")
    a("--device", default=None, help="cpu or cuda (default: cuda when available)")
    a("--out", default=None, help="run folder (default: the supernet cache folder of $EDGENAS_CACHE)")
    a("--fresh", action="store_true", help="ignore a checkpoint in the run folder")
    a("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    a("--no-progress", action="store_true")
    return p


def supernet_main(argv: list[str]) -> int:
    args = _supernet_parser().parse_args(argv)
    if args.accum < 1:
        raise field_error(DistError, "--accum", args.accum, "an integer >= 1")
    if args.threads < 0:
        raise field_error(DistError, "--threads", args.threads, "an integer >= 0 (0: torch's default)")
    if args.threads:
        torch.set_num_threads(args.threads)
    from search_space.space import load_space
    from searchers import supernet as S
    from searchers.data import load_dataset

    space = load_space(args.space)
    changes = {k: getattr(args, k) for k in ("epochs", "images_per_epoch", "batch_size", "lr", "n_random",
                                                 "envelope_samples")
               if getattr(args, k) is not None}
    recipe = S.default_recipe(space, **changes)
    if args.data_seed is not None and args.data_seed != args.seed and not args.out:
        raise DistError(f"--data-seed: got {args.data_seed} with --seed {args.seed} but no --out; allowed: --out "
                        "DIR with it (the supernet cache is keyed by one seed)")
    data = load_dataset(args.dataset, seed=args.seed if args.data_seed is None else args.data_seed)
    d = init_from_env(args.backend, args.device)
    try:
        out = Path(args.out) if args.out else S.supernet_dir(space, data, recipe, args.seed)
        log = (lambda m: print(m, file=sys.stderr, flush=True))
        if d.is_main:
            log(f"supernet of {space.name}: {d.world} process(es), backend {d.backend or 'none'}, device {d.device}, "
                f"global batch {recipe.batch_size} ({shard_size(recipe.batch_size, d, args.accum)} per shard)")
        train_supernet_ddp(space, data, recipe, args.seed, out, d, args.accum, resume=not args.fresh,
                           progress=not args.no_progress, log=log)
        if d.is_main:
            print(f"wrote {out / 'supernet.pt'}")
    finally:
        shutdown(d)
    return 0


USAGE = ("usage: torchrun --nproc_per_node N -m searchers.distributed {supernet,train} [options]\n"
         "  supernet: train a space's supernet (--help for its options)\n"
         "  train:    python -m searchers.train on every process (--help for its options)")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv:
        raise DistError("command: missing; allowed: supernet, train (see python -m searchers.distributed --help)")
    cmd, rest = argv[0], argv[1:]
    if cmd == "supernet":
        return supernet_main(rest)
    if cmd == "train":
        from searchers import train as T

        return T.main.__wrapped__(rest)
    raise field_error(DistError, "command", cmd, ["supernet", "train"])


__all__ = ["Dist", "DistError", "SandwichStep", "init_from_env", "rank_slice", "sandwich_archs", "sandwich_loss",
           "shard_size", "sharded_backward", "shutdown", "train_supernet_ddp", "wrap"]

if __name__ == "__main__":
    sys.exit(main())
