"""The last mile on Fashion-MNIST (issue 13's goal): MobileNetV3-Small trained by
``python -m searchers.train`` with the default recipe and epochs, from scratch and from its
supernet-inherited weights, beside a LeNet-style baseline trained with the same recipe and budget.

    python benchmarks/last_mile.py --threads 1 --same-recipe   # the documented run (~15-25 min here)
    python benchmarks/last_mile.py --supernet PATH          # use an already trained supernet.pt
    python benchmarks/last_mile.py --quick                  # smoke run (minutes, meaningless numbers)

1. ``scratch``: ``python -m searchers.train --arch mobilenet_v3_small --init scratch`` (default recipe and
   epochs: 5 epochs on the whole 55,000-image training split; ``--train-images N``: a fixed random subset;
   the full val (5,000) and test (10,000) splits are scored).
2. ``supernet``: the same command with ``--init supernet`` (and the same default recipe): the cached default-recipe supernet of ``--supernet-space`` (default
   ``mobilenetv3``, which holds MobileNetV3-Small; mobile-unified's reduced-scale supernet does not), or
   ``--supernet PATH``.
3. ``supernet_same`` (``--same-recipe``): the same with ``--warmup-epochs 1`` spelled out (for a ``supernet`` run
   reused from a folder made with another warm-up; the plot labels each run with its warm-up).
4. ``supernet_short`` (``--short-epochs N``): the same command with ``--epochs N`` (fewer than the
   default): does a shorter schedule from the inherited weights reach the scratch run's accuracy?
5. ``--renorm bn[,all]``: ``supernet_renorm`` = the ``supernet`` run with ``--renorm`` (each BN-followed conv
   weight rescaled to a fresh init's norm, the same function), and with ``--short-epochs N``
   ``supernet_renorm_short`` (``--renorm --epochs N``); ``all``: ``supernet_renorm_all`` = ``--renorm all`` (the
   squeeze-excite convs too).
6. ``--perturb P``: ``supernet_perturb`` = the ``supernet`` run with ``--perturb P`` (shrink and perturb: conv /
   linear weights = (1-P) x inherited + P x the fresh init), and with ``--short-epochs N --perturb-short``
   ``supernet_perturb_short``.
7. ``--scratch-short`` (with ``--short-epochs N``): ``scratch_short`` = the scratch command with ``--epochs N``
   (what the shorter budget gives without the inherited weights).
8. ``--finetune-lr LR``: ``supernet_ft`` = the supernet run as a fine-tuning (timm / OFA style): peak lr LR,
   no warm-up, ``--short-epochs`` epochs (or the default).
9. ``--finetune-recipe``: ``supernet_finetune`` = the supernet run with ``--finetune`` (its fine-tuning recipe:
   lr 0.01, no warm-up, no crop or flip, 1 epoch; docs/train.md, session 7).
10. ``lenet``: a LeNet-5-style CNN (conv5-6, pool, conv5-16, pool, fc120, fc84; ReLU) trained in-process by
   the same ``searchers.trainer.Trainer`` (same recipe, epochs, images, augmentation and EMA).

``--reuse`` reads runs already finished in ``--out`` instead of rerunning them (``--reuse-from DIR``: also
those of an earlier ``--out`` folder, when made by the same command apart from ``--out``).
``--init-curve FILE,...``: the arch's inherited validation top-1 from each supernet file (a finished
``supernet.pt`` or a ``checkpoint.pt`` copied mid-training), the PNG's second panel.  The cost lines add
the supernet's own training time to each supernet-initialised run's (the honest total for one deployment).  The supernet runs export
the base formats only and skip the latency measurement (the arch is the scratch run's).
Prints the test top-1 of each run, the epoch at which the supernet-initialised run first reaches the
scratch run's final validation accuracy, whether the short run ends at or above it, the machine (CPU
model) and the date; writes
``--out``/result.json and ``--out``/curves.png (validation top-1 of the EMA weights per epoch).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def lenet(num_classes: int = 10, in_ch: int = 3):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_ch, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),          # 32 -> 28 -> 14
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),             # 14 -> 10 -> 5
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
        nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes))


def run_cli(name: str, args, out: Path, extra: list[str], tail: list[str] = (), epochs: int | None = None,
            full: bool = True) -> dict:
    done = out / name / "card.json"
    cmd = [sys.executable, "-m", "searchers.train", "--arch", args.arch, "--dataset", "fashion-mnist",
           "--out", str(out / name), "--threads", str(args.threads), "--no-progress",
           "--latency-rounds", str(args.latency_rounds if full else 0),
           "--formats", args.formats if full else "py,onnx,yaml,pt", *extra, *args.recipe_args, *tail]
    if args.reuse:
        want = command_key("python -m searchers.train " + " ".join(shlex.quote(a) for a in cmd[3:]))
        for cand in [done] + [Path(d) / name / "card.json" for d in getattr(args, "reuse_from", None) or []]:
            if not cand.is_file():
                continue
            card = json.loads(cand.read_text())
            # only a card made by this very command (recipe, supernet, epochs, data, seed; where it was written
            # aside): another run is not reused
            if command_key(card.get("command", "")) == want:
                print(f"{name}: reusing {cand}", flush=True)
                return {**card, "reused_from": str(cand.parent)}
            print(f"{name}: {cand} was made by another command; not reused", flush=True)
    print("$ " + " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"{name}: searchers.train exited {r.returncode}")
    card = json.loads((out / name / "card.json").read_text())
    card["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return card


def command_key(command: str) -> tuple[str, ...]:
    """A ``searchers.train`` command line without its ``--out`` value: two runs of the same command
    written to different folders are the same run (one thread: deterministic)."""
    words = shlex.split(command)
    return tuple(w for i, w in enumerate(words) if w != "--out" and (i == 0 or words[i - 1] != "--out"))


def run_lenet(args, out: Path) -> dict:
    done = out / "lenet" / "result.json"
    for cand in ([done] + [Path(d) / "lenet" / "result.json" for d in getattr(args, "reuse_from", None) or []]
                 if args.reuse else []):
        if not cand.is_file():
            continue
        res = json.loads(cand.read_text())
        if res.get("recipe") == _lenet_recipe(args):  # the same budget, images and scored images only
            print(f"lenet: reusing {cand}", flush=True)
            if cand != done:
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps(res, indent=1))
            return res
    res = _train_lenet(args, out)
    done.write_text(json.dumps(res, indent=1))
    return res


def _lenet_recipe(args) -> dict:
    return {"epochs": args.epochs, "train_images": args.train_images, "eval_images": args.eval_images}


def _train_lenet(args, out: Path) -> dict:
    import torch

    from searchers.data import load_dataset
    from searchers.trainer import Trainer, TrainRecipe

    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", seed=0)
    recipe = TrainRecipe(epochs=args.epochs, train_images=args.train_images, eval_images=args.eval_images)
    torch.manual_seed(0)
    model = lenet(data.num_classes)
    t0 = time.perf_counter()
    tr = Trainer(None, data, recipe, out / "lenet", model, seed=0, progress=False,
                 log=lambda m: print(f"[lenet] {m}", flush=True))
    tr.run()
    test = tr.test()
    return {"name": "lenet5", "recipe": _lenet_recipe(args), "params": sum(p.numel() for p in model.parameters()),
            "accuracy": test,
            "training": {"history": tr.history, "seconds": round(tr.seconds, 1)},
            "wall_seconds": round(time.perf_counter() - t0, 1)}


def supernet_progress(path) -> dict:
    """Steps the supernet file was trained for (a ``checkpoint.pt`` of an unfinished run holds fewer
    than its recipe's total) and that total."""
    import torch

    from searchers.supernet import SupernetRecipe

    st = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    recipe = SupernetRecipe(**st["recipe"]) if isinstance(st.get("recipe"), dict) else None
    total = recipe.total_steps if recipe else None
    return {"file": str(path), "steps": st.get("step", total), "total_steps": total,
            "train_seconds": st.get("train_seconds", st.get("seconds"))}  # a checkpoint.pt keeps "seconds"


def inherited_accuracy(path, arch, data, seed: int = 0, eval_images: int = 0) -> dict:
    """Validation top-1 of ``arch`` with the weights it inherits from the supernet file ``path`` (a
    ``supernet.pt``, or a ``checkpoint.pt`` copied mid-training: its lr not yet annealed), BN statistics
    re-estimated as ``--init supernet`` does (``supernet_model``, seed ``seed``): the epoch-0 figure of
    a supernet-initialised run.  {"file", "steps", "total_steps", "train_seconds", "val_top1", "images"}."""
    import torch

    from searchers.supernet import Supernet
    from searchers.trainer import evaluate, supernet_model

    st = torch.load(path, map_location="cpu", weights_only=False)
    net = Supernet.from_meta(st["meta"])
    net.load_state_dict(st["model"])
    model = supernet_model(net, arch, data, seed).to(memory_format=torch.channels_last)
    acc = evaluate(model, data.val, eval_images or None, channels_last=True)
    return {**supernet_progress(path), "val_top1": acc["top1"], "images": acc["images"]}


def arms(args, extra: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(name, searchers.train flags, trailing flags) of the optional arms, in the order they run."""
    short = ["--epochs", str(args.short_epochs)] if args.short_epochs else []
    out = []
    modes = [m for m in str(args.renorm or "").split(",") if m]
    if "bn" in modes:
        out.append(("supernet_renorm", extra + ["--renorm"], []))
        if short:
            out.append(("supernet_renorm_short", extra + ["--renorm"], short))
    if "all" in modes:
        out.append(("supernet_renorm_all", extra + ["--renorm", "all"], []))
    if getattr(args, "perturb", 0.0):
        out.append(("supernet_perturb", extra + ["--perturb", f"{args.perturb:g}"], []))
        if short and getattr(args, "perturb_short", False):
            out.append(("supernet_perturb_short", extra + ["--perturb", f"{args.perturb:g}"], short))
    if args.scratch_short and short:
        out.append(("scratch_short", ["--init", "scratch"], short))
    if args.finetune_lr:
        out.append(("supernet_ft", extra, ["--lr", f"{args.finetune_lr:g}", "--warmup-epochs", "0", *short]))
    if getattr(args, "finetune_recipe", False):
        out.append(("supernet_finetune", extra + ["--finetune"], []))  # its own 1 epoch
    return out


def first_epoch_reaching(history: list[dict], level: float, key: str = "val_top1_ema") -> int | None:
    for h in history:
        if h["epoch"] > 0 and h[key] >= level:
            return h["epoch"]
    return None


def plot(runs: dict[str, dict], path: Path, title: str, note: str, init_curve: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if init_curve:   # a second panel: the inherited weights' accuracy against the supernet's training steps
        wide = len(runs) > 5   # the legend goes beside the curves: room for it between the panels
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(18 if wide else 13, 5.5),
                                      gridspec_kw={"width_ratios": [3.2 if wide else 2.2, 1]})
        plot_init_curve(ax2, init_curve)
    else:
        fig, ax = plt.subplots(figsize=(7, 4.5) if len(runs) <= 5 else (12, 5.5))
    styles = {"scratch": ("MobileNetV3-Small, scratch", "C0", "o"),
              "supernet": ("MobileNetV3-Small, supernet init", "C1", "s"),
              "supernet_same": ("MobileNetV3-Small, supernet init", "C4", "v"),
              "supernet_short": ("MobileNetV3-Small, supernet init, fewer epochs", "C3", "D"),
              "supernet_renorm": ("MobileNetV3-Small, supernet init, renorm", "C5", "P"),
              "supernet_renorm_short": ("MobileNetV3-Small, supernet init, renorm, fewer epochs", "C6", "X"),
              "supernet_renorm_all": ("MobileNetV3-Small, supernet init, renorm all (+SE)", "C9", "h"),
              "supernet_perturb": ("MobileNetV3-Small, supernet init, shrink+perturb", "k", "<"),
              "supernet_perturb_short": ("MobileNetV3-Small, supernet init, shrink+perturb, fewer epochs", "navy", ">"),
              "scratch_short": ("MobileNetV3-Small, scratch, fewer epochs", "C7", "o"),
              "supernet_ft": ("MobileNetV3-Small, supernet init, fine-tune lr", "C8", "*"),
              "supernet_finetune": ("MobileNetV3-Small, supernet init, --finetune", "m", "*"),
              "lenet": ("LeNet-5 style", "C2", "^")}
    for key, card in runs.items():
        h = card["training"]["history"]
        label, color, marker = styles[key]
        if key.startswith("supernet"):
            r = card["training"]["recipe"]
            label += f", warm-up {r['warmup_epochs']:g} ep" + (f", lr {r['peak_lr']:g}" if r["peak_lr"] != 0.1 else "")
        ax.plot([r["epoch"] for r in h], [100 * r["val_top1_ema"] for r in h], marker=marker, color=color,
                label=f"{label} (test {100 * card['accuracy']['top1']:.2f}%)")
    ax.set_xlabel("epoch (0 = initial weights)")
    ax.set_ylabel("validation top-1 (%), EMA weights")
    lo = min(100 * r["val_top1_ema"] for c in runs.values() for r in c["training"]["history"]
             if r["epoch"] > 0 or r["val_top1_ema"] > 0.4)       # inherited weights' epoch 0 too
    many = len(runs) > 5
    ax.set_ylim(max(0, lo - (2 if many else 12)), 100 if not many else 90)   # few runs: legend under the curves
    ax.grid(alpha=0.3)
    if many:                                 # many: the legend beside the axes
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    else:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_init_curve(ax, points: list[dict]) -> None:
    """Inherited val top-1 against supernet steps, one line per supernet schedule (its total steps);
    filled: the finished supernet, hollow: a mid-schedule checkpoint."""
    by_total: dict = {}
    for p in points:
        by_total.setdefault(p["total_steps"], []).append(p)
    for i, (total, ps) in enumerate(sorted(by_total.items(), key=lambda kv: kv[0] or 0)):
        ps = sorted(ps, key=lambda p: p["steps"])
        color = f"C{i}"
        ax.plot([p["steps"] for p in ps], [100 * p["val_top1"] for p in ps], color=color, alpha=0.6,
                label=f"supernet of {total:,} steps" if total else "supernet")
        for p in ps:
            done = p["steps"] == total
            ax.plot(p["steps"], 100 * p["val_top1"], "o", color=color, mfc=color if done else "white")
            ax.annotate(f"{100 * p['val_top1']:.1f}", (p["steps"], 100 * p["val_top1"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.set_xlabel("supernet sandwich steps of 64 (hollow: mid-schedule)")
    ax.set_xlim(left=0)
    ax.set_ylabel("inherited weights' validation top-1 (%)")
    ax.set_title("MobileNetV3-Small's inherited weights (epoch 0)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def cost_lines(runs: dict[str, dict], supernet_seconds: float | None) -> list[str]:
    """The honest cost of each supernet-initialised arm: the supernet's training plus the arm's own,
    beside the scratch run's."""
    sc = runs["scratch"]["training"]["seconds"]
    out = []
    for k, v in runs.items():
        if not k.startswith("supernet"):
            continue
        ft = v["training"]["seconds"]
        total = f"{ft + supernet_seconds:,.0f} s" if supernet_seconds else "? s (supernet time not recorded)"
        out.append(f"{k}: {v['training']['epochs']} epochs, fine-tune {ft:,.0f} s + supernet "
                   f"{supernet_seconds or 0:,.0f} s = {total} vs scratch {runs['scratch']['training']['epochs']} "
                   f"epochs {sc:,.0f} s")
    return out


def main(argv=None) -> int:
    from searchers.trainer import TrainRecipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="mobilenet_v3_small")
    ap.add_argument("--epochs", type=int, default=TrainRecipe().epochs, help="default: the trainer's default")
    ap.add_argument("--train-images", type=int, default=0, help="fixed random training subset (default 0: all 55,000)")
    ap.add_argument("--eval-images", type=int, default=0, help="0: the full val / test splits")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-rounds", type=int, default=5)
    ap.add_argument("--supernet", default=None, help="a trained mobile-unified supernet.pt (default: the cached one)")
    ap.add_argument("--wait-supernet", type=float, default=0.0,
                    help="seconds to wait for --supernet to appear (another process may be training it)")
    ap.add_argument("--supernet-space", default="mobilenetv3",
                    help="use the cached default-recipe supernet of this space (default mobilenetv3, which holds "
                         "MobileNetV3-Small; mobile-unified's reduced-scale supernet does not), waiting up to "
                         "--wait-supernet s for another process to finish it")
    ap.add_argument("--supernet-ready-file", default=None,
                    help="wait (up to --wait-supernet s) for this file; its first line is the supernet.pt path "
                         "(or the folder holding it)")
    ap.add_argument("--out", default="runs/bench-last-mile")
    ap.add_argument("--formats", default="all", help="export formats of the MobileNetV3-Small runs (default all)")
    ap.add_argument("--same-recipe", action="store_true", help="also a supernet-init run with the scratch "
                    "recipe's 1-epoch warm-up")
    ap.add_argument("--short-epochs", type=int, default=0, help="also a supernet-init run of this many epochs "
                    "(fewer than --epochs; 0: none)")
    ap.add_argument("--renorm", default="", help="bn and/or all (comma list): also supernet-init runs with --renorm "
                    "(bn: default epochs and, with --short-epochs, that many; all: --renorm all, default epochs)")
    ap.add_argument("--perturb", type=float, default=0.0, help="also supernet-init runs with --perturb P (default "
                    "epochs and, with --short-epochs, that many; 0: none)")
    ap.add_argument("--perturb-short", action="store_true", help="with --perturb and --short-epochs: also the "
                    "--perturb run of that many epochs")
    ap.add_argument("--scratch-short", action="store_true", help="with --short-epochs: also a scratch run of that many "
                    "epochs")
    ap.add_argument("--finetune-recipe", action="store_true", help="also a supernet-init run with searchers.train's "
                    "--finetune recipe (lr 0.01, no warm-up, no crop or flip, 1 epoch)")
    ap.add_argument("--finetune-lr", type=float, default=0.0, help="also a supernet-init fine-tuning run: this peak lr, "
                    "no warm-up, --short-epochs epochs (0: none)")
    ap.add_argument("--reuse", action="store_true", help="runs already finished in --out (card.json / "
                    "lenet/result.json with the same epochs and images) are read, not rerun")
    ap.add_argument("--reuse-from", action="append", default=[], metavar="DIR",
                    help="with --reuse: also take finished runs from this earlier --out folder (the same command "
                         "apart from --out); repeatable")
    ap.add_argument("--init-curve", default="", metavar="FILE[,FILE...]",
                    help="supernet files (supernet.pt or a checkpoint.pt copied mid-training): score the arch's "
                         "inherited weights of each on the validation split (a second panel in the PNG)")
    ap.add_argument("--quick", action="store_true", help="2 epochs of 1,000 images, 1,000 eval images")
    args = ap.parse_args(argv)
    for m in [m for m in str(args.renorm or "").split(",") if m]:
        if m not in ("bn", "all"):
            raise SystemExit(f"--renorm: got {m!r}; allowed: bn, all (comma list)")
    if not 0.0 <= args.perturb <= 1.0:  # also refuses nan
        raise SystemExit(f"--perturb: got {args.perturb:g}; allowed: a number in [0, 1] (0: no such run)")
    if not 0.0 <= args.finetune_lr < 10.0:
        raise SystemExit(f"--finetune-lr: got {args.finetune_lr:g}; allowed: a number in [0, 10) (0: no such run)")
    curve_files = [Path(f) for f in str(args.init_curve or "").split(",") if f]
    for f in curve_files:
        if not f.is_file():
            raise SystemExit(f"--init-curve: {f} does not exist; allowed: supernet.pt / checkpoint.pt files "
                             "written by 'python -m searchers.supernet train' (comma list)")
    if args.quick:
        args.epochs, args.train_images, args.eval_images, args.latency_rounds = 2, 1000, 1000, 2
    args.recipe_args = ["--train-images", str(args.train_images), "--eval-images", str(args.eval_images)]
    if args.epochs != TrainRecipe().epochs:
        args.recipe_args += ["--epochs", str(args.epochs)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    runs: dict[str, dict] = {}
    runs["scratch"] = run_cli("scratch", args, out, ["--init", "scratch"])
    runs["lenet"] = run_lenet(args, out)
    extra = ["--init", "supernet"]
    if args.supernet_space and not args.supernet:
        # the space's cached supernet (default recipe); another process may be training it: wait for the file
        from search_space.space import load_space
        from searchers.data import load_dataset
        from searchers.supernet import default_recipe, supernet_dir

        sp_space = load_space(args.supernet_space)
        final = supernet_dir(sp_space, load_dataset("fashion-mnist", seed=0), default_recipe(sp_space), 0) / "supernet.pt"
        deadline = time.time() + args.wait_supernet
        while not final.is_file() and time.time() < deadline:
            time.sleep(30)
        if final.is_file():
            args.supernet = str(final)
            print(f"supernet of {args.supernet_space}: {final}", flush=True)
        extra += ["--space", args.supernet_space]      # not there: searchers.train trains it on first use
    if args.supernet_ready_file and not args.supernet:
        ready = Path(args.supernet_ready_file)
        deadline = time.time() + args.wait_supernet
        while not ready.is_file() and time.time() < deadline:
            time.sleep(30)
        if not ready.is_file():
            raise SystemExit(f"supernet: {ready} did not appear within {args.wait_supernet:.0f}s")
        words = ready.read_text().split()
        sp = Path(words[0]) if words else ready
        args.supernet = str(sp / "supernet.pt" if sp.is_dir() else sp)
        print(f"supernet ready: {args.supernet}", flush=True)
    if args.supernet:
        sp = Path(args.supernet)
        deadline = time.time() + args.wait_supernet
        while not sp.is_file() and time.time() < deadline:
            time.sleep(30)
        extra += ["--supernet", str(sp)]
    runs["supernet"] = run_cli("supernet", args, out, extra, full=False)
    if args.same_recipe:   # the inherited weights, the scratch run's schedule
        runs["supernet_same"] = run_cli("supernet_same", args, out, extra, ["--warmup-epochs", "1"], full=False)
    if args.short_epochs:  # the inherited weights, fewer epochs (the schedule ends sooner)
        runs["supernet_short"] = run_cli("supernet_short", args, out, extra, ["--epochs", str(args.short_epochs)],
                                         epochs=args.short_epochs, full=False)
    for name, arm_extra, tail in arms(args, extra):
        runs[name] = run_cli(name, args, out, arm_extra, tail, full=False)

    init_curve = []
    if curve_files:
        from searchers.data import load_dataset
        from searchers.train import resolve_arch

        import torch

        torch.set_num_threads(args.threads)
        arch, _ = resolve_arch(args.arch)
        data = load_dataset("fashion-mnist", seed=0)
        for f in curve_files:
            init_curve.append(inherited_accuracy(f, arch, data, 0, args.eval_images))
            print(f"inherited val top-1 {100 * init_curve[-1]['val_top1']:.2f}% after {init_curve[-1]['steps']} of "
                  f"{init_curve[-1]['total_steps']} supernet steps ({f})", flush=True)

    from searchers.card import machine

    mach = machine()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    scratch_final = runs["scratch"]["training"]["history"][-1]["val_top1_ema"]
    reach = first_epoch_reaching(runs["supernet"]["training"]["history"], scratch_final)
    result = {
        "date": date, "machine": mach, "epochs": args.epochs, "train_images": args.train_images or 55000,
        "eval_images": args.eval_images or "all", "threads": args.threads, "arch": args.arch,
        "test_top1": {k: v["accuracy"]["top1"] for k, v in runs.items()},
        "test_top5": {k: v["accuracy"].get("top5") for k, v in runs.items()},
        "val_curves_ema": {k: [r["val_top1_ema"] for r in v["training"]["history"]] for k, v in runs.items()},
        "train_seconds": {k: v["training"]["seconds"] for k, v in runs.items()},
        "params": {k: v["params"] for k, v in runs.items()},
        "scratch_final_val": scratch_final,
        "supernet_epoch_reaching_scratch_final_val": reach,
        "supernet_recipe": {k: runs["supernet"]["training"]["recipe"][k] for k in ("warmup_epochs", "peak_lr")},
        "supernet_same_epoch_reaching_scratch_final_val": first_epoch_reaching(
            runs["supernet_same"]["training"]["history"], scratch_final) if "supernet_same" in runs else None,
        "supernet_short_epochs": args.short_epochs or None,
        "supernet_short_final_val": (runs["supernet_short"]["training"]["history"][-1]["val_top1_ema"]
                                     if "supernet_short" in runs else None),
        "arms": {k: {"epochs": v["training"]["epochs"], "test_top1": v["accuracy"]["top1"],
                     "final_val_ema": v["training"]["history"][-1]["val_top1_ema"],
                     "epoch_reaching_scratch_final_val": first_epoch_reaching(v["training"]["history"], scratch_final),
                     "recipe": {x: v["training"]["recipe"][x] for x in ("peak_lr", "warmup_epochs")},
                     "renorm": (v["training"].get("supernet") or {}).get("renorm")}
                 for k, v in runs.items() if k != "lenet"},
        "supernet": {**(runs["supernet"]["training"].get("supernet") or {}),
                     **(supernet_progress(runs["supernet"]["training"]["supernet"]["path"]))},
        "latency": {k: runs[k]["latency"] for k in ("scratch",)},
        "init_curve": init_curve,
        "reused_from": {k: v["reused_from"] for k, v in runs.items() if "reused_from" in v},
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    subset = f"{args.train_images:,} of 55,000 training images" if args.train_images else "all 55,000 training images"
    title = (f"Fashion-MNIST, {args.epochs} epochs on {subset} (32x32), same recipe\n"
             f"{mach.get('cpu', '?')}, {args.threads} thread(s), {date}")
    sp = result["supernet"]
    plot(runs, out / "curves.png", title, f"default recipe (SGD-Nesterov, warm-up+cosine, smoothing 0.1, EMA, "
         f"crop+flip); val: 5,000 held-out images; supernet: {sp['steps']}/{sp['total_steps']} steps", init_curve)

    print()
    print(f"machine: {mach.get('cpu')} ({mach.get('cores')} cores), {args.threads} torch thread(s); {date}")
    print(f"data: Fashion-MNIST, {subset}, {args.epochs} epochs; test split: {runs['scratch']['accuracy']['images']:,}"
          " images")
    print(f"{'run':<28}{'params':>10}{'test top-1':>12}{'test top-5':>12}{'train s':>10}")
    for k, label in (("scratch", "MobileNetV3-Small scratch"), ("supernet", "MobileNetV3-Small supernet"),
                     ("supernet_same", "MobileNetV3-S supernet, wu 1"),
                     ("supernet_short", f"MobileNetV3-S supernet, {args.short_epochs} ep"),
                     ("supernet_renorm", "MobileNetV3-S sup, renorm"),
                     ("supernet_renorm_short", f"MobileNetV3-S sup, renorm, {args.short_epochs} ep"),
                     ("supernet_renorm_all", "MobileNetV3-S sup, renorm all"),
                     ("supernet_perturb", f"MobileNetV3-S sup, perturb {getattr(args, 'perturb', 0):g}"),
                     ("supernet_perturb_short", f"MobileNetV3-S sup, perturb, {args.short_epochs} ep"),
                     ("scratch_short", f"MobileNetV3-S scratch, {args.short_epochs} ep"),
                     ("supernet_ft", f"MobileNetV3-S sup, ft lr {args.finetune_lr:g}"),
                     ("supernet_finetune", "MobileNetV3-S sup, --finetune"), ("lenet", "LeNet-5 style")):
        if k not in runs:
            continue
        v = runs[k]
        t5 = v["accuracy"].get("top5")
        print(f"{label:<28}{v['params']:>10,}{100 * v['accuracy']['top1']:>11.2f}%"
              f"{'' if t5 is None else f'{100 * t5:>11.2f}%'}{v['training']['seconds']:>10.0f}")
    print(f"supernet: {sp['file']} ({sp['steps']} of {sp['total_steps']} sandwich steps of its recipe, trained in "
          f"{sp.get('train_seconds') or 0:,.0f} s)")
    for line in cost_lines(runs, sp.get("train_seconds")):
        print("cost: " + line)
    print(f"supernet-init reaches the scratch run's final val top-1 ({100 * scratch_final:.2f}%) at epoch "
          f"{reach if reach is not None else 'never'} of {args.epochs}")
    if "supernet_same" in runs:
        print(f"supernet-init with the scratch recipe (1-epoch warm-up) reaches it at epoch "
              f"{result['supernet_same_epoch_reaching_scratch_final_val'] or 'never'} of {args.epochs}")
    if "supernet_short" in runs:
        sv = result["supernet_short_final_val"]
        print(f"supernet-init in {args.short_epochs} epochs ends at val top-1 {100 * sv:.2f}% "
              f"({'at or above' if sv >= scratch_final else 'below'} the scratch run's {args.epochs}-epoch "
              f"{100 * scratch_final:.2f}%); test {100 * runs['supernet_short']['accuracy']['top1']:.2f}% vs "
              f"{100 * runs['scratch']['accuracy']['top1']:.2f}%")
    for k, a in result["arms"].items():
        if k != "scratch":
            print(f"{k}: {a['epochs']} epochs, test {100 * a['test_top1']:.2f}% "
                  f"({'at or above' if a['test_top1'] >= runs['scratch']['accuracy']['top1'] else 'below'} scratch's "
                  f"{100 * runs['scratch']['accuracy']['top1']:.2f}%), reaches scratch's final val at epoch "
                  f"{a['epoch_reaching_scratch_final_val'] or 'never'}")
    for k in [k for k in runs if k != "lenet"]:
        print(f"{k} val curve (EMA): " + " ".join(f"{100 * x:.1f}" for x in result["val_curves_ema"][k]))
    print(f"lenet val curve (EMA): " + " ".join(f"{100 * x:.1f}" for x in result["val_curves_ema"]["lenet"]))
    print(f"wrote {out / 'result.json'} and {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
