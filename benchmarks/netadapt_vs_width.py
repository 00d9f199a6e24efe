"""NetAdapt vs a uniform width multiplier at the same predicted latency (issue 6's goal).

    python benchmarks/netadapt_vs_width.py                 # ~0.5-1 h on 2 shared CPU cores
    python benchmarks/netadapt_vs_width.py --quick         # a smoke run (minutes, meaningless numbers)

1. The seed is MobileNetV3-Large; the budget is ``--fraction`` (0.75) of its predicted ``--target``
   (pixel-cpu) latency at 224.
2. Width baseline: the largest width multiplier w (a 0.005 grid) whose zoo-style MobileNetV3-Large
   (the zoo's own rounding rule: channels make_divisible(c * w, 8), SE and mid channels re-derived)
   is predicted within the budget.
3. NetAdapt: ``searchers.netadapt`` from the briefly pre-trained seed down to the budget (one run, seed 0,
   short settings), giving an arch within the budget.
4. Both archs are trained from scratch with the same recipe (``searchers.training.Recipe``: SGD,
   cosine, label smoothing, ``--epochs`` x ``--images`` Fashion-MNIST images at 32x32) for 3 seeds and
   scored on the first ``--test-images`` test images; the medians are compared.  The NetAdapt run's own
   network (inherited weights + long-term fine-tune) is reported too.

Prints both, the medians, the machine (CPU model) and the date; writes ``--out``/result.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def width_arch(width: float):
    """MobileNetV3-Large at any width multiplier, by the zoo's data and rounding rule."""
    from search_space import zoo

    return zoo.scaled("mobilenet_v3_large", width)


def widest_within(model, budget_ms: float, resolution: int = 224, lo: float = 0.2, hi: float = 1.0,
                  step: float = 0.005) -> tuple[float, object, float]:
    best = None
    w = hi
    while w >= lo - 1e-9:
        a = width_arch(round(w, 4))
        ms = float(model.predict(a, resolution=resolution))
        if ms <= budget_ms:
            best = (round(w, 4), a, ms)
            break
        w -= step
    if best is None:
        raise SystemExit(f"no width multiplier >= {lo} meets {budget_ms:.2f} ms")
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="pixel-cpu")
    ap.add_argument("--fraction", type=float, default=0.75)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="from-scratch recipe epochs (both nets)")
    ap.add_argument("--images", type=int, default=5000, help="images per epoch (both nets)")
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--out", default="runs/bench-netadapt-vs-width")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the script runs")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import latency_models
    from search_space import zoo
    from searchers.data import load_dataset
    from searchers.netadapt import NetAdaptSettings, netadapt
    from searchers.outputs import machine
    from searchers.training import Recipe, accuracy, train_arch

    if args.quick:
        args.seeds, args.epochs, args.images, args.test_images = 1, 1, 256, 256
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = latency_models.load(args.target)
    seed_arch = zoo.get("mobilenet_v3_large")
    seed_ms = float(model.predict(seed_arch))
    budget = args.fraction * seed_ms
    print(f"seed mobilenet_v3_large: {seed_ms:.2f} ms on {args.target}; budget {args.fraction} x = {budget:.2f} ms",
          flush=True)
    w, w_arch, w_ms = widest_within(model, budget)
    print(f"width baseline: mobilenet_v3_large x{w:g}: {w_ms:.2f} ms", flush=True)

    s = NetAdaptSettings(arch="mobilenet_v3_large", target=args.target, budget_ms=round(budget, 4), seed=0,
                         initial_ratio=0.05, decay=0.98, metric="ratio", pretrain_epochs=args.epochs,
                         pretrain_images=args.images, short_steps=5, short_batch=32, eval_images=300,
                         long_epochs=1, long_images=args.images, out=str(out / "netadapt"), resume=False,
                         export_onnx=False)
    if args.quick:
        s.pretrain_epochs, s.pretrain_images, s.short_steps, s.eval_images, s.long_images = 1, 256, 1, 64, 128
        s.initial_ratio = 0.3
    state = out / "netadapt" / "checkpoint" / "state.json"
    s.resume = state.is_file()
    t0 = time.perf_counter()
    na = netadapt(s, progress=False)
    na_s = time.perf_counter() - t0
    from search_space.arch import Arch

    na_arch = Arch.from_string(na["arch"])
    print(f"netadapt: {na['iterations']} iterations, {na_s:.0f} s: {na['latency_ms']:.2f} ms, "
          f"fine-tuned val accuracy {na['accuracy']:.4f}", flush=True)

    data = load_dataset("fashion-mnist", seed=0)
    na_model = na_arch.build(num_classes=data.num_classes)
    na_model.load_state_dict(torch.load(out / "netadapt" / "best" / "weights.pt", weights_only=True))
    na_inherited_test = accuracy(na_model, data.test, limit=args.test_images)

    recipe = Recipe(epochs=args.epochs, images_per_epoch=args.images, eval_images=args.test_images)
    rows = []
    for seed in range(args.seeds):
        r = {"seed": seed}
        for name, arch in (("width", w_arch), ("netadapt", na_arch)):
            t0 = time.perf_counter()
            _, stats = train_arch(arch, data, recipe, seed=seed, split="test")
            r[name] = stats["accuracy"]
            r[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        rows.append(r)
        print(f"seed {seed}: width x{w:g} {r['width']:.4f}, netadapt {r['netadapt']:.4f} "
              f"({r['width_s']:.0f} s / {r['netadapt_s']:.0f} s)", flush=True)
    med_w = statistics.median(r["width"] for r in rows)
    med_n = statistics.median(r["netadapt"] for r in rows)
    from search_space.profile import profile

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "target": args.target,
        "seed_latency_ms": seed_ms,
        "budget_ms": budget,
        "width": {"multiplier": w, "latency_ms": w_ms, "arch": w_arch.to_string(),
                  "params": profile(w_arch, 224, 10)["params"], "macs": profile(w_arch)["macs"]},
        "netadapt": {"latency_ms": na["latency_ms"], "arch": na["arch"], "iterations": na["iterations"],
                     "params": profile(na_arch, 224, 10)["params"], "macs": profile(na_arch)["macs"],
                     "run_s": round(na_s, 1), "inherited_finetuned_test_accuracy": na_inherited_test,
                     "settings": {k: v for k, v in na["settings"].items() if k not in ("out",)}},
        "recipe": recipe.to_dict(),
        "test_images": args.test_images,
        "per_seed": rows,
        "median_width": med_w,
        "median_netadapt": med_n,
        "netadapt_at_least_as_accurate": med_n >= med_w,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "quick": args.quick,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print()
    print(f"machine: {result['machine']}; date: {result['date']}")
    print(f"budget: {budget:.2f} ms on {args.target} (0.75 x MobileNetV3-Large {seed_ms:.2f} ms)")
    print(f"  width x{w:g}:  {w_ms:.2f} ms, {result['width']['macs'] / 1e6:.1f}M MACs, "
          f"median test accuracy {med_w:.4f} over {args.seeds} seeds")
    print(f"  NetAdapt:     {na['latency_ms']:.2f} ms, {result['netadapt']['macs'] / 1e6:.1f}M MACs, "
          f"median test accuracy {med_n:.4f} over {args.seeds} seeds (same recipe, from scratch)")
    print(f"  NetAdapt's own network (pruned weights + long-term fine-tune): test accuracy {na_inherited_test:.4f}")
    print(f"  goal (NetAdapt >= width): {'met' if med_n >= med_w else 'NOT met'}; wall {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
