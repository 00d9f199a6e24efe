"""Training throughput (images/s) on whatever device this machine has: supernet sandwich training and
stand-alone training, the two jobs that docs/scale.md spreads over GPUs.

    python benchmarks/train_throughput.py                        # CUDA if present (224x224), else CPU (32x32)
    python benchmarks/train_throughput.py --compare-memory-format  # NCHW vs channels-last, and their ratio
    python benchmarks/train_throughput.py --compare-small-map-convs --steps 10  # plain vs cropped convs, ratio
    python benchmarks/train_throughput.py --resolution 224 --batch-size 256 --amp   # on a GPU
    torchrun --nproc_per_node 8 benchmarks/train_throughput.py --amp  # per-GPU and total

* ``supernet``: one sandwich step of the supernet of ``--space`` (default mobile-unified, its reduced-scale
  scope; the envelope from ``--envelope-samples`` samples): largest + smallest + ``n_random`` random subnets
  in one forward, one backward, SGD step (``searchers.distributed.sharded_backward``, DDP under torchrun).
  images/s counts each image once (every image goes through all the step's subnets).
* ``standalone``: ``--arch`` (default mobilenet_v3_small) built for ``--classes`` classes, the trainer's step
  (``searchers.trainer.Trainer._train_step``: forward, label-smoothed loss, backward, SGD; AMP on CUDA
  when asked).
Both run channels-last (NHWC) by default, as the trainers do (``--no-channels-last``: NCHW);
``--compare-memory-format`` times each job both ways in one run and prints the speed-up.
Both use ``searchers.training.SmallMapConv2d`` (a conv that leaves out the kernel taps which meet only
zero padding, as the trainers do); ``--compare-small-map-convs`` times each job with the plain convolution
and with it, in one run, and prints the speed-up.

On a CPU the wall-clock figure depends on what else runs; the images per CPU-second of the process
(``time.process_time``) are printed beside it.  Synthetic data (random images, labels) so the figure is the model's, not the disk's; ``--warmup`` steps
are not timed; CUDA is synchronised around the timed steps.  Prints one line per job, the device, the
torch threads and the date; ``--json PATH`` also writes them.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(step, steps: int, warmup: int, dev) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``steps`` steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(dev)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    _sync(dev)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_standalone(args, d) -> dict:
    import torch

    from searchers.train import resolve_arch
    from searchers.trainer import Trainer, TrainRecipe
    from searchers.training import use_small_map_convs

    arch, label = resolve_arch(args.arch)
    torch.manual_seed(0)
    model = arch.build(num_classes=args.classes)

    class _Data:                                       # the trainer only needs a key and a train split here
        key, train = "synthetic", None

    tr = Trainer.__new__(Trainer)                      # the trainer's step without its data set
    tr.dist, tr.accum, tr.seed, tr.step = d, 1, 0, 0
    tr.device = d.device
    tr.amp = bool(args.amp and d.device.type == "cuda")
    tr.channels_last = bool(args.channels_last)
    tr.model = use_small_map_convs(model.to(d.device))    # as Trainer.run
    if tr.channels_last:
        tr.model = tr.model.to(memory_format=torch.channels_last)
    from searchers.distributed import wrap
    from searchers.trainer import make_optimizer

    tr.ddp = wrap(tr.model, d) if d.active else None
    tr.opt = make_optimizer(tr.model, TrainRecipe(batch_size=args.batch_size))
    tr.scaler = torch.amp.GradScaler("cuda") if tr.amp else None
    per = args.batch_size // d.world
    x = torch.randn(per, 3, args.resolution, args.resolution, device=d.device)
    if tr.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (per,), device=d.device)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    sec, cpu = _time(lambda: tr._train_step(x, y, loss_fn), args.steps, args.warmup, d.device)
    return {"job": "standalone", "arch": label, "params": sum(p.numel() for p in model.parameters()),
            "images_per_s": args.batch_size * args.steps / sec, "step_s": sec / args.steps,
            "images_per_cpu_s": args.batch_size * args.steps / cpu}


def bench_supernet(args, d) -> dict:
    import torch

    from search_space.space import load_space
    from searchers import supernet as S
    from searchers.distributed import SandwichStep, sandwich_archs, sharded_backward, wrap

    space = load_space(args.space)
    recipe = S.default_recipe(space, envelope_samples=args.envelope_samples, batch_size=args.batch_size)
    t0 = time.perf_counter()
    net = S.build_supernet(space, args.classes, recipe, 0, (args.resolution, args.resolution)).to(d.device).train()
    build_s = time.perf_counter() - t0
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    ddp = wrap(SandwichStep(net, recipe), d, find_unused=True)
    rng = random.Random(0)
    per = args.batch_size // d.world
    x = torch.randn(per, 3, args.resolution, args.resolution, device=d.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (per,), device=d.device)
    amp = bool(args.amp and d.device.type == "cuda")
    state = {"step": 0}

    def step():
        archs = sandwich_archs(net, space, rng, recipe)

        def fn(xs, ys):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                return ddp(xs, ys, archs)
        opt.zero_grad(set_to_none=True)
        sharded_backward(fn, x, y, d, 1, 0, state["step"], net, ddp if d.active else None)
        opt.step()
        state["step"] += 1

    sec, cpu = _time(step, args.steps, args.warmup, d.device)
    return {"job": "supernet", "space": space.name, "params": net.num_params(), "subnets_per_step": 2 + recipe.n_random,
            "images_per_s": args.batch_size * args.steps / sec, "step_s": sec / args.steps,
            "images_per_cpu_s": args.batch_size * args.steps / cpu,
            "build_s": round(build_s, 1)}


def main(argv=None) -> int:
    import torch

    from searchers.distributed import init_from_env, shutdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", default="supernet,standalone")
    ap.add_argument("--arch", default="mobilenet_v3_small")
    ap.add_argument("--space", default="mobile-unified")
    ap.add_argument("--classes", type=int, default=None, help="default: 1000 at 224, else 10")
    ap.add_argument("--resolution", type=int, default=None, help="default: 224 on CUDA, 32 on CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="global batch (default: 256 on CUDA, 64 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on CUDA, 5 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 on CUDA, 2 on CPU)")
    ap.add_argument("--envelope-samples", type=int, default=200)
    ap.add_argument("--amp", action="store_true", help="autocast (float16 stand-alone, bfloat16 supernet) on CUDA")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="NHWC memory format (default: on, as the trainers)")
    ap.add_argument("--compare-memory-format", action="store_true",
                    help="time every job in NCHW and in channels-last, print the speed-up")
    ap.add_argument("--compare-small-map-convs", action="store_true",
                    help="time every job with plain convs and with SmallMapConv2d, print the speed-up")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.compare_memory_format and args.compare_small_map_convs:
        ap.error("--compare-memory-format and --compare-small-map-convs: one at a time")
    d = init_from_env()
    cuda = d.device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True
    args.resolution = args.resolution or (224 if cuda else 32)
    args.classes = args.classes or (1000 if args.resolution >= 128 else 10)
    args.batch_size = args.batch_size or (256 if cuda else 64)
    args.steps = args.steps or (50 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    dev_name = torch.cuda.get_device_name(d.device) if cuda else "cpu"
    from searchers.card import machine
    from searchers.training import SmallMapConv2d

    mach = machine()
    rows = []
    try:
        for job in [j.strip() for j in args.jobs.split(",") if j.strip()]:
            fn = {"supernet": bench_supernet, "standalone": bench_standalone}.get(job)
            if fn is None:
                raise SystemExit(f"error: --jobs: got {job}; allowed: supernet, standalone")
            for cl in ((False, True) if args.compare_memory_format else (args.channels_last,)):
                for crop in ((False, True) if args.compare_small_map_convs else (True,)):
                    args.channels_last, SmallMapConv2d.crop = cl, crop
                    rows.append({**fn(args, d), "channels_last": cl, "small_map_convs": crop})
    finally:
        SmallMapConv2d.crop = True
        shutdown(d)
    if not d.is_main:
        return 0
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"device: {dev_name} x {d.world} process(es); CPU {mach.get('cpu')} ({mach.get('cores')} cores); "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {date}")
    print(f"input {args.resolution}x{args.resolution}, {args.classes} classes, global batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}; amp {args.amp and cuda}")
    for r in rows:
        what = r.get("arch") or f"{r['space']} supernet, {r['subnets_per_step']} subnets/step"
        what += ", NHWC" if r["channels_last"] else ", NCHW"
        what += "" if r["small_map_convs"] else ", plain convs"
        print(f"{r['job']:<11} {what:<54} {r['params']:>12,} params  {r['images_per_s']:>9.1f} images/s  "
              f"({r['step_s'] * 1000:.0f} ms/step)" + ("" if cuda else
              f"; {r['images_per_cpu_s']:.1f} images per CPU-second of this process"))
    if args.compare_small_map_convs:
        for plain, small in zip(rows[::2], rows[1::2]):
            print(f"{plain['job']:<11} small-map convs / plain ({'NHWC' if plain['channels_last'] else 'NCHW'}): "
                  f"{small['images_per_s'] / plain['images_per_s']:.2f}x images/s "
                  f"({small['images_per_cpu_s'] / plain['images_per_cpu_s']:.2f}x per CPU-second)")
    elif args.compare_memory_format:
        for nchw, nhwc in zip(rows[::2], rows[1::2]):
            print(f"{nchw['job']:<11} channels-last / NCHW: {nhwc['images_per_s'] / nchw['images_per_s']:.2f}x "
                  f"images/s ({nhwc['images_per_cpu_s'] / nchw['images_per_cpu_s']:.2f}x per CPU-second)")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": date, "device": dev_name, "world": d.world, "machine": mach,
                                               "args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
