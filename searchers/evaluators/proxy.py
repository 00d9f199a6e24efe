"""``proxy``: trainless zero-cost scores of a randomly initialised network (instant).

* ``naswot`` (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the
  log-determinant of the Hamming kernel of the binary activation codes (unit > 0) of every
  ReLU-family activation over one batch of images;
* ``synflow`` (Tanaka et al. 2020, as a NAS proxy by Abdelfattah et al. 2021): sum of
  |theta * dR/dtheta| with R the output sum of the network with |weights| on an all-ones input
  (double precision, BN in eval mode), reported as its log;
* ``gradnorm``: the summed L2 norms of the weight gradients of the cross-entropy on one batch.

The raw score is kept in ``last_score``; ``evaluate`` returns a monotone squash of it into (0, 1)
(a logistic around a fixed centre per proxy), so only the *order* is meaningful, not the value.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from searchers.evaluators.base import Evaluator, EvaluatorError, unknown_option
from search_space.errors import field_error

PROXIES = ("naswot", "synflow", "gradnorm")
# the squash: logistic((t(score) - centre) / scale), t = naswot / batch size, log synflow (already a
# log), log gradnorm; centres and scales span the zoo's raw values at 32x32 (Fashion-MNIST, batch 64)
_SQUASH = {"naswot": (9.0, 2.0), "synflow": (20.0, 15.0), "gradnorm": (4.0, 2.0)}
_RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.LeakyReLU)


def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    codes = []

    def hook(_m, _inp, out):
        codes.append((out.detach().flatten(1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _RELU_FAMILY)]
    model.train()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return 0.0
    c = torch.cat(codes, 1)
    k = c @ c.t() + (1 - c) @ (1 - c).t()
    return float(torch.linalg.slogdet(k)[1])


def synflow_score(model: nn.Module, shape: tuple[int, ...]) -> float:
    model = model.double().eval()
    signs = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                signs[name] = torch.sign(p)
                p.abs_()
    model.zero_grad()
    out = model(torch.ones((1, *shape[1:]), dtype=torch.float64))
    torch.sum(out).backward()
    total = 0.0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
            total += float((m.weight * m.weight.grad).abs().sum().detach())
    return math.log(total) if total > 0 else -1e9


def gradnorm_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return float(sum(float(m.weight.grad.norm()) for m in model.modules()
                     if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None))


class ProxyEvaluator(Evaluator):
    name = "proxy"

    def __init__(self, space=None, dataset="fashion-mnist", seed: int = 0, proxy: str = "naswot",
                 batch_size: int = 64, **opts):
        super().__init__(space, dataset, seed)
        if opts:
            k = sorted(opts)[0]
            raise unknown_option("proxy evaluator", k, ["proxy", "batch_size"])
        if proxy not in PROXIES:
            raise field_error(EvaluatorError, "--eval-opt proxy", proxy, PROXIES)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2:
            raise field_error(EvaluatorError, "--eval-opt batch_size", batch_size, "an integer >= 2")
        self.proxy = proxy
        self.batch_size = batch_size
        self.last_score = float("nan")
        self._batch = None

    def _prepare(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(self.data.train), generator=g)[: self.batch_size]
        self._batch = self.data.train.batch(idx)

    def score(self, arch) -> float:
        """The raw proxy score of ``arch`` (randomly initialised from ``seed``)."""
        self.prepare()
        torch.manual_seed(self.seed)
        model = arch.build(num_classes=self.data.num_classes)
        x, y = self._batch
        if self.proxy == "naswot":
            return naswot_score(model, x)
        if self.proxy == "synflow":
            return synflow_score(model, tuple(x.shape))
        return gradnorm_score(model, x, y)

    def _evaluate(self, arch) -> float:
        self.last_score = self.score(arch)
        centre, scale = _SQUASH[self.proxy]
        t = self.last_score
        if self.proxy == "naswot":
            t = t / self.batch_size
        elif self.proxy == "gradnorm":
            t = math.log(max(t, 1e-12))
        z = max(-60.0, min(60.0, (t - centre) / scale))
        return 1.0 / (1.0 + math.exp(-z))
