"""``train``: stand-alone short training with the fixed recipe of ``searchers.training`` -- the
ground truth the other evaluators are judged against (minutes per arch on a CPU)."""
from __future__ import annotations

from dataclasses import replace

from searchers.evaluators.base import Evaluator, EvaluatorError, as_eval_opt, pop_fields, unknown_option
from searchers.training import Recipe, train_arch
from search_space.errors import EdgenasError, field_error


class TrainEvaluator(Evaluator):
    name = "train"

    def __init__(self, space=None, dataset="fashion-mnist", seed: int = 0, recipe: Recipe | dict | None = None,
                 split: str = "val", progress: bool = False, **opts):
        super().__init__(space, dataset, seed)
        fields_ = pop_fields(Recipe, opts, "train")
        if opts:  # (recipe and progress are for callers, not the command line)
            raise unknown_option("train evaluator", sorted(opts)[0], ["split", *Recipe.__dataclass_fields__])
        try:
            if isinstance(recipe, dict):
                recipe = Recipe(**recipe)
            self.recipe = replace(recipe or Recipe(), **fields_)
        except EdgenasError as exc:
            raise as_eval_opt(exc) from None
        if split not in ("val", "test"):
            raise field_error(EvaluatorError, "--eval-opt split", split, ["val", "test"])
        self.split = split
        self.progress = progress
        self.results: dict[str, dict] = {}     # arch string -> stats of its training run
        self.last_model = None

    def _evaluate(self, arch) -> float:
        model, stats = train_arch(arch, self.data, self.recipe, seed=self.seed, progress=self.progress,
                                  split=self.split)
        self.results[arch.to_string()] = stats
        self.last_model = model
        return stats["accuracy"]
