"""``supernet``: accuracy of a subnet that inherits the weights of the space's trained supernet
(``searchers.supernet``): extract, re-estimate BatchNorm on a few batches, score on a fixed
validation subset -- about a second per arch once the supernet is trained (``prepare()`` trains it
the first time, then loads it from the cache)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from searchers.evaluators.base import Evaluator, EvaluatorError, pop_fields
from searchers.supernet import SupernetRecipe, default_recipe, evaluate_subnet, get_supernet, load_supernet
from search_space.errors import field_error


class SupernetEvaluator(Evaluator):
    name = "supernet"

    def __init__(self, space=None, dataset="fashion-mnist", seed: int = 0,
                 recipe: SupernetRecipe | dict | None = None, cache_root: str | Path | None = None,
                 supernet_path: str | Path | None = None, progress: bool = True, log=None, **opts):
        super().__init__(space, dataset, seed)
        if self.space is None and supernet_path is None:
            raise EvaluatorError("supernet evaluator: space: got None; allowed: a space name, path or Space")
        fields_ = pop_fields(SupernetRecipe, opts, "supernet")
        if opts:
            k = sorted(opts)[0]
            raise field_error(EvaluatorError, f"supernet evaluator option {k}", k,
                              ["recipe", "cache_root", "supernet_path", "progress", "log",
                               *SupernetRecipe.__dataclass_fields__])
        if isinstance(recipe, dict):
            recipe = SupernetRecipe(**recipe)
        self.recipe = replace(recipe, **fields_) if recipe is not None else default_recipe(self.space, **fields_)
        self.cache_root = Path(cache_root).expanduser() if cache_root else None
        self.supernet_path = Path(supernet_path).expanduser() if supernet_path else None
        self.progress = progress
        self.log = log
        self.supernet = None
        self.trained_now = False

    def _prepare(self) -> None:
        if self.supernet_path is not None:
            self.supernet = load_supernet(self.supernet_path)
        else:
            self.supernet, self.trained_now = get_supernet(self.space, self.data, self.recipe, self.seed,
                                                           self.cache_root, self.progress, self.log)
        if self.supernet.num_classes != self.data.num_classes:
            raise EvaluatorError(f"supernet evaluator: the supernet has {self.supernet.num_classes} classes, "
                                 f"the data set {self.data.num_classes}; allowed: the data set it was trained on")
        self.supernet.eval()

    def _evaluate(self, arch) -> float:
        self.supernet.check(arch)
        return evaluate_subnet(self.supernet, arch, self.data, self.recipe, self.seed)

    def fits(self, arch) -> bool:
        """Whether ``arch`` lies within the supernet (always, except for reduced-scale spaces)."""
        self.prepare()
        return self.supernet.fits(arch)

    def sample(self, rng):
        """A uniform sample of the space that the supernet can score."""
        self.prepare()
        return self.supernet.sample(self.space, rng)

    def extract(self, arch):
        """A standalone ``arch.build()`` module with the inherited weights (for fine-tuning/export)."""
        self.prepare()
        return self.supernet.extract(arch)
