"""MnasNet's multi-objective reward: ``ACC * (LAT / T) ** w``.

``w = alpha`` when the latency is within the budget ``T`` and ``w = beta`` over it.
MnasNet (Tan et al., 2019, eq. 2) uses ``alpha = beta = -0.07`` for a soft constraint (a network
twice as fast is worth about 5% relative accuracy) and ``alpha = 0, beta = -1`` for a hard one
(accuracy alone under the budget, a steep penalty over it).
"""
from __future__ import annotations

from dataclasses import dataclass

from search_space.errors import EdgenasError

MODES = ("soft", "hard")
DEFAULT_W = -0.07


class RewardError(EdgenasError, ValueError):
    """A reward setting is out of range."""


@dataclass(frozen=True)
class Reward:
    budget_ms: float
    alpha: float = DEFAULT_W
    beta: float = DEFAULT_W
    mode: str = "soft"

    def __post_init__(self) -> None:
        if not self.budget_ms > 0:
            raise RewardError(f"--budget: got {self.budget_ms!r} ms; allowed: a positive latency")
        if self.mode not in MODES:
            raise RewardError(f"--reward: got {self.mode!r}; allowed: {', '.join(MODES)}")

    @classmethod
    def make(cls, budget_ms: float, mode: str = "soft", w: float | None = None) -> "Reward":
        """``soft``: alpha = beta = w (default -0.07); ``hard``: alpha = 0, beta = w (default -1)."""
        if mode not in MODES:
            raise RewardError(f"--reward: got {mode!r}; allowed: {', '.join(MODES)}")
        if w is not None and (not isinstance(w, (int, float)) or w > 0):
            raise RewardError(f"--w: got {w!r}; allowed: a number <= 0")
        if mode == "soft":
            w = DEFAULT_W if w is None else float(w)
            return cls(float(budget_ms), w, w, mode)
        return cls(float(budget_ms), 0.0, -1.0 if w is None else float(w), mode)

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        if latency_ms <= 0:
            return float(accuracy)
        w = self.alpha if latency_ms <= self.budget_ms else self.beta
        return float(accuracy) * (float(latency_ms) / self.budget_ms) ** w

    def feasible(self, latency_ms: float) -> bool:
        return latency_ms <= self.budget_ms
