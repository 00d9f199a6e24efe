"""Turn an ``Arch`` into a ``torch.nn.Module``: stem, one module per block (from the block-type
registry), head.  The model only wires the three; blocks know nothing of strings."""
from __future__ import annotations

from search_space.arch import Arch, Head, Stem
from search_space.blocks import get_block_type
from search_space.errors import ArchError, field_error


def stem_kwargs(stem: Stem) -> dict:
    kw = dict(in_ch=stem.in_ch, out_ch=stem.out_ch, kernel=stem.kernel, stride=stem.stride,
              act=stem.act, pool=stem.pool)
    if not stem.bn:
        kw["bn"] = False
    if stem.padding != "same":
        kw["padding"] = stem.padding
    return kw


def head_kwargs(head: Head, in_ch: int, num_classes: int) -> dict:
    kw = dict(in_ch=in_ch, num_classes=num_classes, last_ch=head.last_ch, hidden_ch=head.hidden_ch,
              act=head.act, dropout=head.dropout)
    if not head.hidden_bias:
        kw["hidden_bias"] = False
    if head.classifier != "linear":
        kw["classifier"] = head.classifier
    if not head.classifier_bias:
        kw["classifier_bias"] = False
    return kw


def module_plan(arch: Arch, num_classes: int = 1000) -> list[tuple[str, dict]]:
    """(modules.py class name, kwargs) for the stem, each block and the head, in order: what
    ``build`` instantiates and what an exporter writes out as plain code."""
    _check_classes(num_classes)
    plan = [("Stem", stem_kwargs(arch.stem))]
    for b in arch.blocks:
        bt = get_block_type(b.type)
        plan.append((bt.module_class, bt.kwargs(b)))
    plan.append(("Head", head_kwargs(arch.head, arch.out_ch, num_classes)))
    return plan


def _check_classes(num_classes) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        raise field_error(ArchError, "num_classes", num_classes, "a positive integer")


def build(arch: Arch, num_classes: int = 1000):
    """The ``modules.Net`` of ``arch`` with a ``num_classes``-way classifier (random init)."""
    from search_space import modules

    if not isinstance(arch, Arch):
        raise field_error(ArchError, "arch", type(arch).__name__, "an Arch")
    plan = module_plan(arch, num_classes)
    built = [getattr(modules, name)(**kw) for name, kw in plan]
    net = modules.Net(stem=built[0], blocks=built[1:-1], head=built[-1])
    init_weights(net)
    return net


def init_weights(net) -> None:
    """torchvision's MobileNet init: kaiming-normal (fan_out) convs, unit BN, small-normal linears."""
    import torch.nn as nn

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


__all__ = ["build", "head_kwargs", "init_weights", "module_plan", "stem_kwargs"]
