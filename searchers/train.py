"""Train a found network on the user's data and ship it with its measured numbers.

    python -m searchers.train --arch runs/<study>/best/arch.yaml --dataset PATH|fashion-mnist \\
                              [--init scratch|supernet] [--epochs N] [--out DIR]

``--arch`` is an arch file (.yaml/.json/arch-string file/net.config), a zoo name, ``name@width`` or
an arch string.  The run trains with ``searchers.trainer.TrainRecipe`` (checkpoint every epoch; run
the same command again to resume a killed run exactly; ``--fresh`` starts over), scores the EMA
weights on the test split (top-1, top-5 with more than 5 classes), exports them in every format
``search_space.export`` offers (each checked against torch), predicts their latency on every
shipped target, measures it on this machine's runtimes and writes ``card.md`` + ``card.json``.

``--init supernet`` starts from the weights the arch inherits from the trained supernet of
``--space`` (default mobile-unified; trained and cached on first use, as the supernet evaluator
does) or of the checkpoint ``--supernet PATH``.  See docs/train.md.
"""
from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import time
from pathlib import Path

import torch

from search_space.arch import Arch
from search_space.errors import ArchError, EdgenasError, SpaceError, cli_entry, field_error
from searchers.trainer import (INITS, OPTIMIZERS, TrainError, Trainer, TrainRecipe, perturb, renormalize,
                               scratch_model, supernet_model)
from searchers.training import recalibrate_bn

REPO = Path(__file__).resolve().parents[1]
RENORMS = ("bn", "all")


def resolve_arch(text: str) -> tuple[Arch, str]:
    """(Arch, label) of an arch file, a zoo name, ``name@width`` or an arch string."""
    from search_space import zoo
    from search_space.export import resolve_arch as export_resolve

    name, at, width = text.partition("@")
    if at and not Path(text).exists() and name in zoo.names():
        try:
            w = float(width)
        except ValueError:
            raise field_error(ArchError, f"--arch width (for {name})", width, zoo.widths(name)) from None
        arch, label = export_resolve(name, w)
        return arch, label
    p = Path(text)
    if not text.startswith("stem_") and not p.exists():
        if p.suffix or "/" in text:
            raise ArchError(f"--arch: file {text} does not exist; allowed: an arch .yaml/.json file, a zoo name, "
                            "name@width or an arch string")
        if text not in zoo.names():
            raise field_error(ArchError, "--arch", text, "an arch file, name@width, an arch string (stem_...) or a "
                              f"zoo name: {', '.join(zoo.names())}")
    try:
        return export_resolve(text)
    except ArchError as exc:
        msg = str(exc)
        raise ArchError(msg if msg.startswith("--arch") else f"--arch: {msg}") from None


def default_out(arch_arg: str, label: str, arch: Arch, data_name: str, init: str, seed: int) -> Path:
    p = Path(arch_arg)
    if p.is_file():
        return p.parent / f"train-{data_name}-{init}-s{seed}"
    if label == "network":
        label = "arch-" + hashlib.sha1(arch.to_string().encode()).hexdigest()[:8]
    return Path("runs") / "train" / f"{label}-{data_name}-{init}-s{seed}"


# --finetune: the recipe for inherited weights (docs/train.md, session 7).  The supernet trains without crop
# or flip; with them the default recipe (lr 0.1 after a 1-epoch warm-up) took MobileNetV3-Small's inherited
# weights from 88.9% to 85.7% validation in its first epoch, and even at lr 0.01 to ~86%; without them one
# epoch at lr 0.01 lifted them to ~90% (test 88.9%, 4 seeds) -- above scratch's 5 epochs (87.8%).
FINETUNE = {"epochs": 1, "lr": 0.01, "warmup_epochs": 0.0, "crop_padding": 0}


def _parser() -> argparse.ArgumentParser:
    from search_space.errors import OneLineParser

    p = OneLineParser(prog="python -m searchers.train",
                      description="Train an architecture on a data set, export it and write its model card.")
    a = p.add_argument
    a("--arch", required=True, help="arch .yaml/.json file, zoo name, name@width or arch string")
    a("--dataset", default="fashion-mnist", help="fashion-mnist, an image folder or an .npz (default fashion-mnist)")
    a("--init", default="scratch", help="scratch (random init) or supernet (inherited weights)")
    a("--space", default=None, help="--init supernet: the space whose supernet to use (default mobile-unified)")
    a("--supernet", default=None, help="--init supernet: a trained supernet.pt instead of the space's cached one")
    d = TrainRecipe()
    a("--finetune", action="store_true",
      help="--init supernet: the fine-tuning recipe (" + ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in FINETUNE.items())
      + ": the supernet's own data, no crop or flip; 1 epoch); options given explicitly win (see docs/train.md)")
    a("--epochs", type=int, default=None, help=f"passes over the training images (default {d.epochs}; --finetune "
                                               f"{FINETUNE['epochs']})")
    a("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    a("--optimizer", default=d.optimizer, help=f"{' or '.join(OPTIMIZERS)} (default {d.optimizer})")
    a("--lr", type=float, default=None, help="peak learning rate (default: 0.1 x batch/128 for sgd, "
                                           f"0.016 x batch/256 for rmsprop; --finetune {FINETUNE['lr']:g})")
    a("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay:g}")
    a("--label-smoothing", type=float, default=d.label_smoothing, help=f"default {d.label_smoothing}")
    a("--perturb", type=float, default=None,
      help="--init supernet: shrink and perturb towards the fresh init, weights = (1-P) x inherited + P x fresh "
           "(0..1; see docs/train.md)")
    a("--renorm", nargs="?", const="bn", default=None,
      help="--init supernet: bn (the bare flag) rescales each BN-followed conv weight to a fresh init's norm (the "
           "same function); all also each squeeze-excite conv (see docs/train.md)")
    a("--warmup-epochs", type=float, default=None, help=f"default {d.warmup_epochs:g} (--finetune "
                                                        f"{FINETUNE['warmup_epochs']:g})")
    a("--ema-decay", type=float, default=d.ema_decay, help=f"default {d.ema_decay}")
    a("--crop-padding", type=int, default=None, help=f"random-crop padding in pixels (default {d.crop_padding}; "
                                                     f"--finetune {FINETUNE['crop_padding']})")
    a("--no-hflip", action="store_true", default=None, help="no random horizontal flip (--finetune: none)")
    a("--train-images", type=int, default=0, help="train on a fixed random subset of this many images (0: all)")
    a("--eval-images", type=int, default=0, help="score on the first N validation / test images (0: all)")
    a("--seed", type=int, default=0)
    a("--out", default=None, help="run folder (default: next to the arch file, or runs/train/<name>-...)")
    a("--fresh", action="store_true", help="start over even if the run folder holds a checkpoint")
    a("--formats", default="all", help="export formats, a comma list of py, onnx, yaml, pt, tflite, pte (default "
                                       "all: the base ones and every mobile one whose extra is installed)")
    a("--resolution", type=int, default=224, help="deployment resolution for latency (default 224)")
    a("--latency-rounds", type=int, default=5, help="timing rounds per runtime (0: skip the measurement)")
    a("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    a("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("scale (see docs/scale.md)")
    g.add_argument("--image-size", type=int, default=None, help="stream a full-size image folder at this size "
                   "with the ImageNet augmentation (e.g. 224; default: the in-memory loader)")
    g.add_argument("--workers", type=int, default=4, help="loader processes for --image-size data (default 4)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument("--amp", action="store_true", help="float16 autocast + grad scaler (CUDA only; no-op on CPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last (NHWC) memory format, CPU and CUDA (default: on; 2.4x faster for MobileNetV3-Small here)")
    g.add_argument("--accum", type=int, default=1, help="gradient accumulation: shards per process and step "
                                                       "(the global batch stays --batch-size)")
    g.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps (0: epoch ends)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA + NCCL only)")
    g.add_argument("--backend", default=None, help="under torchrun: nccl or gloo (default: nccl with CUDA)")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    t_start = time.perf_counter()
    for name in ("threads", "seed"):
        if getattr(args, name) < 0:
            raise field_error(TrainError, f"--{name}", getattr(args, name), "an integer >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.init not in INITS:
        raise field_error(TrainError, "--init", args.init, INITS)
    if args.init == "scratch" and (args.space or args.supernet or args.renorm is not None or args.perturb is not None):
        raise TrainError("--space/--supernet/--renorm/--perturb: only with --init supernet")
    if args.perturb is not None and not 0.0 <= args.perturb <= 1.0:
        raise field_error(TrainError, "--perturb", args.perturb, "a number in [0, 1]")
    if args.renorm is not None and args.renorm not in RENORMS:
        raise field_error(TrainError, "--renorm", args.renorm, RENORMS)
    if args.resolution < 16:
        raise field_error(TrainError, "--resolution", args.resolution, "an integer >= 16")
    if args.latency_rounds < 0:
        raise field_error(TrainError, "--latency-rounds", args.latency_rounds, "an integer >= 0")
    for name in ("accum", "checkpoint_every"):
        if getattr(args, name) < (1 if name == "accum" else 0):
            raise field_error(TrainError, f"--{name.replace('_', '-')}", getattr(args, name),
                              "an integer >= 1" if name == "accum" else "an integer >= 0")
    from searchers.distributed import BACKENDS

    if args.backend is not None and args.backend not in BACKENDS:  # (ignored without torchrun, but wrong)
        raise field_error(TrainError, "--backend", args.backend, BACKENDS)
    from searchers.records import check_out_dir

    if args.out:  # a file there would fail only at the first checkpoint
        check_out_dir(args.out)
    args.formats_all = args.formats.strip() == "all"
    args.formats, args.not_exported = export_formats(args.formats)
    arch, label = resolve_arch(args.arch)
    if args.finetune and args.init != "supernet":
        raise field_error(TrainError, "--finetune", args.init, "only with --init supernet")
    # the options --finetune sets default to None: a given one wins over the recipe's (or --finetune's) value
    given = {k: getattr(args, k) for k in FINETUNE if getattr(args, k) is not None}
    recipe = TrainRecipe(**{**(FINETUNE if args.finetune else {}), **given},
                         hflip=not (args.finetune or args.no_hflip), batch_size=args.batch_size,
                         optimizer=args.optimizer, weight_decay=args.weight_decay,
                         label_smoothing=args.label_smoothing, ema_decay=args.ema_decay,
                         train_images=args.train_images, eval_images=args.eval_images)
    space = supernet_path = supernet_net = None
    if args.init == "supernet":
        space, supernet_path, supernet_net = _check_supernet_arch(arch, args)  # a given --supernet, read once
    from searchers.data import load_dataset

    import os

    from searchers.distributed import Dist, shard_size

    shard_size(recipe.batch_size, Dist(world=max(1, int(os.environ.get("WORLD_SIZE", "1")))), args.accum)
    if args.workers < 0:
        raise field_error(TrainError, "--workers", args.workers, "an integer >= 0")
    data = load_dataset(args.dataset, seed=args.seed, image_size=args.image_size, workers=args.workers)
    out = Path(args.out) if args.out else default_out(args.arch, label, arch, data.name, args.init, args.seed)
    if not args.out:  # (a given --out was checked before the data set was read)
        check_out_dir(out)
    progress = not args.no_progress

    from searchers.distributed import init_from_env, shutdown

    dist = init_from_env(args.backend, args.device)
    try:
        trainer, supernet_info = _train(arch, label, data, recipe, out, args, space, supernet_path, progress, dist,
                                       supernet_net)
        if not dist.is_main:                # rank 0 alone tests, exports and writes the card
            return 0
    finally:
        shutdown(dist)
    test = trainer.test()
    _log(f"test top-1 {test['top1']:.4f}" + (f", top-5 {test['top5']:.4f}" if "top5" in test else "")
         + f" (EMA weights; raw {test['top1_raw']:.4f})")

    card = make_card(trainer, test, label, args, supernet_info, argv if argv is not None else sys.argv[1:])
    md, js = _finish(card, out)
    print(f"test top-1 {test['top1']:.4f}" + (f"  top-5 {test['top5']:.4f}" if "top5" in test else ""))
    print(f"wrote {md}")
    print(f"wrote {js}")
    bad = [f for f, v in card["exports"].items() if v.get("passed") is False]
    if bad:
        raise TrainError(f"export check failed for {', '.join(bad)} (see {js}); allowed: max abs logit diff <= "
                         f"{card['export_tolerance']:g} x max(1, largest |logit|)")
    _log(f"done in {time.perf_counter() - t_start:.0f}s")
    return 0


def _train(arch, label, data, recipe, out, args, space, supernet_path, progress, dist, supernet_net=None):
    supernet_info = None
    if args.init == "supernet":
        for turn in ("main", "others"):     # rank 0 first: it trains the cached supernet if missing
            if dist.is_main == (turn == "main"):
                net, supernet_info = _supernet(space, supernet_path, data, args.seed, progress and dist.is_main,
                                               supernet_net)
            dist.barrier()
        model = supernet_model(net, arch, data, args.seed)
        if args.renorm:
            rows = renormalize(model, se=args.renorm == "all")
            info = {"mode": args.renorm}
            for kind in ("bn", "se"):
                sc = sorted(r["scale"] for r in rows if r["kind"] == kind)
                if sc:
                    info[kind] = {"convs": len(sc), "scale_min": round(sc[0], 4), "scale_max": round(sc[-1], 4),
                                  "scale_median": round(sc[len(sc) // 2], 4)}
                    if dist.is_main:
                        _log(f"renorm: {len(sc)} {'BN-followed' if kind == 'bn' else 'squeeze-excite'} conv weights "
                             f"rescaled to a fresh init's norm (scale {sc[0]:.3f}..{sc[-1]:.3f}, median "
                             f"{sc[len(sc) // 2]:.3f})")
            supernet_info = {**supernet_info, "renorm": info}
        if args.perturb is not None:
            n = perturb(model, scratch_model(arch, data.num_classes, args.seed), args.perturb)
            recalibrate_bn(model, data.train, batches=4, batch_size=256, seed=args.seed)
            supernet_info = {**supernet_info, "perturb": {"p": args.perturb, "tensors": n}}
            if dist.is_main:
                _log(f"perturb: {n} conv / linear weights = {1 - args.perturb:g} x inherited + {args.perturb:g} x "
                     "fresh init; BN statistics re-estimated")
    else:
        model = scratch_model(arch, data.num_classes, args.seed)
    if dist.is_main:
        _log(f"training {label}: {arch.to_string()}")
        _log(f"run folder: {out}")
        if dist.active or dist.device.type != "cpu":
            _log(f"{dist.world} process(es), backend {dist.backend or 'none'}, device {dist.device}; global batch "
                 f"{recipe.batch_size} in {dist.world * args.accum} shard(s)")
    trainer = Trainer(arch, data, recipe, out, model, seed=args.seed, init=args.init, progress=progress, log=_log,
                      dist=dist, accum=args.accum, checkpoint_every=args.checkpoint_every, amp=args.amp,
                      channels_last=args.channels_last, sync_bn=args.sync_bn, workers=args.workers)
    trainer.run(resume=not args.fresh)
    return trainer, supernet_info


def export_formats(text: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """(formats to export, {format: why not}) -- "all": the base formats and each mobile format whose
    package is installed (looked up without importing it); an explicit list must be installable
    (checked before training)."""
    import importlib.util

    from search_space import export as E

    if text.strip() == "all":
        formats, missing = list(E.FORMATS), {}
        for f in E.MOBILE_FORMATS:
            extra, module, package = E.EXTRAS[f]
            if importlib.util.find_spec(module.split(".")[0]) is not None:
                formats.append(f)
            else:
                missing[f] = f"needs the {package} package: pip install 'edgenas[{extra}]'"
        return tuple(formats), missing
    try:
        formats = E._check_formats(text)
    except E.ExportError as exc:
        raise TrainError(f"--formats: {exc}") from None
    for f in formats:
        if f in E.MOBILE_FORMATS:
            E.require(f)
    return formats, {}


def _check_supernet_arch(arch: Arch, args):
    """Before any data or supernet work: does the arch lie in the supernet's space (and its caps)?
    Returns (space, --supernet path, that supernet read) -- the last two None without --supernet."""
    from searchers.supernet import default_recipe, within_caps

    if args.supernet:
        from searchers.supernet import load_supernet

        p = Path(args.supernet)
        net = load_supernet(p, "--supernet")  # a missing or unreadable file: one line  # readable, before any data or training work; kept for _supernet
        space = None
        if args.space:
            from search_space.space import load_space

            space = load_space(args.space)
        return space, p, net
    from search_space.space import load_space

    space = load_space(args.space or "mobile-unified")
    if not space.contains(arch):
        zoo = ", ".join(f"{n}@{w:g}" for n, w in space.zoo_entries()[:6])
        raise SpaceError(f"--arch: not in space {space.name!r}, so its supernet cannot initialise it; allowed: "
                         f"an arch of that space (e.g. {zoo}, ...) or --init scratch")
    caps = default_recipe(space)
    if not within_caps(arch, caps.max_channels, caps.max_macs):
        raise SpaceError(f"--arch: beyond the reduced-scale supernet of {space.name!r}; allowed: archs with at most "
                         f"{caps.max_channels} channels per layer and {caps.max_macs / 1e6:g} MMACs at 224, "
                         "or --init scratch")
    return space, None, None


def _supernet(space, path, data, seed: int, progress: bool, loaded=None):
    """The supernet to inherit from: ``loaded`` (``path`` already read), the file ``path``, or the space's cached one."""
    from searchers.supernet import load_supernet

    if path is not None:
        net = loaded if loaded is not None else load_supernet(path, "--supernet")
        if space is not None:
            net.space_name = net.space_name or space.name
        return net, {"space": net.space_name, "path": str(path), "trained_now": False,
                     "train_seconds": round(getattr(net, "train_seconds", 0.0), 1)}
    from searchers.evaluators import get_evaluator

    ev = get_evaluator("supernet", space=space, dataset=data, seed=seed, progress=progress, log=_log)
    _log(f"supernet of {space.name}: loading from the cache (trained there on first use)")
    ev.prepare()
    from searchers.supernet import supernet_dir

    d = supernet_dir(space, data, ev.recipe, seed, ev.cache_root)
    return ev.supernet, {"space": space.name, "path": str(d / "supernet.pt"), "trained_now": ev.trained_now,
                         "train_seconds": round(getattr(ev.supernet, "train_seconds", 0.0), 1)}


def make_card(trainer: Trainer, test: dict, label: str, args, supernet_info, argv) -> dict:
    from search_space import export as E
    from search_space.profile import profile
    from searchers import card as C

    arch, data, recipe = trainer.arch, trainer.data, trainer.recipe
    model = trainer.ema.module.eval().cpu()
    res = args.resolution
    h, w = data.resolution
    prof = profile(arch, res, data.num_classes)
    prof_data = profile(arch, (h, w), data.num_classes) if h != w else profile(arch, h, data.num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != prof["params"]:  # the analytic count is the project's; a mismatch is a bug
        raise AssertionError(f"profile() params {prof['params']} != module params {n_params}")

    # export every format the exporter offers, at the data resolution (what the weights were trained at)
    _log("exporting: " + ", ".join(args.formats))
    written, failed = {}, dict(args.not_exported)
    base = tuple(f for f in args.formats if f not in E.MOBILE_FORMATS)
    for group in ([base] if base else []) + [(f,) for f in args.formats if f in E.MOBILE_FORMATS]:
        try:
            written.update(E.export(arch, trainer.out / "export", formats=group, num_classes=data.num_classes,
                                    resolution=h, state_dict=model.state_dict(), name=label, log=_log))
        except EdgenasError as exc:
            if group == base or not args.formats_all:      # asked for explicitly: a failure is the user's error
                raise
            failed[group[0]] = str(exc)                    # "all": a broken optional extra is reported in the card
    x, _ = data.test.batch(torch.arange(min(8, len(data.test))))
    exports = C.check_exports(written, model, arch, x, data.num_classes)
    for f, why in failed.items():
        exports[f] = {"file": None, "check": f"not exported: {why}", "max_abs_diff": None, "passed": None}

    predicted = C.predicted_latency(arch, res)
    measured: dict[str, dict] = {}
    if args.latency_rounds:
        _log(f"measuring latency at {res} and {h} (1 thread, {args.latency_rounds} rounds)")
        measured[str(res)] = C.measure_latency(model, res, arch.stem.in_ch, args.latency_rounds)
        if h != res and h == w:
            measured[str(h)] = C.measure_latency(model, h, arch.stem.in_ch, args.latency_rounds)
        for f, name in (("pte", "executorch"), ("tflite", "litert")):     # the shipped mobile files themselves
            if f in written and exports[f].get("passed"):
                measured.setdefault(str(h), {})[name] = C.measure_file(Path(written[f]), (1, arch.stem.in_ch, h, w),
                                                                       args.latency_rounds)
    best_val = max((r["val_top1_ema"] for r in trainer.history), default=None)
    nval = min(len(data.val), recipe.eval_images or len(data.val))
    return {
        "format": 1,
        "name": label,
        "arch": arch.to_string(),
        "params": prof["params"],
        "macs": prof["macs"],
        "macs_at_data_resolution": prof_data["macs"],
        "accuracy": {"split": "test", "weights": "EMA", **test, "best_val_top1": best_val, "val_images": nval},
        "latency": {"resolution": res, "batch": 1,
                    "predicted": predicted,
                    "measured": measured,
                    "machine": C.machine(),
                    "note": "predicted by latency_models targets; measured here with one thread, "
                            "interleaved with latency_models.profile's reference block"},
        "exports": exports,
        "export_tolerance": C.TOLERANCE,
        "export_resolution": h,
        "training": {"init": trainer.init, "init_weights_sha1": trainer.init_fingerprint, "supernet": supernet_info, "recipe": recipe.to_dict(),
                     "seed": trainer.seed, "epochs": trainer.epoch, "steps": trainer.step,
                     "steps_per_epoch": trainer.steps_per_epoch, "seconds": round(trainer.seconds, 1),
                     "threads": torch.get_num_threads(), "processes": trainer.dist.world,
                     "device": str(trainer.device), "accum": trainer.accum, "amp": trainer.amp,
                     "channels_last": trainer.channels_last, "history": trainer.history},
        "dataset": {"name": data.name, "source": data.source, "key": data.key, "num_classes": data.num_classes,
                    "classes": list(data.classes), "resolution": f"{h}x{w}",
                    "train_split": len(data.train), "train_images": len(trainer.train_split),
                    "val_images": nval, "test_images": test["images"],
                    "split": _split_note(data, recipe, trainer.seed)},
        "command": "python -m searchers.train " + " ".join(shlex.quote(a) for a in argv),
        "created": C.now(),
    }


def _split_note(data, recipe: TrainRecipe, seed: int) -> str:
    parts = []
    if data.name == "fashion-mnist":
        parts.append(f"the 60,000 training images split by seed {seed} into 55,000 train / 5,000 val; "
                     "the 10,000 t10k images are the test split")
    else:
        parts.append(f"splits as searchers.data.load_dataset gives them (seed {seed})")
    if recipe.train_images:
        parts.append(f"training on a fixed random subset of {recipe.train_images} images (seed {seed})")
    if recipe.eval_images:
        parts.append(f"scores on the first {recipe.eval_images} val / test images")
    return "; ".join(parts)


def _finish(card: dict, out: Path):
    from searchers.card import write_card

    return write_card(out, card)


if __name__ == "__main__":
    sys.exit(main())
