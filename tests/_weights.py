"""Test helper: trained-like random weights for comparing exported files with torch."""
from __future__ import annotations

import torch


def trained_like_weights(model: torch.nn.Module, seed: int, unit_gain: bool = False) -> dict:
    """Random weights with non-trivial BN statistics, so that eval-mode BN (and its folding) matters.
    ``unit_gain``: conv and linear weights at unit-gain scale (1/sqrt(fan_in)), so that the output is
    O(1) and depends on the input (torch's default init shrinks the signal layer by layer and a 1e-4
    tolerance would then say little in a deep mixed net)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if unit_gain and k.endswith("weight") and v.dim() >= 2:
            v = torch.randn(v.shape, generator=g) * (1.0 / v[0].numel()) ** 0.5
        elif k.endswith("running_var"):
            v = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean"):
            v = 0.1 * torch.randn(v.shape, generator=g)
        elif v.is_floating_point():
            v = v + 0.05 * torch.randn(v.shape, generator=g)
        sd[k] = v
    return sd
