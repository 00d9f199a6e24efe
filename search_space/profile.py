"""Analytic cost of an ``Arch``: parameters (all of them, BatchNorm affine included) and
conv+linear multiply-accumulates, layer by layer over ``signatures()`` -- no torch needed.

``count_module`` measures the same two numbers on a built module with forward hooks; the tests
check that both agree for every zoo entry.
"""
from __future__ import annotations

from search_space.arch import Arch, Head, Signature, Stem, signatures
from search_space.blocks import conv_cost, get_block_type


def stem_cost(stem: Stem, h: int, w: int) -> tuple[int, int]:
    p, m, _, _ = conv_cost(stem.in_ch, stem.out_ch, stem.kernel, stem.stride, h, w, bias=not stem.bn,
                           bn=stem.bn, padding=stem.padding)
    return p, m


def head_cost(head: Head, in_ch: int, h: int, w: int, num_classes: int) -> tuple[int, int]:
    params = macs = 0
    ch = in_ch
    if head.last_ch:
        p, m, _, _ = conv_cost(ch, head.last_ch, 1, 1, h, w)
        params, macs, ch = params + p, macs + m, head.last_ch
    if head.hidden_ch:
        params += ch * head.hidden_ch + (head.hidden_ch if head.hidden_bias else 0)
        macs += ch * head.hidden_ch
        ch = head.hidden_ch
    positions = h * w if head.classifier == "conv" else 1  # a conv classifier runs on the feature map
    bias = num_classes if head.classifier_bias else 0
    return params + ch * num_classes + bias, macs + ch * num_classes * positions


def layer_cost(sig: Signature) -> tuple[int, int]:
    """(params, macs) of one layer at its input shape."""
    if sig.kind == "stem":
        return stem_cost(sig.spec, sig.h, sig.w)
    if sig.kind == "head":
        return head_cost(sig.spec, sig.in_ch, sig.h, sig.w, sig.num_classes)
    return get_block_type(sig.spec.type).cost(sig.spec, sig.h, sig.w)


def profile_layers(arch: Arch, resolution: int | tuple[int, int] = 224,
                   num_classes: int = 1000) -> list[tuple[str, int, int]]:
    """(signature key, params, macs) per layer."""
    return [(s.key, *layer_cost(s)) for s in signatures(arch, resolution, num_classes)]


def profile(arch: Arch, resolution: int | tuple[int, int] = 224, num_classes: int = 1000) -> dict[str, int]:
    """{"params": int, "macs": int} of ``arch`` at input ``resolution`` (analytic)."""
    rows = profile_layers(arch, resolution, num_classes)
    return {"params": sum(r[1] for r in rows), "macs": sum(r[2] for r in rows)}


def count_module(module, resolution: int | tuple[int, int] = 224, in_ch: int = 3) -> dict[str, int]:
    """Parameters and conv+linear MACs of a torch module, measured with forward hooks on one
    1 x in_ch x H x W input (the ground truth the analytic ``profile`` is tested against)."""
    import torch
    from torch import nn

    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        total[0] += out.numel() // out.shape[0] * m.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, in_ch, h, w))
    finally:
        for hd in handles:
            hd.remove()
        module.train(was_training)
    return {"params": sum(p.numel() for p in module.parameters()), "macs": total[0]}


__all__ = ["count_module", "head_cost", "layer_cost", "profile", "profile_layers", "stem_cost"]
