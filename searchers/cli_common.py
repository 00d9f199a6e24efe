"""Options shared by the searcher CLIs (evolve now; RL and NetAdapt later).

Precedence: the command line, then ``--config experiments/X.yaml``, then the built-in defaults.
Every option is parsed with ``default=None`` so that we know which ones the user gave; defaults
are filled in by :func:`resolve`.  Bad values raise :class:`OptionError` (one line, exit 2).
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search_space.errors import EdgenasError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The searchers' --help: the description as written; option help wrapped without breaking a name at
    its hyphen (a target list keeps ``local-tflite`` whole)."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


class OptionError(EdgenasError, ValueError):
    """A command-line or recipe option is malformed."""


# ---------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------
_BUDGET = re.compile(r"\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(ms|s)\s*")


def parse_budget(text: Any) -> float:
    """``"60ms"``, ``"60 ms"``, ``"0.06s"`` -> 60.0 (milliseconds).  Anything else is an error."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise OptionError(f"--budget: got {text!r} without a unit; allowed: a latency such as 60ms, 60 ms or 0.06s")
    m = _BUDGET.fullmatch(str(text)) if isinstance(text, str) else None
    if m is None:
        if isinstance(text, str) and re.fullmatch(r"\s*[-+]?\d*\.?\d+(?:[eE][+-]?\d+)?\s*", text):
            raise OptionError(f"--budget: got {text!r} without a unit; allowed: a latency such as 60ms, 60 ms or 0.06s")
        raise OptionError(f"--budget: got {text!r}; allowed: a positive latency such as 60ms, 60 ms or 0.06s")
    value = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
    if not (value > 0 and math.isfinite(value)):
        raise OptionError(f"--budget: got {text!r}; allowed: a positive latency such as 60ms, 60 ms or 0.06s")
    return value


def format_budget(ms: float) -> str:
    return f"{ms:g}ms"


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
@dataclass
class SearchSettings:
    """Everything a search run needs; stored in the study so that a resume uses the same."""

    target: str = ""
    budget_ms: float = 0.0
    space: str = "mobile-unified"
    evaluator: str = "supernet"
    dataset: str = "fashion-mnist"
    resolution: int = 224
    trials: int = 300
    population: int = 50
    sample_size: int = 10
    crossover: float = 0.0
    reward: str = "soft"
    w: float | None = None
    seed: int = 0
    out: str | None = None
    study: str | None = None
    storage: str | None = None
    workers: int = 1
    resume: bool = False
    config: str | None = None
    eval_opts: dict = field(default_factory=dict)
    formats: str = "py,onnx,yaml"  # files of the best arch (search_space.export); not part of the identity

    # Fields that define the search: a study created with one value cannot continue with another.
    IDENTITY = ("target", "budget_ms", "space", "evaluator", "dataset", "resolution", "reward", "w",
                "population", "sample_size", "crossover", "eval_opts")

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.IDENTITY}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_search_options(p: argparse.ArgumentParser, sweep: bool = False) -> argparse.ArgumentParser:
    """The options every searcher takes (all default to None: see :func:`resolve`).  ``sweep``: the
    searcher takes comma lists of targets and budgets (searchers.evolve: one search per pair)."""
    from searchers.evaluators import evaluator_names

    a = p.add_argument
    lists = "; a comma list runs one search per target and budget (a sweep)" if sweep else ""
    a("--target", help=f"latency target: {', '.join(_targets())}, or a target .json file{lists}")
    a("--budget", help="latency budget T, e.g. 60ms, '60 ms' or 0.06s" + ("; a comma list (e.g. 20ms,45ms,60ms) "
                                                                        "runs one search per budget" if sweep else ""))
    a("--space", help="search space name or YAML path (default: mobile-unified)")
    a("--evaluator", help=f"accuracy evaluator: {', '.join(evaluator_names())} (default: supernet)")
    a("--dataset", help="data set name or path (default: fashion-mnist)")
    a("--resolution", help="deployment resolution for latency (default: 224)")
    a("--trials", help="number of evaluated architectures (default: 300)")
    a("--reward", help="soft or hard latency constraint (default: soft)")
    a("--w", help="reward exponent: soft w (default -0.07); hard: the over-budget exponent (default -1)")
    a("--seed", help="random seed (default: 0)")
    a("--out", help="run folder (default: runs/<study>/)")
    a("--study", help="Optuna study name (default: derived from the options)")
    a("--storage", help="Optuna RDB URL (default: SQLite file in the run folder)")
    a("--workers", help="worker processes on this machine (default: 1)")
    a("--resume", action="store_true", default=None, help="continue an existing study (it must exist)")
    a("--config", help="recipe YAML (experiments/NAME.yaml or a path); the command line wins")
    a("--eval-opt", action="append", metavar="KEY=VALUE", dest="eval_opt",
      help="extra evaluator option (repeatable), e.g. --eval-opt epochs=2")
    a("--formats", help="files of the best arch: a comma list of py, onnx, yaml, pt, tflite, pte "
                        "(default: py,onnx,yaml; tflite/pte need the edgenas[tflite]/[executorch] extras)")
    return p


def join_dash_values(argv: list[str] | None, options=("--budget", "--target", "--formats")) -> list[str] | None:
    """``--budget -5ms`` -> ``--budget=-5ms``: argparse would read a value that starts with a dash as
    an option and print its usage; joined, the value reaches our one-line check."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    out, i = [], 0
    while i < len(args):
        a = str(args[i])
        if a in options and i + 1 < len(args) and str(args[i + 1]).startswith("-") and not str(args[i + 1]).startswith("--"):
            out.append(f"{a}={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def parse_formats(value: Any) -> str:
    """``"onnx,tflite,pte"`` -> the same, checked: known formats, no repeats, the extras of the mobile
    ones installed (found without importing them, before any search time is spent)."""
    import importlib.util

    from search_space import export as E

    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    items = [str(x).strip() for x in items]
    allowed = ", ".join(E.ALL_FORMATS)
    if not items or any(not x for x in items):
        raise OptionError(f"--formats: got {value!r}; allowed: a comma list of {allowed}")
    for f in items:
        if f not in E.ALL_FORMATS:
            raise OptionError(f"--formats: got {f!r}; allowed: {allowed}")
    if len(set(items)) != len(items):
        raise OptionError(f"--formats: got {value!r}; allowed: each format once")
    for f in items:
        if f in E.MOBILE_FORMATS:
            extra, module, package = E.EXTRAS[f]
            if importlib.util.find_spec(module.split(".")[0]) is None:
                raise OptionError(f"--formats: {f} needs the {package} package, which is not installed; "
                                  f"install it with: pip install 'edgenas[{extra}]'")
    return ",".join(items)


def _int(name: str, v: Any, lo: int = 1) -> int:
    try:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError
        iv = int(v)
    except (TypeError, ValueError):
        raise OptionError(f"--{name.replace('_', '-')}: got {v!r}; allowed: an integer >= {lo}") from None
    if iv < lo:
        raise OptionError(f"--{name.replace('_', '-')}: got {v!r}; allowed: an integer >= {lo}")
    return iv


def _float(name: str, v: Any, lo: float | None = None, hi: float | None = None, what: str = "a number") -> float:
    try:
        if isinstance(v, bool):
            raise ValueError
        fv = float(v)
    except (TypeError, ValueError):
        raise OptionError(f"--{name}: got {v!r}; allowed: {what}") from None
    if not math.isfinite(fv) or (lo is not None and fv < lo) or (hi is not None and fv > hi):
        raise OptionError(f"--{name}: got {v!r}; allowed: {what}")
    return fv


def _scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(ref: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a recipe: ``experiments/NAME.yaml``, ``NAME`` or any path; keys are option names (the
    shared ones, plus the searcher's own ``extra`` ones, e.g. searchers.rl's ``algo``, ``batch``)."""
    import yaml

    p = Path(ref)
    candidates = [p, EXPERIMENTS / p, EXPERIMENTS / f"{ref}.yaml"]
    path = next((c for c in candidates if c.is_file()), None)
    names = set(OPTION_NAMES) | set(extra)
    if path is None:
        known, runs = searcher_recipes(names)
        also = (f" ({', '.join(runs)}: whole-paper recipes, run with python -m experiments.run "
                f"experiments/NAME.yaml)" if runs else "")
        raise OptionError(f"--config: no recipe {ref!r}; allowed: a YAML path or one of {', '.join(known)}{also}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise OptionError(f"--config: {path} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise OptionError(f"--config: {path} must hold a mapping of option: value")
    if _is_run_recipe(data):
        raise OptionError(f"--config: {path} is an experiments.run recipe (stages search, netadapt, standalone); "
                          f"allowed: a searcher recipe, or run it with: python -m experiments.run {path}")
    out = {}
    allowed = sorted(names)
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key not in names:
            raise OptionError(f"--config: {path}: unknown option {k!r}; allowed: {', '.join(allowed)}")
        out[key] = v
    return out


def _is_run_recipe(data: dict) -> bool:
    """An experiments.run recipe (a whole paper's pipeline: ``name`` and its stage sections)."""
    return "name" in data and any(k in data for k in ("search", "netadapt", "standalone"))


def searcher_recipes(names) -> tuple[list[str], list[str]]:
    """The shipped recipes (experiments/*.yaml) a searcher with option ``names`` can run, and the
    experiments.run ones (which it cannot)."""
    import yaml

    ok, runs = [], []
    for f in sorted(EXPERIMENTS.glob("*.yaml")):
        try:
            data = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, dict):
            continue
        if _is_run_recipe(data):
            runs.append(f.stem)
        elif all(str(k).replace("-", "_") in names for k in data):
            ok.append(f.stem)
    return ok, runs


OPTION_NAMES = ("target", "budget", "space", "evaluator", "dataset", "resolution", "trials", "population",
                "sample_size", "crossover", "reward", "w", "seed", "out", "study", "storage", "workers",
                "eval_opts", "formats")


def given_options(ns: argparse.Namespace, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The options the user gave: ``--config`` values overlaid by the command line.  ``extra``: the
    searcher's own option names that a recipe may also hold."""
    cli = {k: v for k, v in vars(ns).items() if v is not None}
    merged: dict[str, Any] = {}
    if cli.get("config"):
        merged.update(load_config(cli["config"], extra))
    for k, v in cli.items():
        if k == "eval_opt":
            opts = dict(merged.get("eval_opts") or {})
            for item in v:
                if "=" not in item:
                    raise OptionError(f"--eval-opt: got {item!r}; allowed: KEY=VALUE")
                key, val = item.split("=", 1)
                opts[key.strip().replace("-", "_")] = _scalar(val)
            merged["eval_opts"] = opts
        else:
            merged[k] = v
    return merged


def resolve(given: dict[str, Any]) -> SearchSettings:
    """Validate the given options and fill in the defaults (names are checked by the caller)."""
    s = SearchSettings()
    if given.get("budget") is not None:
        s.budget_ms = parse_budget(given["budget"])
    for name in ("target", "space", "evaluator", "dataset", "out", "study", "storage", "config"):
        if given.get(name) is not None:
            setattr(s, name, str(given[name]))
    if given.get("resolution") is not None:
        s.resolution = _int("resolution", given["resolution"], 16)
    if given.get("trials") is not None:
        s.trials = _int("trials", given["trials"], 1)
    if given.get("population") is not None:
        s.population = _int("population", given["population"], 2)
    if given.get("sample_size") is not None:
        s.sample_size = _int("sample_size", given["sample_size"], 1)
    if given.get("crossover") is not None:
        s.crossover = _float("crossover", given["crossover"], 0.0, 1.0, "a probability in [0, 1]")
    if given.get("reward") is not None:
        s.reward = str(given["reward"])
        if s.reward not in ("soft", "hard"):
            raise OptionError(f"--reward: got {s.reward!r}; allowed: soft, hard")
    if given.get("w") is not None:
        s.w = _float("w", given["w"], None, 0.0, "a number <= 0 (e.g. -0.07)")
    if given.get("seed") is not None:
        s.seed = _int("seed", given["seed"], 0)
    if given.get("workers") is not None:
        s.workers = _int("workers", given["workers"], 1)
    if given.get("eval_opts") is not None:
        if not isinstance(given["eval_opts"], dict):
            raise OptionError("eval_opts: allowed: a mapping of evaluator option: value")
        s.eval_opts = dict(given["eval_opts"])
    if given.get("formats") is not None:
        s.formats = parse_formats(given["formats"])
    s.resume = bool(given.get("resume"))
    if not s.target:
        raise OptionError(f"--target: missing; allowed: {', '.join(_targets())}")
    if not s.budget_ms:
        raise OptionError("--budget: missing; allowed: a positive latency such as 60ms, 60 ms or 0.06s")
    if s.sample_size > s.population:
        raise OptionError(f"--sample-size: got {s.sample_size}; allowed: at most --population ({s.population})")
    return s


def _targets() -> list[str]:
    try:
        import latency_models

        return list(latency_models.targets())
    except Exception:  # the list is only for the message
        return ["local-cpu", "pixel-cpu", "note10-cpu"]


def check_names(s: SearchSettings) -> None:
    """Unknown target, space or evaluator: one line listing the known ones (before any storage)."""
    import latency_models
    from search_space.space import space_names

    targets = list(latency_models.targets())
    is_file = s.target.endswith(".json") and Path(s.target).is_file()
    if s.target not in targets and not is_file:
        raise OptionError(f"--target: got {s.target!r}; allowed: {', '.join(targets)} or a target .json file")
    names = list(space_names())
    if s.space not in names and not (s.space.endswith((".yaml", ".yml")) and Path(s.space).is_file()):
        raise OptionError(f"--space: got {s.space!r}; allowed: {', '.join(names)} or a space YAML file")
    from searchers.evaluators import evaluator_names

    evs = list(evaluator_names())
    if s.evaluator not in evs:
        raise OptionError(f"--evaluator: got {s.evaluator!r}; allowed: {', '.join(evs)}")


def default_study_name(prefix: str, s: SearchSettings) -> str:
    space = Path(s.space).stem if s.space.endswith((".yaml", ".yml")) else s.space
    name = f"{prefix}-{space}-{s.evaluator}-{s.target}-{s.budget_ms:g}ms-{s.reward}-s{s.seed}"
    return name + dataset_suffix(s.dataset)


def dataset_suffix(dataset: str) -> str:
    """What a default study name / run folder gains for a data set other than the default (another data
    set is another study; the default keeps the old names): ``-<folder or file name>`` of the resolved
    path (an .npz without its extension), never just ``-``."""
    if dataset == SearchSettings.dataset:
        return ""
    p = Path(dataset).expanduser().resolve()
    name = p.stem if p.suffix == ".npz" else p.name
    return "-" + (name or "root")


def legacy_run_name(new: str, legacy: str, dataset: str, say=None) -> str:
    """The default run name to use: ``new``, unless runs/<new> does not exist and runs/<legacy>/study.db
    holds study ``legacy`` made with this ``dataset`` (a run made before the default name named a
    non-default data set): then ``legacy``, so the same command still resumes it.  ``say`` gets one line."""
    if new == legacy or (Path("runs") / new).exists():
        return new
    db = Path("runs") / legacy / "study.db"
    if not db.is_file():
        return new
    try:
        import optuna

        from searchers.records import SETTINGS_ATTR

        stored = optuna.load_study(study_name=legacy, storage=sqlite_url(db)).user_attrs.get(SETTINGS_ATTR) or {}
    except Exception:  # not a study of that name: the new name
        return new
    if stored.get("dataset") != dataset:
        return new
    if say is not None:
        say(f"note: using runs/{legacy} (made before the default run name named the data set; "
            f"a new run of this data set would be runs/{new})")
    return legacy


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("EDGENAS_CACHE", "~/.cache/edgenas")))


__all__ = ["OptionError", "SearchSettings", "add_search_options", "check_names", "dataset_suffix", "default_study_name",
           "legacy_run_name",
           "given_options", "load_config", "parse_budget", "parse_formats", "resolve"]
