"""Accuracy evaluators: one interface, three costs.

    get_evaluator(name, space=<Space or name>, dataset="fashion-mnist", seed=0, **opts) -> Evaluator
    ev.prepare()                 # one-off work (train / load the supernet, load data)
    ev.evaluate(arch) -> float   # accuracy in [0, 1]; ev.last_cost_s holds its cost in seconds

``supernet``  weight-sharing supernet (searchers.supernet): ~1 s per arch once trained.
``train``     stand-alone short training (searchers.training.Recipe): the ground truth, minutes.
``proxy``     trainless zero-cost score (naswot / synflow / gradnorm): instant; a rank, not an accuracy.
``predictor`` a model of the supernet's accuracy fitted once to its evaluations of random archs
              (searchers.evaluators.predictor): ~1 ms per arch; reports its held-out Kendall tau.
"""
from __future__ import annotations

from search_space.errors import field_error
from searchers.evaluators.base import Evaluator, EvaluatorError

_NAMES = ("supernet", "train", "proxy", "predictor")


def evaluator_names() -> list[str]:
    return list(_NAMES)


def get_evaluator(name: str, space=None, dataset="fashion-mnist", seed: int = 0, **opts) -> Evaluator:
    return evaluator_class(name)(space=space, dataset=dataset, seed=seed, **opts)


def with_progress(name: str, opts: dict, progress: bool) -> dict:
    """``opts`` with a command's --no-progress: ``progress=False`` for an evaluator whose constructor takes
    ``progress`` (unless the options set it).  With bars on, each keeps its own default: the supernet's and
    predictor's one-off training bar on, the train evaluator's per-arch bar off (it would sit under the
    search's bar)."""
    import inspect

    opts = dict(opts)
    if not progress and "progress" in inspect.signature(evaluator_class(name).__init__).parameters:
        opts.setdefault("progress", False)
    return opts


def evaluator_class(name: str) -> type:
    if name == "supernet":
        from searchers.evaluators.supernet import SupernetEvaluator as cls
    elif name == "train":
        from searchers.evaluators.train import TrainEvaluator as cls
    elif name == "proxy":
        from searchers.evaluators.proxy import ProxyEvaluator as cls
    elif name == "predictor":
        from searchers.evaluators.predictor import PredictorEvaluator as cls
    else:
        raise field_error(EvaluatorError, "evaluator", name, _NAMES)
    return cls


__all__ = ["Evaluator", "EvaluatorError", "evaluator_class", "evaluator_names", "get_evaluator"]
