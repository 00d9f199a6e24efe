"""The evaluator interface: ``prepare()`` once, then ``evaluate(arch) -> accuracy in [0, 1]``.

Every evaluator records what an evaluation cost: ``last_cost_s`` (seconds of the last
``evaluate``), ``total_cost_s`` and ``n_evals``; ``prepare_cost_s`` is the one-off cost (training or
loading a supernet).  Accuracy is measured at the data set's resolution (32x32 for Fashion-MNIST);
latency, elsewhere, at the deployment resolution -- see ``searchers.data``.
"""
from __future__ import annotations

import time

from search_space.arch import Arch
from search_space.errors import field_error
from search_space.errors import EdgenasError


class EvaluatorError(EdgenasError, ValueError):
    """An evaluator name or option is wrong."""


class Evaluator:
    name = "base"

    def __init__(self, space=None, dataset="fashion-mnist", seed: int = 0):
        self.space = _space(space)
        self.dataset = dataset
        self.seed = int(seed)
        self._data = None
        self.prepared = False
        self.last_cost_s = 0.0
        self.total_cost_s = 0.0
        self.prepare_cost_s = 0.0
        self.n_evals = 0

    @property
    def data(self):
        """The data set, loaded on first use (a ``searchers.data.Dataset`` may be passed directly)."""
        if self._data is None:
            from searchers.data import Dataset, load_dataset

            self._data = self.dataset if isinstance(self.dataset, Dataset) else load_dataset(self.dataset, self.seed)
        return self._data

    def prepare(self) -> "Evaluator":
        if not self.prepared:
            t0 = time.perf_counter()
            self._prepare()
            self.prepare_cost_s = time.perf_counter() - t0
            self.prepared = True
        return self

    def _prepare(self) -> None:
        self.data  # noqa: B018 -- load it

    def check_inputs(self) -> None:
        """Read what the user gave (the data set; a subclass adds its files) without the one-off work of
        ``prepare()``: a searcher calls it before it makes its study, so a bad input leaves nothing."""
        self.data  # noqa: B018 -- load it

    def evaluate(self, arch: Arch) -> float:
        if not isinstance(arch, Arch):
            raise field_error(EvaluatorError, "arch", type(arch).__name__, "an Arch")
        self.prepare()
        t0 = time.perf_counter()
        acc = float(self._evaluate(arch))
        self.last_cost_s = time.perf_counter() - t0
        self.total_cost_s += self.last_cost_s
        self.n_evals += 1
        return acc

    def evaluate_many(self, archs) -> list[float]:
        return [self.evaluate(a) for a in archs]

    def _evaluate(self, arch: Arch) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        space = getattr(self.space, "name", None)
        return f"{type(self).__name__}(space={space!r}, dataset={str(self.dataset)!r}, seed={self.seed})"


def _space(space):
    if isinstance(space, str):
        from search_space.space import load_space

        return load_space(space)
    return space


def as_eval_opt(exc: Exception) -> EvaluatorError:
    """A recipe's own error (``recipe.epochs: got 'abc' ...``) as the user wrote it: ``--eval-opt epochs: ...``."""
    return EvaluatorError(str(exc).replace("recipe.", "--eval-opt ", 1))


class UnknownOption(EvaluatorError):
    """An --eval-opt key the evaluator does not take; ``key`` and ``names`` (the user-given options it
    does take) stay readable, so a wrapping evaluator can name its own options beside them."""

    def __init__(self, where: str, key: str, names):
        self.key, self.names = key, list(names)
        super().__init__(f"--eval-opt: got {key!r}; allowed: {where} options {', '.join(self.names)}")


def unknown_option(where: str, key: str, names) -> UnknownOption:
    """``--eval-opt: got 'epochz'; allowed: <where> options epochs, lr, ...`` (the user-given options only)."""
    return UnknownOption(where, key, names)


def pop_fields(cls, opts: dict, where: str) -> dict:
    """Take the dataclass ``cls``'s fields out of ``opts`` (raising on wrong types)."""
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    return {k: opts.pop(k) for k in list(opts) if k in names}
