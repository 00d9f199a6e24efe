"""Channel pruning of a real network: an ``Arch`` + its ``state_dict`` -> a smaller ``Arch`` + the
kept weights, copied (no masks).

The channels of a network fall into *groups*: sets of tensor channels that must shrink together
with the same kept indices.  ``channel_map(arch)`` finds them; each prunable group has a *kind*,
the three proposals of NetAdapt (Yang et al. 2018) as MobileNetV3 (Howard et al. 2019) used it:

``mid``      the expansion (mid) channels of one mbconv block: its expand conv's filters, the
             expand/dw BatchNorms, the depthwise filters, the SE's input and output channels and
             the project conv's input channels.
``width``    a bottleneck width shared by a residual chain: every block connected by a residual
             add (and the stem, when the first block adds to it) writes the same channels, so they
             shrink together; the next block's ``in_ch`` (its expand/depthwise input, or the head's
             input) follows.  Residual connections stay valid by construction.
``filters``  the output filters of any other single layer: the stem, a block output that no
             residual add shares, the head's last 1x1 conv and its hidden layer (NetAdapt's
             per-layer proposal).

A block without an expansion conv (mbconv with ``mid_ch == in_ch``, dwsep) runs its depthwise conv
on its input channels, so those follow the input's group.  Squeeze-and-excite: when the channels
an SE gates shrink, its bottleneck width is recomputed by the network's rule (the block's SE ratio
``se_ch / mid_ch`` kept, rounded to a multiple of 8, never above the old width) and the SE units
with the largest fc1 filters are kept.  Block types other than mbconv and dwsep, and grouped 1x1
convs, are not pruned (their groups are reported as fixed).

Which channels survive: NetAdapt's magnitude criterion.  A channel's importance is the L2 norm of
the filter that produces it; when several convs produce a group (a residual chain), each conv's
norms are divided by their mean and summed.  The kept channels keep their original order.

Every tensor is sliced along each of its dims by the kept indices of that dim's group
(``tensor_dims``), BatchNorm running statistics included, so the pruned network computes exactly
what the original computes restricted to the kept channels wherever the removed channels
contributed nothing (tested).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from search_space.arch import Arch, BlockSpec, make_divisible
from search_space.errors import ArchError, field_error

KINDS = ("filters", "mid", "width")
PRUNABLE_TYPES = ("mbconv", "dwsep")
STEP = 8           # channel counts are multiples of 8 (make-divisible)
MIN_CHANNELS = 8

_BN = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Group:
    """A set of channels that shrink together."""

    name: str                 # e.g. "mid:b4", "width:b3-b5", "filters:head.last", "se:b4"
    kind: str                 # filters | mid | width | se | fixed
    size: int
    producers: tuple[str, ...] = ()   # weight keys whose dim 0 produces these channels

    @property
    def prunable(self) -> bool:
        return self.kind in KINDS


@dataclass
class ChannelMap:
    """The channel groups of an arch and, per state_dict key, the group of each tensor dim."""

    arch: Arch
    groups: dict[str, Group]
    dims: dict[str, tuple[str | None, ...]]            # key -> group name per dim (None: not pruned)
    tensor_group: list[str]                             # t0 (stem out) .. tN (last block out)
    mid_group: list[str | None]                         # per block: group of its mid/dw channels
    se_group: list[str | None]                          # per block: group of its SE bottleneck
    fixed_reason: dict[str, str] = field(default_factory=dict)

    def prunable(self, kinds=KINDS) -> list[Group]:
        return [g for g in self.groups.values() if g.kind in kinds]

    def candidates(self, name: str) -> list[int]:
        """Smaller sizes a group may take: multiples of 8 below its size, largest first."""
        g = self.groups[name]
        top = (g.size - 1) // STEP * STEP
        return list(range(top, MIN_CHANNELS - 1, -STEP))


class _Union:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _has_expand(b: BlockSpec) -> bool:
    return b.type == "mbconv" and (b.mid_ch != b.in_ch or bool(b.opt("pw")))


def _producer_name(t: int) -> str:
    return "stem" if t == 0 else f"b{t - 1}"


def channel_map(arch: Arch) -> ChannelMap:
    """The channel groups of ``arch`` and the group of every dim of every state_dict tensor."""
    if not isinstance(arch, Arch):
        raise field_error(ArchError, "arch", type(arch).__name__, "an Arch")
    n = len(arch.blocks)
    uf = _Union(n + 1)
    for i, b in enumerate(arch.blocks):
        if b.residual:
            uf.union(i, i + 1)
    members: dict[int, list[int]] = {}
    for t in range(n + 1):
        members.setdefault(uf.find(t), []).append(t)
    # a group is fixed when a block that reads or writes it cannot be pruned
    fixed_roots: dict[int, str] = {}
    for i, b in enumerate(arch.blocks):
        why = None
        if b.type not in PRUNABLE_TYPES:
            why = f"block type {b.type} (prunable: {', '.join(PRUNABLE_TYPES)})"
        elif b.groups != 1:
            why = f"grouped 1x1 convs (groups={b.groups})"
        if why:
            for t in (i, i + 1):
                fixed_roots.setdefault(uf.find(t), f"blocks[{i}]: {why}")
    tensor_name: dict[int, str] = {}
    groups: dict[str, Group] = {}
    fixed_reason: dict[str, str] = {}
    widths = [arch.stem.out_ch] + [b.out_ch for b in arch.blocks]
    for root, ts in members.items():
        prods = [_producer_name(t) for t in ts]
        if root in fixed_roots:
            name, kind = f"fixed:{prods[0]}" + (f"-{prods[-1]}" if len(prods) > 1 else ""), "fixed"
            fixed_reason[name] = fixed_roots[root]
        elif len(ts) > 1:
            name, kind = f"width:{prods[0]}-{prods[-1]}", "width"
        else:
            name, kind = f"filters:{prods[0]}", "filters"
        keys = []
        for t in ts:
            if t == 0:
                keys.append("stem.conv.weight")
            else:
                b = arch.blocks[t - 1]
                keys.append(f"blocks.{t - 1}.{'pw' if b.type == 'dwsep' else 'project'}.conv.weight")
        groups[name] = Group(name, kind, widths[ts[0]], tuple(keys))
        for t in ts:
            tensor_name[t] = name
    tg = [tensor_name[t] for t in range(n + 1)]

    dims: dict[str, tuple[str | None, ...]] = {}

    def conv(prefix: str, out_g, in_g) -> None:
        dims[f"{prefix}.weight"] = (out_g, in_g, None, None)

    def bn(prefix: str, g) -> None:
        for k in _BN:
            dims[f"{prefix}.{k}"] = (g,)
        dims[f"{prefix}.num_batches_tracked"] = ()

    conv("stem.conv", tg[0], None)
    if getattr(arch.stem, "bn", True):
        bn("stem.bn", tg[0])
    else:                                   # SqueezeNet-style stem: conv bias, no BatchNorm
        dims["stem.conv.bias"] = (tg[0],)
    mid_group: list[str | None] = []
    se_group: list[str | None] = []
    for i, b in enumerate(arch.blocks):
        p = f"blocks.{i}"
        tin, tout = tg[i], tg[i + 1]
        fixed_block = b.type not in PRUNABLE_TYPES or b.groups != 1
        if fixed_block:
            mid_group.append(None)
            se_group.append(None)
            continue  # its tensors are copied whole (their groups are fixed)
        if b.type == "dwsep":
            conv(f"{p}.dw.conv", tin, None)
            bn(f"{p}.dw.bn", tin)
            conv(f"{p}.pw.conv", tout, tin)
            bn(f"{p}.pw.bn", tout)
            mid_group.append(None)
            se_group.append(None)
            continue
        if _has_expand(b):
            mg = f"mid:b{i}"
            groups[mg] = Group(mg, "mid", b.mid_ch, (f"{p}.expand.conv.weight",))
            conv(f"{p}.expand.conv", mg, tin)
            bn(f"{p}.expand.bn", mg)
        else:
            mg = tin
        mid_group.append(mg)
        conv(f"{p}.dw.conv", mg, None)
        bn(f"{p}.dw.bn", mg)
        if b.se_ch:
            sg = f"se:b{i}"
            groups[sg] = Group(sg, "se", b.se_ch, (f"{p}.se.fc1.weight",))
            conv(f"{p}.se.fc1", sg, mg)
            dims[f"{p}.se.fc1.bias"] = (sg,)
            conv(f"{p}.se.fc2", mg, sg)
            dims[f"{p}.se.fc2.bias"] = (mg,)
            se_group.append(sg)
        else:
            se_group.append(None)
        conv(f"{p}.project.conv", tout, mg)
        bn(f"{p}.project.bn", tout)
    prev = tg[-1]
    h = arch.head
    if h.last_ch:
        groups["filters:head.last"] = Group("filters:head.last", "filters", h.last_ch, ("head.conv.weight",))
        conv("head.conv", "filters:head.last", prev)
        bn("head.bn", "filters:head.last")
        prev = "filters:head.last"
    if h.hidden_ch:
        groups["filters:head.hidden"] = Group("filters:head.hidden", "filters", h.hidden_ch, ("head.hidden.weight",))
        dims["head.hidden.weight"] = ("filters:head.hidden", prev)
        if h.hidden_bias:
            dims["head.hidden.bias"] = ("filters:head.hidden",)
        prev = "filters:head.hidden"
    conv_cls = getattr(h, "classifier", "linear") == "conv"
    dims["head.classifier.weight"] = (None, prev, None, None) if conv_cls else (None, prev)
    if getattr(h, "classifier_bias", True):
        dims["head.classifier.bias"] = (None,)
    return ChannelMap(arch, groups, dims, tg, mid_group, se_group, fixed_reason)


# ---------------------------------------------------------------------------------------------
# Sizes -> Arch
# ---------------------------------------------------------------------------------------------
def se_size(se_ch: int, mid_ch: int, new_mid: int) -> int:
    """The SE bottleneck for ``new_mid`` gated channels: the block's ratio kept, a multiple of 8,
    never above the old width."""
    if new_mid == mid_ch:
        return se_ch
    return min(se_ch, make_divisible(se_ch * new_mid / mid_ch, STEP))


def full_sizes(cm: ChannelMap, sizes: Mapping[str, int]) -> dict[str, int]:
    """Every group's size after applying ``sizes`` (SE widths derived when not given)."""
    for name, v in sizes.items():
        if name not in cm.groups:
            raise field_error(ArchError, "prune group", name, sorted(g.name for g in cm.prunable(KINDS + ("se",))))
        g = cm.groups[name]
        if g.kind == "fixed":
            raise ArchError(f"prune group {name}: cannot be pruned ({cm.fixed_reason.get(name, 'fixed')})")
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= g.size:
            raise field_error(ArchError, f"prune group {name}", v, f"an integer in [1, {g.size}]")
    out = {name: sizes.get(name, g.size) for name, g in cm.groups.items()}
    for i, b in enumerate(cm.arch.blocks):
        sg, mg = cm.se_group[i], cm.mid_group[i]
        if sg and sg not in sizes:
            out[sg] = se_size(b.se_ch, cm.groups[mg].size, out[mg])
    return out


def sized_arch(cm: ChannelMap, sizes: Mapping[str, int]) -> Arch:
    """The arch with its groups at ``sizes`` (a partial mapping; SE widths follow their channels)."""
    full = full_sizes(cm, sizes)
    arch = cm.arch
    t = [full[g] for g in cm.tensor_group]
    stem = replace(arch.stem, out_ch=t[0])
    blocks = []
    for i, b in enumerate(arch.blocks):
        if cm.mid_group[i] is None and b.type != "dwsep":   # a fixed block
            blocks.append(replace(b, in_ch=t[i], out_ch=t[i + 1]))
            continue
        if b.type == "dwsep":
            blocks.append(replace(b, in_ch=t[i], out_ch=t[i + 1]))
            continue
        mid = full[cm.mid_group[i]]
        opts = dict(b.opts)
        if _has_expand(b):
            if mid == t[i]:
                opts["pw"] = 1          # keep the expansion conv (timm's ir_e1)
            else:
                opts.pop("pw", None)
        se = full[cm.se_group[i]] if cm.se_group[i] else 0
        blocks.append(replace(b, in_ch=t[i], out_ch=t[i + 1], mid_ch=mid, se_ch=se,
                              opts=tuple(sorted(opts.items()))))
    h = arch.head
    head = replace(h, last_ch=full.get("filters:head.last", 0) if h.last_ch else 0,
                   hidden_ch=full.get("filters:head.hidden", 0) if h.hidden_ch else 0)
    return Arch(stem, tuple(blocks), head)


# ---------------------------------------------------------------------------------------------
# Magnitudes and weight copying
# ---------------------------------------------------------------------------------------------
def importance(cm: ChannelMap, state_dict: Mapping, name: str):
    """Per-channel importance of group ``name``: the L2 norm of each producing filter (summed over
    the group's producing convs, each divided by its mean norm when there are several)."""
    import torch

    g = cm.groups[name]
    total = torch.zeros(g.size, dtype=torch.float64)
    for key in g.producers:
        w = state_dict[key].detach().to(torch.float64)
        norms = w.reshape(w.shape[0], -1).norm(dim=1)
        if len(g.producers) > 1:
            norms = norms / norms.mean().clamp_min(1e-12)
        total += norms
    return total


def kept_indices(cm: ChannelMap, state_dict: Mapping, name: str, size: int) -> list[int]:
    """The ``size`` channels of group ``name`` with the largest importance, in original order."""
    g = cm.groups[name]
    if size >= g.size:
        return list(range(g.size))
    imp = importance(cm, state_dict, name)
    # stable: ties keep the lower index
    order = sorted(range(g.size), key=lambda i: (-float(imp[i]), i))
    return sorted(order[:size])


@dataclass
class Pruned:
    arch: Arch
    state_dict: dict
    kept: dict[str, list[int]]          # group -> kept original channel indices (changed groups only)


def prune(arch: Arch, state_dict: Mapping, sizes: Mapping[str, int], check: bool = True,
          cm: ChannelMap | None = None) -> Pruned:
    """Shrink groups of ``arch`` to ``sizes`` ({group name: channels}) keeping the largest-magnitude
    channels; returns the smaller arch and its state_dict (every tensor sliced, BN stats included).

    ``check`` builds the new network and loads the state_dict strictly (shapes must fit)."""
    cm = cm or channel_map(arch)
    full = full_sizes(cm, sizes)
    new_arch = sized_arch(cm, sizes)
    missing = [k for k in cm.dims if k not in state_dict]
    if missing:
        raise ArchError(f"weights: missing {missing[0]} (and {len(missing) - 1} more); allowed: the state_dict "
                        f"of arch.build() for {arch.to_string()[:60]}...")
    kept: dict[str, list[int]] = {}
    for name, g in cm.groups.items():
        if full[name] != g.size:
            kept[name] = kept_indices(cm, state_dict, name, full[name])
    out = {}
    for key, value in state_dict.items():
        groups_of = cm.dims.get(key)
        t = value
        if groups_of:
            for d, gname in enumerate(groups_of):
                if gname is not None and gname in kept:
                    import torch

                    t = t.index_select(d, torch.tensor(kept[gname], dtype=torch.long))
        out[key] = t.clone()
    if check:
        num_classes = int(state_dict["head.classifier.weight"].shape[0])
        model = new_arch.build(num_classes=num_classes)
        try:
            model.load_state_dict(out, strict=True)
        except RuntimeError as exc:  # a bug here, not user input
            raise AssertionError(f"pruned state_dict does not fit {new_arch.to_string()}: {str(exc)[:300]}") from None
    return Pruned(new_arch, out, kept)


def describe(cm: ChannelMap, name: str) -> str:
    """A readable label for a group, e.g. 'mid:b4 (120 ch)'."""
    return f"{name} ({cm.groups[name].size} ch)"


__all__ = ["ChannelMap", "Group", "KINDS", "Pruned", "channel_map", "full_sizes", "importance", "kept_indices",
           "prune", "se_size", "sized_arch"]
