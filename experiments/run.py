"""Run a multi-stage search recipe: MobileNetV3's pipeline (platform-aware RL search, then NetAdapt).

    python -m experiments.run experiments/mobilenetv3_large.yaml [--out DIR] [--threads 1]

MobileNetV3 (Howard et al., ICCV 2019) was found in two steps: MnasNet's block-wise platform-aware
RL search (reward ACC * (LAT / T) ** w, w = -0.07 for Large, -0.15 for Small) on a Pixel latency
target, then NetAdapt layer by layer down to the target.  A recipe YAML runs that as three stages,
each writing its outputs into its own folder of the run folder (``runs/<name>/`` by default):

1. ``stage1_search/``: ``searchers.rl`` on the recipe's space and latency target, with the
   reference network's predicted latency as T (study.db, best/, pareto.csv, zoo.csv, trials.csv).
2. ``stage2_netadapt/``: ``searchers.netadapt`` on a stage-1 network to the same T.  The seed is the
   most accurate stage-1 arch predicted in (T, seed_slack * T] (a network NetAdapt can bring down to
   T, as MobileNetV3 did), or the best-reward arch when there is none; its weights are inherited from
   the supernet (BatchNorm re-estimated) when the evaluator is the supernet.
3. ``stage3_report/``: the found networks next to the reference networks, each with predicted
   latency, params and MACs (224x224, 1000 classes: the published counts), the search evaluator's
   accuracy (where the network is a point of the space) and the stand-alone accuracy of one
   training recipe; ``report.md``, ``report.png`` (search Pareto front with the networks marked,
   stand-alone accuracy vs latency) and ``report.json``.

A finished stage (``done.json`` in its folder) is skipped on the next run; a killed stage continues
(the RL study and the NetAdapt checkpoint resume; stand-alone results are cached in
``$EDGENAS_CACHE/standalone``, shared by recipes).  Bad input: one line, exit 2.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from search_space.errors import EdgenasError, OneLineParser, cli_entry

REPO = Path(__file__).resolve().parents[1]
STAGES = ("search", "netadapt", "report")
STAGE_DIRS = {"search": "stage1_search", "netadapt": "stage2_netadapt", "report": "stage3_report"}


class RecipeError(EdgenasError, ValueError):
    """A recipe file or option is malformed, or a run folder does not fit it."""


# ---------------------------------------------------------------------------------------------
# The recipe file
# ---------------------------------------------------------------------------------------------
SEARCH_KEYS = ("searcher", "evaluator", "trials", "w", "reward", "eval_opts", "algo", "batch", "lr", "entropy",
               "baseline_decay", "clip", "ppo_epochs", "hidden")
NETADAPT_KEYS = ("seed_from", "seed_slack", "pretrain_epochs", "pretrain_images", "initial_ratio", "decay",
                 "metric", "proposals", "short_steps", "short_batch", "short_lr", "eval_images", "long_epochs",
                 "long_images", "long_lr", "max_iterations", "tolerance", "onnx")
STANDALONE_KEYS = ("epochs", "images_per_epoch", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing",
                   "warmup", "eval_images", "precise_bn", "split", "seeds")
TOP_KEYS = {"name": str, "description": str, "reference": str, "space": str, "target": str, "resolution": int,
            "dataset": str, "seed": int, "out": str, "compare": list, "search": dict, "netadapt": dict,
            "standalone": dict, "latency_tolerance": float}
SEED_FROM = ("over-target", "best")

DEFAULTS: dict[str, Any] = {
    "resolution": 224, "dataset": "fashion-mnist", "seed": 0, "latency_tolerance": 0.05,
    "compare": ["mobilenet_v3_large@1.0", "mobilenet_v3_small@1.0", "mnasnet_a1@1.0", "mobilenet_v2@1.0"],
    "search": {"searcher": "rl", "evaluator": "supernet", "trials": 200, "reward": "soft", "eval_opts": {}},
    "netadapt": {"seed_from": "over-target", "seed_slack": 1.15, "onnx": True},
    "standalone": {"epochs": 1, "images_per_epoch": 10000, "eval_images": 5000, "split": "test", "seeds": [0]},
}


def _err(path, key: str, got, allowed: str) -> RecipeError:
    return RecipeError(f"{path}: {key}: got {got!r}; allowed: {allowed}")


def find_recipe(ref: str) -> Path:
    p = Path(ref)
    for c in (p, REPO / p, REPO / "experiments" / p, REPO / "experiments" / f"{ref}.yaml"):
        if c.is_file():
            return c
    known = sorted(x.name for x in (REPO / "experiments").glob("mobilenetv3_*.yaml"))
    raise RecipeError(f"recipe: no file {ref!r}; allowed: a recipe YAML path, e.g. "
                      f"{', '.join('experiments/' + k for k in known) or 'experiments/mobilenetv3_large.yaml'}")


def load_recipe(ref: str) -> dict[str, Any]:
    """Read and check a recipe file; returns it with the defaults filled in."""
    import yaml

    path = find_recipe(ref)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: got {type(raw).__name__}; allowed: a mapping of recipe keys "
                          f"({', '.join(TOP_KEYS)})")
    r = copy.deepcopy(DEFAULTS)
    for k, v in raw.items():
        key = str(k)
        if key not in TOP_KEYS:
            raise _err(path, "key", key, ", ".join(TOP_KEYS))
        want = TOP_KEYS[key]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or isinstance(v, bool):
            what = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}[want]
            raise _err(path, key, v, what)
        if want is dict:
            allowed = {"search": SEARCH_KEYS, "netadapt": NETADAPT_KEYS, "standalone": STANDALONE_KEYS}[key]
            for sub in v:
                if str(sub) not in allowed:
                    raise _err(path, f"{key}.{sub}", str(sub), ", ".join(allowed))
            r[key] = {**r.get(key, {}), **{str(a): b for a, b in v.items()}}
        else:
            r[key] = v
    for need in ("name", "reference", "space", "target"):
        if not r.get(need):
            raise RecipeError(f"{path}: {need}: missing; allowed: "
                              + {"name": "a run name, e.g. mobilenetv3_large",
                                 "reference": "a zoo network name@width whose latency is the target, "
                                              "e.g. mobilenet_v3_large@1.0",
                                 "space": "a space name, e.g. mobilenetv3",
                                 "target": "a latency target, e.g. pixel-cpu"}[need])
    r["_path"] = str(path)
    check_recipe(r, path)
    return r


def parse_net(text: str, path, key: str):
    """``name@width`` (or ``name``: width 1.0) -> (name, width, Arch)."""
    from search_space import zoo

    name, _, w = str(text).partition("@")
    if name not in zoo.names():
        raise _err(path, key, text, f"a zoo name[@width]: {', '.join(zoo.names())}")
    try:
        width = float(w) if w else 1.0
    except ValueError:
        raise _err(path, key, text, f"{name}@<width> with width in {zoo.widths(name)}") from None
    if width not in zoo.widths(name):
        raise _err(path, key, text, f"{name}@<width> with width in {zoo.widths(name)}")
    return name, width, zoo.get(name, width)


def check_recipe(r: dict[str, Any], path) -> None:
    import latency_models
    from search_space.space import space_names
    from searchers.evaluators import evaluator_names

    if r["target"] not in latency_models.targets():
        raise _err(path, "target", r["target"], ", ".join(latency_models.targets()))
    if r["space"] not in space_names() and not Path(r["space"]).is_file():
        raise _err(path, "space", r["space"], f"{', '.join(space_names())} or a space YAML file")
    if not str(r["name"]).replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise _err(path, "name", r["name"], "letters, digits, '-', '_' and '.'")
    if r["resolution"] < 16:
        raise _err(path, "resolution", r["resolution"], "an integer >= 16")
    if r["seed"] < 0:
        raise _err(path, "seed", r["seed"], "an integer >= 0")
    if not 0 < r["latency_tolerance"] < 1:
        raise _err(path, "latency_tolerance", r["latency_tolerance"], "a fraction in (0, 1), e.g. 0.05")
    parse_net(r["reference"], path, "reference")
    if not r["compare"]:
        raise _err(path, "compare", r["compare"], "a non-empty list of zoo name@width")
    for i, t in enumerate(r["compare"]):
        parse_net(t, path, f"compare[{i}]")
    s = r["search"]
    if s.get("searcher") != "rl":
        raise _err(path, "search.searcher", s.get("searcher"), "rl (MnasNet's controller)")
    if s.get("evaluator") not in evaluator_names():
        raise _err(path, "search.evaluator", s.get("evaluator"), ", ".join(evaluator_names()))
    if s.get("w") is None:
        raise RecipeError(f"{path}: search.w: missing; allowed: a number <= 0 (MobileNetV3: -0.07 Large, -0.15 Small)")
    if not isinstance(s.get("eval_opts") or {}, dict):
        raise _err(path, "search.eval_opts", s.get("eval_opts"), "a mapping of evaluator option: value")
    search_settings(r, Path("."))  # the searcher's own checks, one line each
    from searchers.evaluators import get_evaluator
    from search_space.errors import EdgenasError

    try:  # the evaluator checks its options when built (nothing is loaded or trained before prepare())
        get_evaluator(s["evaluator"], space=r["space"], dataset=r["dataset"], seed=r["seed"],
                      **dict(s.get("eval_opts") or {}))
    except EdgenasError as exc:
        msg = str(exc).replace("--eval-opt: ", "").replace("--eval-opt ", "")  # a recipe key, not the flag
        raise RecipeError(f"{path}: search.eval_opts: {msg}") from None
    n = r["netadapt"]
    if n.get("seed_from") not in SEED_FROM:
        raise _err(path, "netadapt.seed_from", n.get("seed_from"), ", ".join(SEED_FROM))
    slack = n.get("seed_slack")
    if isinstance(slack, bool) or not isinstance(slack, (int, float)) or not 1.0 <= slack <= 10.0:
        raise _err(path, "netadapt.seed_slack", slack, "a number in [1, 10], e.g. 1.15")
    if not isinstance(n.get("onnx"), bool):
        raise _err(path, "netadapt.onnx", n.get("onnx"), "true or false")
    netadapt_settings(r, 1.0, "mobilenet_v3_small", Path("."), None)
    standalone_recipe(r)


def _sub_error(path, section: str, exc: Exception) -> RecipeError:
    msg = str(exc)
    if msg.startswith("--"):
        msg = msg[2:]
        head, sep, rest = msg.partition(":")
        msg = head.replace("-", "_") + sep + rest
    return RecipeError(f"{path}: {section}.{msg}")


def search_settings(r: dict[str, Any], out: Path, budget_ms: float = 1.0, resume: bool = False):
    """(SearchSettings, PGConfig) of stage 1."""
    from searchers.cli_common import resolve
    from searchers.rl import pg_config

    s = r["search"]
    given = {"target": r["target"], "budget": f"{budget_ms!r}ms", "space": r["space"], "evaluator": s["evaluator"],
             "dataset": r["dataset"], "resolution": r["resolution"], "trials": s.get("trials"), "reward": s.get("reward"),
             "w": s.get("w"), "seed": r["seed"], "out": str(out), "study": f"{r['name']}-stage1",
             "eval_opts": dict(s.get("eval_opts") or {}), "resume": resume}
    rl_opts = {k: s[k] for k in ("algo", "batch", "lr", "entropy", "baseline_decay", "clip", "ppo_epochs", "hidden")
               if s.get(k) is not None}
    try:
        cfg = pg_config(dict(rl_opts))
        settings = resolve({k: v for k, v in given.items() if v is not None})
    except EdgenasError as exc:
        raise _sub_error(r.get("_path", "recipe"), "search", exc) from None
    return settings, cfg


def netadapt_settings(r: dict[str, Any], budget_ms: float, arch: str, out: Path, weights: str | None):
    from searchers.netadapt import build_parser, resolve

    n = r["netadapt"]
    argv = ["--arch", arch, "--target", r["target"], "--budget", f"{budget_ms!r}ms",
            "--resolution", str(r["resolution"]), "--dataset", r["dataset"], "--seed", str(r["seed"]),
            "--out", str(out), "--study", f"{r['name']}-stage2",
            # NetAdapt's last step chooses among the proposals within the goal's window under T
            # (netadapt.tolerance overrides it; 0: the paper's ratio rule throughout)
            "--tolerance", repr(min(0.5, float(r["latency_tolerance"])))]
    if weights:
        argv += ["--weights", weights]
    for k in NETADAPT_KEYS:
        if k in ("seed_from", "seed_slack", "onnx") or n.get(k) is None:
            continue
        argv += [f"--{k.replace('_', '-')}", str(n[k])]
    if not n.get("onnx", True):
        argv.append("--no-onnx")
    try:
        return resolve(build_parser().parse_args(argv))
    except EdgenasError as exc:
        raise _sub_error(r.get("_path", "recipe"), "netadapt", exc) from None


def standalone_recipe(r: dict[str, Any]):
    """(training Recipe, split, seeds) of the stand-alone comparison."""
    from searchers.training import Recipe

    st = dict(r["standalone"])
    path = r.get("_path", "recipe")
    split = st.pop("split", "test")
    if split not in ("val", "test"):
        raise _err(path, "standalone.split", split, "val, test")
    seeds = st.pop("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds)):
        raise _err(path, "standalone.seeds", seeds, "a non-empty list of integers >= 0")
    try:
        return Recipe(**st), split, seeds
    except EdgenasError as exc:
        raise RecipeError(f"{path}: standalone.{str(exc).removeprefix('recipe.')}") from None
    except TypeError as exc:
        raise RecipeError(f"{path}: standalone: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _netadapt_line(s2: dict) -> str:
    acc = s2.get("accuracy")
    return (f"{s2['seed']['latency_ms']:.2f} -> {s2['latency_ms']:.2f} ms in {s2['iterations']} iteration(s)"
            + (f"; its fine-tuned weights score {100 * acc:.2f}% on validation images" if acc is not None else ""))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("EDGENAS_CACHE", "~/.cache/edgenas")))


def recipe_identity(r: dict[str, Any]) -> dict[str, Any]:
    """What a run folder was made with (the file path and output folder aside)."""
    return json.loads(json.dumps({k: v for k, v in r.items() if k not in ("_path", "out")}, sort_keys=True))


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')} ({a!r} then, {b!r} now)"


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
class Run:
    def _eval_opts(self, evaluator: str) -> dict[str, Any]:
        """The recipe's evaluator options, with --no-progress reaching an evaluator that has bars."""
        from searchers.evaluators import with_progress

        return with_progress(evaluator, self.r["search"].get("eval_opts") or {}, self.progress)

    def __init__(self, recipe: dict[str, Any], out: Path | None = None, progress: bool = True):
        import latency_models

        self.r = recipe
        self.progress = progress
        self.out = Path(out or recipe.get("out") or Path("runs") / recipe["name"])
        self.model = latency_models.load(recipe["target"])
        self.ref_name, self.ref_width, self.ref_arch = parse_net(recipe["reference"], recipe["_path"], "reference")
        self.target_ms = float(self.model.predict(self.ref_arch, resolution=recipe["resolution"]))
        self._data = None
        self._space = None

    # -- shared ------------------------------------------------------------------------------------
    @property
    def space(self):
        if self._space is None:
            from search_space.space import load_space

            self._space = load_space(self.r["space"])
        return self._space

    @property
    def data(self):
        if self._data is None:
            from searchers.data import load_dataset

            self._data = load_dataset(self.r["dataset"], seed=self.r["seed"])
        return self._data

    def stage_dir(self, stage: str) -> Path:
        return self.out / STAGE_DIRS[stage]

    def done(self, stage: str) -> dict | None:
        p = self.stage_dir(stage) / "done.json"
        return read_json(p) if p.is_file() else None

    def predict(self, arch) -> float:
        return float(self.model.predict(arch, resolution=self.r["resolution"]))

    def check_folder(self) -> None:
        """A run folder belongs to one recipe: a changed recipe needs another --out."""
        ident = recipe_identity(self.r)
        p = self.out / "recipe.json"
        if p.is_file():
            old = read_json(p)
            if old != ident and not any(d.is_dir() and any(d.iterdir()) for d in map(self.stage_dir, STAGES)):
                write_json(p, ident)        # no stage wrote anything yet (a bad input stopped it): start afresh
            elif old != ident:
                raise RecipeError(f"--out: {self.out} was made with another recipe: "
                                  f"{first_difference(old, ident)}; use another --out (or delete the folder)")
        else:
            write_json(p, ident)

    # -- driver ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_folder()
        r = self.r
        say(f"recipe {r['name']} ({r['_path']}): space {r['space']}, target {r['target']} at {r['resolution']}, "
            f"T = {self.target_ms:.2f} ms ({r['reference']} predicted), w = {r['search']['w']}; run folder {self.out}")
        results = {}
        for i, stage in enumerate(STAGES, 1):
            d = self.done(stage)
            if d is not None:
                say(f"== stage {i}/3 ({stage}): done, skipped ({self.stage_dir(stage) / 'done.json'}, "
                    f"{d.get('wall_s', 0):.0f} s when it ran)")
                results[stage] = d
                continue
            say(f"== stage {i}/3 ({stage}) -> {self.stage_dir(stage)}")
            t0 = time.perf_counter()
            d = getattr(self, f"stage_{stage}")(results)
            d["wall_s"] = round(time.perf_counter() - t0, 1)
            d["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            write_json(self.stage_dir(stage) / "done.json", d)
            results[stage] = d
            say(f"== stage {i}/3 ({stage}) finished in {d['wall_s']:.0f} s")
        return results

    # -- stage 1 -------------------------------------------------------------------------------------
    def stage_search(self, results: dict) -> dict[str, Any]:
        from searchers import rl

        out = self.stage_dir("search")
        resume = (out / "study.db").is_file()
        s, cfg = search_settings(self.r, out, self.target_ms, resume=resume)
        if resume:
            say(f"stage 1: continuing the study in {out / 'study.db'}")
        summary = rl.search(s, cfg, progress=self.progress, zoo=True)
        trials = self.dump_trials(s, out)
        best = summary.get("best") or {}
        return {"study": summary.get("study"), "storage": summary.get("storage"), "trials": len(trials),
                "budget_ms": self.target_ms, "w": s.w, "evaluator": s.evaluator, "best": best,
                "zoo": summary.get("zoo", []), "controller": summary.get("controller"),
                "search_wall_s": summary.get("wall_s"), "timing": summary.get("timing")}

    def dump_trials(self, s, out: Path) -> list[dict[str, Any]]:
        import optuna

        from searchers.records import open_storage

        study = optuna.load_study(study_name=f"{self.r['name']}-stage1",
                                  storage=open_storage(s.storage or f"sqlite:///{(out / 'study.db').resolve()}"))
        rows = []
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            acc, lat = t.values
            rows.append({"trial": t.number, "accuracy": float(acc), "latency_ms": float(lat),
                         "reward": float(t.user_attrs.get("reward", math.nan)), "arch": t.user_attrs.get("arch", "")})
        import csv

        with open(out / "trials.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["trial", "accuracy", "latency_ms", "reward", "arch"])
            w.writeheader()
            w.writerows(rows)
        return rows

    def trials(self) -> list[dict[str, Any]]:
        import csv

        with open(self.stage_dir("search") / "trials.csv") as f:
            return [{"trial": int(x["trial"]), "accuracy": float(x["accuracy"]), "latency_ms": float(x["latency_ms"]),
                     "reward": float(x["reward"]), "arch": x["arch"]} for x in csv.DictReader(f)]

    # -- stage 2 -------------------------------------------------------------------------------------
    def netadapt_seed(self, results: dict) -> tuple[dict[str, Any], str]:
        n = self.r["netadapt"]
        trials = self.trials()
        best = results["search"].get("best") or {}
        if n["seed_from"] == "over-target":
            T, slack = self.target_ms, float(n["seed_slack"])
            over = [t for t in trials if T < t["latency_ms"] <= slack * T and self.reachable(t["arch"])]
            if over:
                pick = max(over, key=lambda t: (t["accuracy"], -t["latency_ms"], -t["trial"]))
                return pick, (f"the most accurate stage-1 arch in ({T:.2f}, {slack * T:.2f}] ms "
                              f"(trial {pick['trial']}; {len(over)} candidates there)")
            why = f"no stage-1 arch in ({T:.2f}, {slack * T:.2f}] ms that NetAdapt can bring to T: the best-reward arch"
        else:
            why = "the best-reward stage-1 arch"
        pick = next((t for t in trials if t["arch"] == best.get("arch")), None)
        if pick is None:
            raise RecipeError(f"stage 2: the stage-1 study in {self.stage_dir('search')} has no best arch")
        return pick, f"{why} (trial {pick['trial']})"

    def reachable(self, text: str) -> bool:
        """Whether NetAdapt (with the recipe's proposal kinds) can bring ``text`` down to T."""
        from search_space.arch import Arch
        from searchers.netadapt import minimal_arch

        kinds = netadapt_settings(self.r, self.target_ms, "mobilenet_v3_small", Path("."), None).kinds()
        try:
            return self.predict(minimal_arch(Arch.from_string(text), kinds)) <= self.target_ms
        except EdgenasError:
            return False

    def seed_weights(self, arch, out: Path) -> str | None:
        """Supernet-inherited weights (BN re-estimated) for NetAdapt's seed; None without a supernet."""
        if self.r["search"]["evaluator"] != "supernet":
            return None
        import torch

        from searchers.evaluators import get_evaluator
        from searchers.training import recalibrate_bn

        p = out / "seed_weights.pt"
        if p.is_file():
            return str(p)
        ev = get_evaluator("supernet", space=self.space, dataset=self.r["dataset"], seed=self.r["seed"],
                           **self._eval_opts("supernet"))
        ev.prepare()
        if not ev.fits(arch):
            return None
        model = ev.extract(arch)
        recalibrate_bn(model, self.data.train, batches=ev.recipe.calib_batches, batch_size=ev.recipe.calib_batch_size,
                       seed=self.r["seed"])
        out.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, p)
        return str(p)

    def stage_netadapt(self, results: dict) -> dict[str, Any]:
        from search_space.arch import Arch
        from searchers.netadapt import netadapt

        out = self.stage_dir("netadapt")
        out.mkdir(parents=True, exist_ok=True)
        seed, why = self.netadapt_seed(results)
        seed_arch = Arch.from_string(seed["arch"])
        say(f"stage 2: NetAdapt seed = {why}: {seed['latency_ms']:.2f} ms, {self.r['search']['evaluator']} "
            f"accuracy {seed['accuracy']:.4f}")
        arch_file = out / "seed_arch.yaml"
        if not arch_file.is_file():
            arch_file.write_text(seed_arch.to_yaml())
        weights = self.seed_weights(seed_arch, out)
        s = netadapt_settings(self.r, self.target_ms, str(arch_file), out / "netadapt", weights)
        s.resume = (out / "netadapt" / "checkpoint" / "state.json").is_file()
        if s.resume:
            say(f"stage 2: continuing NetAdapt in {out / 'netadapt'}")
        summary = netadapt(s, progress=self.progress, data=self.data)
        base = {"seed": seed, "seed_reason": why, "seed_weights": weights or "NetAdapt's brief pre-training"}
        if summary["status"] == "met":
            say(f"stage 2: the seed already meets T ({seed['latency_ms']:.2f} <= {self.target_ms:.2f} ms): unchanged")
            return {**base, "status": "met", "arch": seed["arch"], "latency_ms": seed["latency_ms"],
                    "accuracy": None, "iterations": 0}
        return {**base, "status": "done", "arch": summary["arch"], "latency_ms": summary["latency_ms"],
                "accuracy": summary["accuracy"], "seed_accuracy_netadapt": summary.get("seed_accuracy"),
                "iterations": summary["iterations"], "out": summary["out"], "netadapt_wall_s": summary["wall_s"]}

    # -- stage 3 -------------------------------------------------------------------------------------
    def networks(self, results: dict) -> list[dict[str, Any]]:
        """The rows of the report: found networks first, then the compared zoo networks."""
        from search_space.arch import Arch
        from search_space.profile import profile

        rows: list[dict[str, Any]] = []
        s1, s2 = results["search"], results["netadapt"]
        best = s1.get("best") or {}
        if s2.get("status") == "done":
            rows.append({"name": "found: search + NetAdapt", "key": "found_netadapt", "arch": s2["arch"],
                         "origin": f"stage 2: NetAdapt ({s2['iterations']} iterations) from stage-1 trial "
                                   f"{s2['seed']['trial']}"})
        if s2["seed"]["arch"] != best.get("arch") or s2.get("status") != "done":
            rows.append({"name": "found: NetAdapt seed", "key": "found_seed", "arch": s2["seed"]["arch"],
                         "origin": f"stage 1 trial {s2['seed']['trial']} ({s2['seed_reason']})"})
        if best.get("arch") and best.get("arch") != s2["seed"]["arch"]:
            rows.append({"name": "found: search best reward", "key": "found_best", "arch": best["arch"],
                         "origin": f"stage 1 trial {best.get('trial')} (highest reward within T)"})
        elif best.get("arch") and s2.get("status") == "done":
            rows.append({"name": "found: search best reward (NetAdapt seed)", "key": "found_best", "arch": best["arch"],
                         "origin": f"stage 1 trial {best.get('trial')} (highest reward within T)"})
        refs = [self.r["reference"]] + [c for c in self.r["compare"] if c != self.r["reference"]]
        seen = set()
        for text in refs:
            name, width, arch = parse_net(text, self.r["_path"], "compare")
            key = f"{name}@{width:g}"
            if key in seen:
                continue
            seen.add(key)
            rows.append({"name": f"{name}@{width}", "key": key, "arch": arch.to_string(), "zoo": (name, width),
                         "origin": "reference (latency target)" if text == self.r["reference"] else "zoo"})
        trial_acc = {t["arch"]: t["accuracy"] for t in self.trials()}
        zoo_acc = {f"{z['name']}@{z['width']:g}": z.get("accuracy") for z in s1.get("zoo", [])}
        for row in rows:
            arch = Arch.from_string(row["arch"])
            row["arch_obj"] = arch
            row["latency_ms"] = self.predict(arch)
            prof = profile(arch, 224, 1000)
            row["params"], row["macs"] = int(prof["params"]), int(prof["macs"])
            row["in_space"] = bool(self.space.contains(arch))
            acc = trial_acc.get(row["arch"])
            if acc is None and row["key"] in zoo_acc:
                acc = zoo_acc[row["key"]]
            row["search_accuracy"] = acc
        return rows

    def search_accuracy_missing(self, rows: list[dict[str, Any]]) -> None:
        """Score in-space rows that the search did not (the evaluator is loaded only if needed)."""
        todo = [r for r in rows if r["in_space"] and r["search_accuracy"] is None]
        if not todo:
            return
        from searchers.evaluators import get_evaluator

        ev = get_evaluator(self.r["search"]["evaluator"], space=self.space, dataset=self.r["dataset"],
                           seed=self.r["seed"], **self._eval_opts(self.r["search"]["evaluator"]))
        ev.prepare()
        for row in todo:
            try:
                row["search_accuracy"] = float(ev.evaluate(row["arch_obj"]))
            except EdgenasError as exc:
                row["search_accuracy_note"] = str(exc)

    def standalone(self, arch, recipe, split: str, seed: int, label: str) -> dict[str, Any]:
        """Stand-alone training result (cached by arch, data, recipe, seed, split)."""
        from searchers.training import train_arch

        key = json.dumps({"arch": arch.to_string(), "data": self.data.key, "recipe": recipe.to_dict(), "seed": seed,
                          "split": split, "v": 1}, sort_keys=True)
        p = cache_dir() / "standalone" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        if p.is_file():
            got = read_json(p)
            say(f"  {label} (seed {seed}): cached {got['accuracy']:.4f}")
            return got
        import torch

        t0 = time.perf_counter()
        _, stats = train_arch(arch, self.data, recipe, seed=seed, progress=self.progress, split=split)
        got = {"accuracy": float(stats["accuracy"]), "seconds": round(time.perf_counter() - t0, 1),
               "steps": stats["steps"], "final_loss": stats["final_loss"], "arch": arch.to_string(),
               "threads": torch.get_num_threads()}
        write_json(p, got)
        say(f"  {label} (seed {seed}): {got['accuracy']:.4f} {split} accuracy in {got['seconds']:.0f} s")
        return got

    def stage_report(self, results: dict) -> dict[str, Any]:
        out = self.stage_dir("report")
        out.mkdir(parents=True, exist_ok=True)
        rows = self.networks(results)
        self.search_accuracy_missing(rows)
        recipe, split, seeds = standalone_recipe(self.r)
        say(f"stage 3: stand-alone training of {len(rows)} networks x {len(seeds)} seed(s): {recipe.epochs} epoch(s) "
            f"x {recipe.images_per_epoch} images, batch {recipe.batch_size}, lr {recipe.lr}; {split} accuracy "
            f"on {min(recipe.eval_images, len(getattr(self.data, split)))} images")
        for row in rows:
            runs = [self.standalone(row["arch_obj"], recipe, split, sd, row["name"]) for sd in seeds]
            accs = [x["accuracy"] for x in runs]
            row["standalone"] = accs
            row["standalone_mean"] = sum(accs) / len(accs)
            row["standalone_s"] = round(sum(x["seconds"] for x in runs), 1)
        report = self.write_report(results, rows, recipe, split, seeds, out)
        return report

    # -- the report ----------------------------------------------------------------------------------
    def verdicts(self, rows: list[dict[str, Any]]) -> list[str]:
        tol = self.r["latency_tolerance"]
        ref = next(r for r in rows if r["origin"].startswith("reference"))
        found = [r for r in rows if r["key"].startswith("found")]
        lines = []
        for f in found:
            dl = f["latency_ms"] / self.target_ms - 1.0
            lat_ok = abs(dl) <= tol
            acc_ok = f["standalone_mean"] >= ref["standalone_mean"]
            dacc = 100 * (f["standalone_mean"] - ref["standalone_mean"])
            goal = "MET" if lat_ok and acc_ok else "NOT MET"
            why = []
            why.append(f"latency {f['latency_ms']:.2f} ms is {100 * dl:+.1f}% from T = {self.target_ms:.2f} ms "
                       f"({'within' if lat_ok else 'NOT within'} +/-{100 * tol:g}%)")
            why.append(f"stand-alone accuracy {100 * f['standalone_mean']:.2f}% vs {ref['name']} "
                       f"{100 * ref['standalone_mean']:.2f}% ({dacc:+.2f} points: "
                       f"{'at least as accurate' if acc_ok else 'LESS accurate'})")
            lines.append(f"- **{f['name']}**: goal {goal}: {'; '.join(why)}.")
        return lines

    def write_report(self, results, rows, recipe, split, seeds, out: Path) -> dict[str, Any]:
        r = self.r
        s1, s2 = results["search"], results["netadapt"]
        png = out / "report.png"
        self.figure(rows, png)
        ev = r["search"]["evaluator"]
        verdicts = self.verdicts(rows)
        L = [f"# {r['name']}: MobileNetV3's pipeline reproduced from the `{r['space']}` space", ""]
        if r.get("description"):
            L += [r["description"].strip(), ""]
        L += [f"Recipe `{r['_path']}`. Latency target T = **{self.target_ms:.2f} ms**: {r['reference']}'s predicted "
              f"latency on `{r['target']}` at {r['resolution']}x{r['resolution']}. Stage 1: `searchers.rl` "
              f"({(s1.get('controller') or {}).get('algo', 'ppo')}), {s1['trials']} archs, reward "
              f"ACC x (LAT/T)^{s1['w']}, accuracy from the `{ev}` evaluator on {r['dataset']}. Stage 2: NetAdapt to T "
              f"({'from ' + s2['seed_reason'] if s2.get('seed_reason') else ''}; "
              f"{'already within T: unchanged' if s2['status'] == 'met' else _netadapt_line(s2)}). "
              f"Stage 3: every network below trained from scratch with one recipe: {recipe.epochs} epoch(s) x "
              f"{recipe.images_per_epoch} images, batch {recipe.batch_size}, SGD lr {recipe.lr} (cosine), "
              f"{split} accuracy on {min(recipe.eval_images, len(getattr(self.data, split)))} images, "
              f"seed(s) {', '.join(map(str, seeds))}.", ""]
        L += ["## Goal", "", *verdicts, ""]
        L += ["## Networks", "",
              f"Latency: `{r['target']}` predicted at {r['resolution']}. Params and MACs at 224x224 with 1000 classes "
              f"(the published counts). `{ev}` accuracy: the search evaluator's score, for networks that are points "
              f"of the `{r['space']}` space only. Stand-alone: the recipe above on {r['dataset']} "
              f"({'x'.join(map(str, _pair(self.data.resolution)))}).", "",
              f"| network | in space | latency (ms) | vs T | params | MACs | {ev} accuracy | stand-alone accuracy |",
              "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            sa = "n/a (not a point of the space)" if not row["in_space"] else (
                "n/a" if row["search_accuracy"] is None else f"{100 * row['search_accuracy']:.2f}%")
            st = " / ".join(f"{100 * a:.2f}%" for a in row["standalone"])
            L.append(f"| {row['name']} | {'yes' if row['in_space'] else 'no'} | {row['latency_ms']:.2f} | "
                     f"{100 * (row['latency_ms'] / self.target_ms - 1):+.1f}% | {row['params']:,} | "
                     f"{row['macs'] / 1e6:.1f}M | {sa} | {st} |")
        outside = [row["name"] for row in rows if not row["in_space"] and row.get("zoo")]
        L.append("")
        if outside:
            L += [f"Not points of the `{r['space']}` space (`space.contains` is false): {', '.join(outside)}; "
                  f"the search evaluator cannot score them, so only their stand-alone accuracy is compared.", ""]
        L += ["## Search", "", f"![report]({png.name})", "",
              f"Left: the {s1['trials']} stage-1 archs ({ev} accuracy vs predicted latency), their Pareto front, T, and "
              f"the networks above (those outside the space, and NetAdapt's result, as latency ticks). Right: "
              f"stand-alone accuracy vs latency of every network of the table.", "",
              "Arch strings:", ""]
        for row in rows:
            L.append(f"- {row['name']} ({row['origin']}): `{row['arch']}`")
        L += ["", "## Time", "",
              f"- stage 1 (search): {s1.get('wall_s', 0):.0f} s" + (f" ({s1['trials']} archs)"),
              f"- stage 2 (NetAdapt): {s2.get('wall_s', 0):.0f} s",
              f"- stage 3 (stand-alone training): {sum(row['standalone_s'] for row in rows):.0f} s of training "
              f"(cached results count their original time)", ""]
        from searchers.outputs import machine, versions

        L += [f"Machine: {machine()}; {', '.join(f'{k} {v}' for k, v in versions().items())}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
        (out / "report.md").write_text("\n".join(L))
        table = [{k: v for k, v in row.items() if k not in ("arch_obj",)} for row in rows]
        data = {"target_ms": self.target_ms, "reference": r["reference"], "networks": table, "goal": verdicts,
                "standalone_recipe": recipe.to_dict(), "split": split, "seeds": seeds,
                "files": {"report.md": str(out / "report.md"), "report.png": str(png)}}
        write_json(out / "report.json", data)
        say(f"stage 3: {out / 'report.md'}")
        for v in verdicts:
            say("  " + v.replace("**", ""))
        return data

    def figure(self, rows, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from searchers.records import TrialRecord, pareto_front

        trials = self.trials()
        recs = [TrialRecord(t["trial"], t["arch"], (), t["accuracy"], t["latency_ms"], t["reward"]) for t in trials]
        front = pareto_front(recs)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
        a1.scatter([t.latency_ms for t in recs], [t.accuracy for t in recs], s=8, c="0.7", label="stage-1 archs")
        a1.plot([t.latency_ms for t in front], [t.accuracy for t in front], "o-", c="tab:blue", ms=4,
                drawstyle="steps-post", label="Pareto front")
        colors = {"found_netadapt": "tab:red", "found_seed": "tab:orange", "found_best": "tab:purple"}
        for row in rows:
            c = colors.get(row["key"], "tab:green")
            marker = "*" if row["key"].startswith("found") else "s"
            if row["search_accuracy"] is not None:
                a1.scatter([row["latency_ms"]], [row["search_accuracy"]], marker=marker, s=160 if marker == "*" else 40,
                           c=c, zorder=5, edgecolors="k", linewidths=0.5)
                a1.annotate(row["name"].replace("found: ", ""), (row["latency_ms"], row["search_accuracy"]),
                            fontsize=7, xytext=(4, 4), textcoords="offset points")
            else:
                a1.plot([row["latency_ms"]], [0.02], "|", c=c, ms=14, transform=a1.get_xaxis_transform())
                a1.annotate(row["name"].replace("found: ", ""), (row["latency_ms"], 0.05), fontsize=7, rotation=90,
                            xycoords=a1.get_xaxis_transform(), color=c)
            a2.scatter([row["latency_ms"]], [row["standalone_mean"]], marker=marker, s=160 if marker == "*" else 40,
                       c=c, zorder=5, edgecolors="k", linewidths=0.5)
            a2.annotate(row["name"].replace("found: ", ""), (row["latency_ms"], row["standalone_mean"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        for ax in (a1, a2):
            ax.axvline(self.target_ms, ls="--", c="tab:red", lw=1, label=f"T = {self.target_ms:.2f} ms")
            ax.set_xlabel(f"predicted latency on {self.r['target']} at {self.r['resolution']} (ms)")
            ax.grid(alpha=0.3)
        a1.set_ylabel(f"{self.r['search']['evaluator']} accuracy ({self.r['dataset']})")
        a1.set_title(f"stage 1: RL search of {self.r['space']} ({len(recs)} archs)", fontsize=9)
        a1.legend(fontsize=7, loc="lower right")
        a2.set_ylabel("stand-alone accuracy (one recipe)")
        a2.set_title("stand-alone training, same recipe", fontsize=9)
        fig.suptitle(f"{self.r['name']}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
class _Parser(OneLineParser):
    error_class = RecipeError


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe YAML, e.g. experiments/mobilenetv3_large.yaml")
    p.add_argument("--out", help="run folder (default: the recipe's out, else runs/<name>/)")
    p.add_argument("--threads", help="torch threads (default: torch's)")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bars")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.threads is not None:
        try:
            threads = int(ns.threads)
            if threads < 1:
                raise ValueError
        except ValueError:
            raise RecipeError(f"--threads: got {ns.threads!r}; allowed: an integer >= 1") from None
        import torch

        torch.set_num_threads(threads)
    recipe = load_recipe(ns.recipe)
    t0 = time.perf_counter()
    results = Run(recipe, out=Path(ns.out) if ns.out else None, progress=not ns.no_progress).run()
    rep = results["report"]
    print(f"{recipe['name']}: report {rep['files']['report.md']} ({time.perf_counter() - t0:.0f} s this run)")
    for line in rep["goal"]:
        print("  " + line.replace("**", "").lstrip("- "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
