"""``supernet``: accuracy of a subnet that inherits the weights of the space's trained supernet
(``searchers.supernet``): extract, re-estimate BatchNorm on a few batches, score on a fixed
validation subset (``evaluate_subnet``; see ``searchers.supernet`` for the cost) once the supernet is
trained (``prepare()`` trains it the first time, then loads it from the cache).  For mobile-unified the
supernet covers a scope of the space (``searchers.supernet.SCOPES``): ``fits`` / ``check`` say whether an
arch lies in it, ``search_space()`` is it, and ``sample`` / ``mutate`` / ``crossover`` stay in it."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from searchers.evaluators.base import Evaluator, EvaluatorError, as_eval_opt, pop_fields, unknown_option
from searchers.supernet import SupernetRecipe, default_recipe, evaluate_subnet, get_supernet, load_supernet
from search_space.errors import EdgenasError, field_error


def _device(value) -> "torch.device":
    """``device`` option: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when there is one)."""
    import torch
    allowed = ["cpu", "cuda", "cuda:N", "auto"]
    text = str(value).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise field_error(EvaluatorError, "--eval-opt device", value, allowed) from None
    if dev.type not in ("cpu", "cuda"):
        raise field_error(EvaluatorError, "--eval-opt device", value, allowed)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise field_error(EvaluatorError, "--eval-opt device", value,
                          ["cpu", "auto (no CUDA device on this machine)"])
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise field_error(EvaluatorError, "--eval-opt device", value,
                          ["cpu", "cuda", *(f"cuda:{i}" for i in range(n)), "auto"])
    return dev


class SupernetEvaluator(Evaluator):
    name = "supernet"

    def __init__(self, space=None, dataset="fashion-mnist", seed: int = 0,
                 recipe: SupernetRecipe | dict | None = None, cache_root: str | Path | None = None,
                 supernet_path: str | Path | None = None, progress: bool = True, log=None,
                 device: str = "cpu", **opts):
        super().__init__(space, dataset, seed)
        if self.space is None and supernet_path is None:
            raise EvaluatorError("supernet evaluator: space: got None; allowed: a space name, path or Space")
        fields_ = pop_fields(SupernetRecipe, opts, "supernet")
        if opts:  # (recipe, cache_root, progress and log are for callers, not the command line)
            raise unknown_option("supernet evaluator", sorted(opts)[0],
                                 ["supernet_path", "device", *SupernetRecipe.__dataclass_fields__])
        try:
            if isinstance(recipe, dict):
                recipe = SupernetRecipe(**recipe)
            self.recipe = replace(recipe, **fields_) if recipe is not None else default_recipe(self.space, **fields_)
        except EdgenasError as exc:
            raise as_eval_opt(exc) from None
        self.cache_root = Path(cache_root).expanduser() if cache_root else None
        self.supernet_path = Path(supernet_path).expanduser() if supernet_path else None
        self.progress = progress
        self.log = log
        self.device = _device(device)
        self.supernet = None
        self.trained_now = False

    def check_inputs(self) -> None:
        """The data set and a given ``supernet_path``, read now (before a search makes its study)."""
        super().check_inputs()
        if self.supernet_path is not None and self.supernet is None:
            self.supernet = load_supernet(self.supernet_path, "--eval-opt supernet_path")

    def _prepare(self) -> None:
        if self.supernet_path is not None:
            if self.supernet is None:
                self.supernet = load_supernet(self.supernet_path, "--eval-opt supernet_path")
        else:
            self.supernet, self.trained_now = get_supernet(self.space, self.data, self.recipe, self.seed,
                                                           self.cache_root, self.progress, self.log)
        if self.supernet.num_classes != self.data.num_classes:
            raise EvaluatorError(f"supernet evaluator: the supernet has {self.supernet.num_classes} classes, "
                                 f"the data set {self.data.num_classes}; allowed: the data set it was trained on")
        self.supernet.eval()

    def _evaluate(self, arch) -> float:
        self.supernet.check(arch)
        return evaluate_subnet(self.supernet, arch, self.data, self.recipe, self.seed, self.device)

    def fits(self, arch) -> bool:
        """Whether the supernet can score ``arch`` (for mobile-unified: whether it lies in the
        supernet's scope, ``searchers.supernet.SCOPES``); a searcher treats the others as infeasible."""
        self.prepare()
        return self.supernet.fits(arch)

    def check(self, arch) -> None:
        """Raise SpaceError (one line: the field outside, the allowed values) unless ``fits(arch)``."""
        self.prepare()
        self.supernet.check(arch)

    def search_space(self):
        """The Space the supernet covers (its scope's for mobile-unified, else the evaluator's space):
        sample / mutate / crossover there to stay within what this evaluator can score."""
        self.prepare()
        return self.supernet.covered_space(self.space)

    def sample(self, rng):
        """A random arch the supernet can score (a sample of ``search_space()``)."""
        self.prepare()
        return self.supernet.sample(self.space, rng)

    def mutate(self, arch, rng):
        """``search_space().mutate``: a neighbour of ``arch`` the supernet can still score."""
        return self.search_space().mutate(arch, rng)

    def crossover(self, a, b, rng):
        return self.search_space().crossover(a, b, rng)

    def extract(self, arch):
        """A standalone ``arch.build()`` module with the inherited weights (for fine-tuning/export)."""
        self.prepare()
        return self.supernet.extract(arch)
