"""MnasNet's controller: an LSTM policy over a space's factorized encoding, trained by policy gradients.

The policy emits one token per decision of ``Space.encode`` (``cardinalities()`` gives the number
of options of each), left to right; the token chosen at step ``i`` is fed back, embedded, as the
input of step ``i + 1`` (Zoph & Le 2017; ENAS; MnasNet, Tan et al. 2019, section 4).  Decisions
whose value an arch ignores (layer slots beyond the chosen depth) still get tokens; the arch is
``space.decode(tokens)``.

Training (:class:`PolicyGradient`):

* ``reinforce``: ``loss = -A * log p(tokens)``, ``A = (R - b) / s`` with ``b`` an exponential moving
  average of the rewards (ENAS's baseline, decay 0.95) and ``s`` the square root of a moving average
  of ``(R - b)^2`` (``normalize``; else ``s = 1 / reward_scale``), one Adam step per batch;
* ``ppo`` (MnasNet's choice): the same advantage, then ``ppo_epochs`` passes of the clipped
  surrogate ``min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)`` on the batch (Schulman et al. 2017);

both with an entropy bonus.  Sampling uses its own ``torch.Generator``; together with the weights,
the optimizer and the baseline its state is part of :meth:`PolicyGradient.state_dict`, so a search
that reloads a checkpoint continues exactly as if it had not stopped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from search_space.errors import EdgenasError

ALGOS = ("ppo", "reinforce")


class ControllerError(EdgenasError, ValueError):
    """A controller setting is out of range, or a checkpoint does not fit the space."""


class Controller(nn.Module):
    """LSTM policy: ``len(cardinalities)`` steps, step ``i`` a softmax over ``cardinalities[i]`` options.

    All decisions share one LSTM cell; each has its own rows of one output layer and of one token
    embedding (offsets into a concatenation), so 150 decisions cost two matrices, not 300 modules.
    Logits are ``tanh_c * tanh(z / temperature)`` (ENAS's bounded logits: the policy cannot
    collapse to one arch within a few updates).
    """

    def __init__(self, cardinalities: Sequence[int], hidden: int = 64, tanh_c: float = 2.5,
                 temperature: float = 5.0, seed: int = 0):
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if not cards or any(c < 1 for c in cards):
            raise ControllerError(f"cardinalities: got {cards[:8]}; allowed: a non-empty list of integers >= 1")
        self.cards = cards
        self.hidden, self.tanh_c, self.temperature = int(hidden), float(tanh_c), float(temperature)
        offsets = [0]
        for c in cards:
            offsets.append(offsets[-1] + c)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        g = torch.Generator().manual_seed(int(seed))  # weights from the seed, not from the global RNG
        total = offsets[-1]
        self.start = nn.Parameter(torch.empty(hidden).uniform_(-0.1, 0.1, generator=g))
        self.embed = nn.Parameter(torch.empty(total, hidden).uniform_(-0.1, 0.1, generator=g))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.out_w = nn.Parameter(torch.empty(total, hidden).uniform_(-0.1, 0.1, generator=g))
        self.out_b = nn.Parameter(torch.zeros(total))
        with torch.no_grad():
            for p in self.cell.parameters():
                p.uniform_(-0.1, 0.1, generator=g)

    def _logits(self, h: torch.Tensor, i: int) -> torch.Tensor:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        z = h @ self.out_w[a:b].t() + self.out_b[a:b]
        return self.tanh_c * torch.tanh(z / self.temperature)

    def _run(self, n: int, tokens: torch.Tensor | None, generator: torch.Generator | None, explore: float):
        h = torch.zeros(n, self.hidden)
        c = torch.zeros(n, self.hidden)
        x = self.start.expand(n, -1)
        out, logp, ent = [], torch.zeros(n), torch.zeros(n)
        for i in range(len(self.cards)):
            h, c = self.cell(x, (h, c))
            logits = self._logits(h, i)
            lp = torch.log_softmax(logits, dim=-1)
            if tokens is None:
                probs = torch.softmax(logits / explore, dim=-1) if explore != 1.0 else lp.exp()
                t = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                t = tokens[:, i]
            out.append(t)
            logp = logp + lp.gather(1, t[:, None]).squeeze(1)
            ent = ent - (lp.exp() * lp).sum(-1)
            x = self.embed[self.offsets[i] + t]
        return torch.stack(out, 1), logp, ent

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, explore: float = 1.0):
        """``n`` token sequences ``[n, D]`` with their log-probabilities and entropies under the policy.

        ``explore > 1`` flattens the sampling distribution (the log-probabilities stay the policy's).
        """
        return self._run(int(n), None, generator, float(explore))

    def evaluate(self, tokens: torch.Tensor):
        """(log p(tokens), entropy per sequence), differentiable: teacher-forced over ``tokens``."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 2 or tokens.shape[1] != len(self.cards):
            raise ControllerError(f"tokens: got shape {tuple(tokens.shape)}; allowed: [n, {len(self.cards)}]")
        _, logp, ent = self._run(tokens.shape[0], tokens, None, 1.0)
        return logp, ent

    @torch.no_grad()
    def mode(self) -> list[int]:
        """The greedy token sequence (argmax at every step)."""
        h = torch.zeros(1, self.hidden)
        c = torch.zeros(1, self.hidden)
        x = self.start[None]
        out = []
        for i in range(len(self.cards)):
            h, c = self.cell(x, (h, c))
            t = self._logits(h, i).argmax(-1)
            out.append(int(t))
            x = self.embed[self.offsets[i] + t]
        return out


@dataclass
class PGConfig:
    """Policy-gradient settings (all stored in the study: a resumed search must use the same)."""

    algo: str = "ppo"
    batch: int = 2               # samples per update (tuned: 2 beat 4 and 8 at 300 evaluations, docs/rl_nni.md)
    lr: float = 0.0035           # Adam, as ENAS's controller
    entropy: float = 1e-4        # entropy bonus weight (ENAS 1e-4)
    baseline_decay: float = 0.95 # moving-average baseline (ENAS 0.95)
    clip: float = 0.2            # PPO clip epsilon
    ppo_epochs: int = 4          # PPO passes per batch
    hidden: int = 64             # LSTM width
    normalize: bool = True       # advantages (R - b) / (moving std of R - b): scale-free ...
    reward_scale: float = 10.0   # ... or, when False, (R - b) * scale (rewards live in [0, 1])

    def check(self) -> "PGConfig":
        if self.algo not in ALGOS:
            raise ControllerError(f"--algo: got {self.algo!r}; allowed: {', '.join(ALGOS)}")
        for name, lo in (("batch", 1), ("ppo_epochs", 1), ("hidden", 4)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ControllerError(f"--{name.replace('_', '-')}: got {v!r}; allowed: an integer >= {lo}")
        rules = {"lr": (lambda v: v > 0, "a number > 0"), "entropy": (lambda v: v >= 0, "a number >= 0"),
                 "baseline_decay": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
                 "clip": (lambda v: 0 < v < 1, "a number in (0, 1)"),
                 "reward_scale": (lambda v: v > 0, "a number > 0")}
        for name, (ok, what) in rules.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ControllerError(f"--{name.replace('_', '-')}: got {v!r}; allowed: {what}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class PolicyGradient:
    """A controller, its optimizer, baseline and sampling generator: sample a batch, update on rewards."""

    def __init__(self, cardinalities: Sequence[int], config: PGConfig | None = None, seed: int = 0):
        self.config = (config or PGConfig()).check()
        self.seed = int(seed)
        self.policy = Controller(cardinalities, hidden=self.config.hidden, seed=self.seed)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr)
        self.generator = torch.Generator().manual_seed(self.seed + 1)
        self.baseline: float | None = None
        self.spread: float | None = None  # moving mean of (R - b)^2 (normalize)
        self.updates = 0
        self.explore = 1.0  # > 1 while the policy keeps proposing archs already evaluated

    @property
    def cards(self) -> list[int]:
        return self.policy.cards

    def sample(self, n: int | None = None):
        """(tokens as lists of ints, their log-probabilities as a tensor) for one batch."""
        tokens, logp, _ = self.policy.sample(n or self.config.batch, self.generator, self.explore)
        return [list(map(int, row)) for row in tokens], logp

    def update(self, tokens: Sequence[Sequence[int]], rewards: Sequence[float], old_logp: torch.Tensor | None = None) -> dict:
        """One policy-gradient update on a batch; returns its statistics."""
        cfg = self.config
        t = torch.tensor([list(x) for x in tokens], dtype=torch.long)
        r = torch.tensor([float(x) for x in rewards], dtype=torch.float32)
        mean_r = float(r.mean())
        if self.baseline is None:
            self.baseline = mean_r  # first batch: its mean (no advantage for a lucky first draw)
        if cfg.normalize:
            dev = float(((r - self.baseline) ** 2).mean())
            self.spread = dev if self.spread is None else \
                cfg.baseline_decay * self.spread + (1 - cfg.baseline_decay) * dev
            adv = (r - self.baseline) / (math.sqrt(self.spread) + 1e-3)
        else:
            adv = (r - self.baseline) * cfg.reward_scale
        stats = {"reward_mean": mean_r, "baseline": self.baseline, "adv_abs": float(adv.abs().mean())}
        if cfg.algo == "reinforce":
            logp, ent = self.policy.evaluate(t)
            loss = -(adv * logp).mean() - cfg.entropy * ent.mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            stats.update(loss=float(loss.detach()), entropy=float(ent.detach().mean()))
        else:
            if old_logp is None:
                with torch.no_grad():
                    old_logp, _ = self.policy.evaluate(t)
            old_logp = old_logp.detach()
            for _ in range(cfg.ppo_epochs):
                logp, ent = self.policy.evaluate(t)
                ratio = torch.exp(logp - old_logp)
                surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
                loss = -surr.mean() - cfg.entropy * ent.mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
            stats.update(loss=float(loss.detach()), entropy=float(ent.detach().mean()), ratio=float(ratio.detach().mean()))
        self.baseline = cfg.baseline_decay * self.baseline + (1 - cfg.baseline_decay) * mean_r
        self.updates += 1
        return stats

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": self.config.to_dict(), "seed": self.seed, "cards": list(self.cards),
                "policy": self.policy.state_dict(), "opt": self.opt.state_dict(),
                "generator": self.generator.get_state(), "baseline": self.baseline, "spread": self.spread,
                "updates": self.updates, "explore": self.explore}

    def load_state_dict(self, state: dict) -> None:
        if list(state.get("cards", [])) != list(self.cards):
            raise ControllerError("checkpoint: made for another space encoding "
                                  f"({len(state.get('cards', []))} decisions, this space has {len(self.cards)})")
        if state.get("config") != self.config.to_dict() or state.get("seed") != self.seed:
            raise ControllerError("checkpoint: made with other controller settings or seed; "
                                  "use the same options or another --out")
        self.policy.load_state_dict(state["policy"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.spread = state.get("spread")
        self.updates = int(state["updates"])
        self.explore = float(state.get("explore", 1.0))


__all__ = ["ALGOS", "Controller", "ControllerError", "PGConfig", "PolicyGradient"]
