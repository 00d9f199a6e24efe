"""A weight-sharing supernet over a search space, trained by sandwich-rule uniform sampling.

Design (practical for a 2-core CPU, and exact by construction):

* **Arch-level envelope.**  The supernet does not re-implement the blocks.  For every arch of the
  space, ``arch.build()`` (``search_space.builder``) defines a ``modules.Net`` whose parameters have
  fixed names (``stem.conv.weight``, ``blocks.3.expand.conv.weight``, ``head.classifier.weight``...).
  Each block's names are re-keyed to a *layer position* of the space plus its block type::

      blocks.<i>.<rest>  ->  o<H>.s<k>.<j>.<type>/<rest>

  where ``H`` is the block's output size at 224x224 (from ``signatures()``), ``k`` the index of its
  stage among the stages of that resolution and ``j`` its index in the stage (a stage starts at a
  stride-2 block or a width change), so a shallower stage uses the first positions of its stage
  (OFA's elastic depth) and the next stage's layers keep their weights.  The supernet holds, for
  every such key, one tensor of the *largest* shape any arch of the space asks for (the elementwise
  maximum over the space's zoo points, one decode per option of every decision, and random samples).
  Per-layer block types are separate branches (``<type>`` in the key); SE, activation, kernel,
  expansion, width and depth are all elastic:

  - elastic width / expansion / SE ratio: the leading channels of each dimension;
  - elastic kernel: the centre crop of the largest kernel (OFA's crop, without its transform matrix);
  - elastic depth: a shallower stage simply uses the first ``j`` positions of its resolution;
  - activation / SE gate switches carry no weights; stem and head are shared the same way.

* **Running a subnet** = ``torch.func.functional_call`` of the arch's own module (built once on the
  ``meta`` device, cached) with the sliced tensors (differentiable views of the supernet's).  So the
  supernet path and the extracted subnet (``extract(arch)``: ``arch.build(num_classes)`` with the
  slices copied in) run the very same code and agree exactly.

* **Training**: single-path uniform sampling with the sandwich rule: every step trains the largest
  and the smallest arch of the space (by MACs at the data resolution, among the envelope's
  candidates) and ``n_random`` uniformly sampled ones (``space.sample``), the others distilled from the
  largest's soft labels (in-place distillation, as BigNAS / OFA), gradients summed, one SGD step.

* **Evaluating** an arch = inherit weights (extract), re-estimate BatchNorm statistics on a few
  training batches, fold the BatchNorms into their convs (``fold_bn``: same verdicts, 9-37% less
  CPU), score top-1 on a fixed subset of the validation split.

Limits (documented, by design): weights are shared by (resolution, stage, index, block type); stage
boundaries are inferred from the arch (stride 2 or a width change), so two consecutive stride-1
stages that happen to get the same width merge into one (their layers shift position); spaces that
vary stem or head widths share those by leading channels as well.
The supernet is trained and scored at the data set's resolution (32x32 for Fashion-MNIST), with the
networks unchanged (no stride adaptation).

**Scope.**  ``mobile-unified`` holds every zoo family (up to six block types per stage) at every width:
its random archs reach 67 GMACs and 8,960 channels (24 layers at the median).  An envelope over its
part of at most 600M MACs / 1,280 channels held 210M weights, a sandwich step took 4.5 s here and the
trained supernet scored near chance.  So a supernet covers a *scope* (``SupernetRecipe.scope``,
``SCOPES``): a sub-space of the space, itself a Space (every arch of it is an arch of the full space).
mobile-unified's default scope ``mobile-unified/mbconv`` is its own stage layout restricted to MBConv
nets (MobileNetV2/V3, MnasNet, ProxylessNAS kind): kernel 3/5/7, expansion 3/4/6, SE none/V3 and
ReLU/h-swish per stage, 4 stride-2 stages of 1-4 layers plus two optional stride-1 stages; 51-602 MMACs
at 224; an 8M-weight envelope.  ``Supernet.sample`` draws from the scope (stage by stage, no rejection),
``check`` refuses an arch outside it naming the field and the allowed values, ``covered_space()`` is
the Space a search samples / mutates in (the ``supernet`` evaluator's ``search_space()``, ``fits``).

**Cost and quality** (session 3: this 2-core VM shared by four jobs, 1-minute load average 1.4-5.5,
median 3.9, 1 torch thread, channels-last): the default mobile-unified recipe (1,000 scheduled sandwich
steps of 4 subnets x 64 images, 860 of them with images: it asks 64,000 images of the 55,000-image
training split, which it sees once; ``real_steps_per_epoch``) trained in 1,273 s wall (21.2 min) while
the process got 68% of a core (870 s of CPU: ~14.5 min on a free core, 0.94 s per step quiet).
Evaluation = extract + BN re-estimation on 2 x 128 training images + 2,000 scored validation images:
median 1.23 s, mean 1.25 s, max 2.34 s over the 20 benchmark archs at load ~2 (median 5.7 s at load ~4.8).  Ranking
(``benchmarks/evaluators_ranking.py``, docs/evaluators.md; stand-alone recipe "32k": 500 steps of 64,
label smoothing 0.1, top-1 on the 10,000-image test split, mean of training seeds 0 and 1).  Two samples
of the scope: 20 uniform archs (3.9-7.9 MMACs at 32x32, 85.9-87.4%) and 20 spread over the scope's MACs
range (``--sample stratified-macs``, 2.6-10.7 MMACs, 85.9-87.3%).  Kendall's tau: 0.165 on the uniform
20, -0.164 on the stratified 20, 0.019 on the 40.  The goal 0.6 is not reached, and this ground truth
cannot show it: its two seeds agree with tau 0.14 / 0.30 / 0.20.  Under this recipe accuracy falls with
MACs (tau -0.37 on the stratified 20), which the supernet does not follow (tau with MACs -0.06).  No
evaluation setting (1-4 calibration batches, 300-5,000 scored images, top-1 / p(true) / log-likelihood;
``--part variants``) exceeds 0.21 on the uniform 20.  The previous default supernet (400 steps of 32)
gave 0.28 there.

CLI::

    python -m searchers.supernet train --space mobile-unified --dataset fashion-mnist --epochs 4
    python -m searchers.supernet eval --space mobile-unified --arch <arch string>
    python -m searchers.supernet info --space mobile-unified
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import random
import sys
import time
from collections import OrderedDict, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from search_space.arch import Arch, signatures
from search_space.errors import EdgenasError, SpaceError, cli_entry, field_error
from searchers.training import use_small_map_convs

FORMAT = 1
REF_RESOLUTION = 224            # position keys use each block's output size at 224x224


def cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("EDGENAS_CACHE", "~/.cache/edgenas")))


class SupernetError(EdgenasError, ValueError):
    """A supernet recipe, checkpoint or arch does not fit."""


# --------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SupernetRecipe:
    epochs: int = 2
    images_per_epoch: int = 32000     # 2 x 500 steps of 64 images, 4 subnets per step (~16 min, 1 thread)
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    warmup: float = 0.05
    n_random: int = 2                 # random subnets per step besides the largest and smallest
    distill: bool = True              # in-place distillation from the largest subnet
    envelope_samples: int = 1000      # random samples used (with zoo points and decodes) for the envelope
    max_channels: int = 0             # reduced scale: only archs with no layer wider than this (0: no cap)
    max_macs: int = 0                 # reduced scale: only archs with at most these MACs at 224x224 (0: no cap)
    scope: str = ""                   # the part of the space the supernet covers (SCOPES; "": all of it)
    calib_batches: int = 2            # BN re-estimation batches per evaluation
    calib_batch_size: int = 128
    eval_images: int = 2000           # validation images scored per evaluation (~1.1 s in NHWC, 1 thread)
    checkpoint_every: int = 50        # steps between checkpoints

    def __post_init__(self) -> None:
        for name in ("epochs", "images_per_epoch", "batch_size", "envelope_samples", "calib_batches",
                     "calib_batch_size", "eval_images", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise field_error(SupernetError, f"recipe.{name}", v, "a positive integer")
        for name in ("n_random", "max_channels", "max_macs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise field_error(SupernetError, f"recipe.{name}", v, "an integer >= 0")
        if self.scope and self.scope not in SCOPES:
            raise field_error(SupernetError, "recipe.scope", self.scope, ["'' (the whole space)", *sorted(SCOPES)])
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 10:
            raise field_error(SupernetError, "recipe.lr", self.lr, "a number in (0, 10)")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.images_per_epoch / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def training_key(self) -> dict:
        """The fields that change the trained weights (evaluation settings excluded)."""
        d = asdict(self)
        for k in ("calib_batches", "calib_batch_size", "eval_images", "checkpoint_every"):
            d.pop(k)
        if not d["scope"]:
            d.pop("scope")                       # (keys of supernets from before scopes stay valid)
        else:                                    # caps a scope implies (SCOPE_CAPS) change no weight
            d["max_channels"] = d["max_macs"] = 0
        return d


# --------------------------------------------------------------------------------------------
# Meta modules and keys
# --------------------------------------------------------------------------------------------
def _part_key(name: str, kw: dict) -> tuple:
    return (name, tuple(sorted((k, repr(v)) for k, v in kw.items())))


_PART_POOL: dict[tuple, list[nn.Module]] = {}
_PART_SHAPES: dict[tuple, list[tuple[str, tuple[int, ...]]]] = {}


def _new_part(name: str, kw: dict) -> nn.Module:
    from search_space import modules

    with torch.device("meta"):
        return getattr(modules, name)(**kw)


def _meta_module(arch: Arch, num_classes: int, shared: bool = False) -> nn.Module:
    """``arch.build(num_classes)``'s module structure on the meta device (no memory, no init).
    ``shared``: assemble it from cached meta parts (stem / block / head modules hold no state, so a
    part can serve every arch that has it; a part appears at most once per net), which makes a
    template for a new arch cost a few milliseconds; ``extract`` asks for fresh parts."""
    from search_space import modules
    from search_space.builder import module_plan

    plan = module_plan(arch, num_classes)
    if not shared:
        built = [_new_part(name, kw) for name, kw in plan]
    else:
        built, used = [], defaultdict(int)
        for name, kw in plan:
            key = _part_key(name, kw)
            pool = _PART_POOL.setdefault(key, [])
            k = used[key]
            used[key] += 1
            if k == len(pool):
                pool.append(_new_part(name, kw))
            built.append(pool[k])
    with torch.device("meta"):
        return modules.Net(stem=built[0], blocks=built[1:-1], head=built[-1])


def state_shapes(arch: Arch, num_classes: int) -> list[tuple[str, tuple[int, ...]]]:
    """(state name, shape) of ``arch.build(num_classes)``, in ``state_dict`` order (memoised per part)."""
    from search_space.builder import module_plan

    plan = module_plan(arch, num_classes)
    out = []
    for i, (name, kw) in enumerate(plan):
        key = _part_key(name, kw)
        shapes = _PART_SHAPES.get(key)
        if shapes is None:
            shapes = [(k, tuple(t.shape)) for k, t in _new_part(name, kw).state_dict().items()]
            _PART_SHAPES[key] = shapes
        prefix = "stem." if i == 0 else ("head." if i == len(plan) - 1 else f"blocks.{i - 1}.")
        out += [(prefix + k, s) for k, s in shapes]
    return out


def position_keys(arch: Arch) -> list[str]:
    """``o<H>.s<k>.<j>.<type>`` for each block: its output size at 224, the index ``k`` of its stage
    among the stages with that output size, its index ``j`` in the stage, and its type.  A stage
    starts at a stride-2 block or at a width change (``in_ch != out_ch``), as in every MnasNet-style
    space (a stage has one width; its later layers keep it)."""
    sigs = [s for s in signatures(arch, REF_RESOLUTION) if s.kind not in ("stem", "head")]
    stages_at: dict[int, int] = defaultdict(lambda: -1)
    keys, j, h_prev = [], 0, None
    for s in sigs:
        b, h = s.spec, s.out_hw[0]
        if b.stride != 1 or b.in_ch != b.out_ch or h != h_prev or not keys:
            stages_at[h] += 1
            j = 0
        keys.append(f"o{h}.s{stages_at[h]}.{j}.{s.kind}")
        j += 1
        h_prev = h
    return keys


def shared_name(local: str, pos: list[str], ndim: int | None = None) -> str:
    """Module-local state name -> supernet key (``blocks.3.dw.conv.weight`` -> ``o56.s0.1.mbconv/dw.conv.weight``).
    A 1x1-conv classifier (SqueezeNet's) gets its own weight, apart from the linear classifiers'."""
    if local.startswith("blocks."):
        _, i, rest = local.split(".", 2)
        return f"{pos[int(i)]}/{rest}"
    part, rest = local.split(".", 1)
    if part == "head" and rest == "classifier.weight" and ndim == 4:
        return "head/classifier.weight#conv"
    return f"{part}/{rest}"


def _slices(full: tuple[int, ...], want: tuple[int, ...], name: str) -> tuple[slice, ...]:
    """Leading channels on every dim; the centre crop on a conv weight's two kernel dims."""
    out = []
    for d, (f, w) in enumerate(zip(full, want)):
        if len(full) == 4 and d >= 2:
            off = (f - w) // 2
            out.append(slice(off, off + w))
        else:
            out.append(slice(0, w))
    return tuple(out)


def _init_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """torchvision's MobileNet init, by tensor kind (see search_space.builder.init_weights)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return torch.ones(shape)
    if leaf in ("running_mean", "bias"):
        return torch.zeros(shape)
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if len(shape) == 4:                                       # conv: kaiming normal, fan_out
        t = torch.empty(shape)
        nn.init.kaiming_normal_(t, mode="fan_out")
        return t
    if len(shape) == 2:                                       # linear
        return torch.empty(shape).normal_(0, 0.01)
    return torch.ones(shape)                                  # BN weight


# --------------------------------------------------------------------------------------------
# The supernet
# --------------------------------------------------------------------------------------------
class Supernet(nn.Module):
    """Envelope tensors keyed by ``position/type/param``; ``forward(x, arch)`` runs a subnet."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], num_classes: int, space_name: str = "",
                 largest: Arch | None = None, smallest: Arch | None = None, max_channels: int = 0,
                 max_macs: int = 0, n_random: int = 2, scope: str = ""):
        super().__init__()
        self.scope = scope                        # SCOPES name ("": the whole space)
        self.n_random = int(n_random)             # random subnets per sandwich step (sandwich_archs)
        self.last_losses: list[float] = []
        self.num_classes = num_classes
        self.max_channels, self.max_macs = max_channels, max_macs
        self.space_name = space_name
        self.largest, self.smallest = largest, smallest
        self.shapes = dict(shapes)
        self._names: dict[str, str] = {}                      # shared key -> attribute name
        self.params = nn.ParameterDict()
        for i, (key, shape) in enumerate(sorted(self.shapes.items())):
            attr = f"t{i}"
            self._names[key] = attr
            t = _init_tensor(key, shape)
            leaf = key.rsplit(".", 1)[-1]
            if leaf in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(attr, t)
            else:
                self.params[attr] = nn.Parameter(t)
        self._templates: OrderedDict[str, tuple[nn.Module, list[tuple[str, str, tuple]]]] = OrderedDict()

    # -- tensors ------------------------------------------------------------------------------
    def tensor(self, key: str) -> torch.Tensor:
        attr = self._names[key]
        return self.params[attr] if attr in self.params else getattr(self, attr)

    def _template(self, arch: Arch):
        s = arch.to_string()
        hit = self._templates.get(s)
        if hit is not None:
            self._templates.move_to_end(s)
            return hit
        module = use_small_map_convs(_meta_module(arch, self.num_classes, shared=True))
        pos = position_keys(arch)
        plan = []
        for local, want in state_shapes(arch, self.num_classes):
            key = shared_name(local, pos, len(want))
            full = self.shapes.get(key)
            if full is None:
                raise SpaceError(f"supernet: arch layer {key} is not in the supernet of space "
                                 f"{self.space_name!r}; allowed: archs of that space")
            if len(full) != len(want) or any(w > f for w, f in zip(want, full)):
                raise SpaceError(f"supernet: arch layer {key} needs shape {want}, beyond the supernet's "
                                 f"{full}; allowed: archs of space {self.space_name!r}")
            plan.append((local, key, _slices(full, want, key)))
        self._templates[s] = (module, plan)
        while len(self._templates) > 256:
            self._templates.popitem(last=False)
        return module, plan

    def sliced(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The arch's state as views of the supernet's tensors (module-local names)."""
        _, plan = self._template(arch)
        return {local: self.tensor(key)[sl] for local, key, sl in plan}

    def check(self, arch: Arch) -> None:
        """Raise SpaceError when ``arch`` does not fit the supernet (outside its scope or caps)."""
        if self.scope:
            why = scope_space(self.scope).explain(arch)
            if why:
                raise SpaceError(f"supernet: the arch is outside the supernet's scope {self.scope!r} of space "
                                 f"{self.space_name!r} ({why}); allowed: {SCOPE_NOTES[self.scope]}")
        if not within_caps(arch, self.max_channels, self.max_macs):
            raise SpaceError(f"supernet: the arch is beyond the reduced-scale supernet of {self.space_name!r}; "
                             f"allowed: archs with at most {self.max_channels or 'any'} channels per layer and "
                             f"{self.max_macs / 1e6 if self.max_macs else 'any'} MMACs at 224")
        self._template(arch)

    def fits(self, arch: Arch) -> bool:
        """Whether the supernet can score ``arch`` (a searcher treats the others as infeasible)."""
        try:
            self.check(arch)
        except SpaceError:
            return False
        return True

    def covered_space(self, space=None):
        """The Space whose archs the supernet scores: its scope's (``scope_space``), else ``space``.
        A search with the supernet evaluator samples, mutates and crosses over in it; its archs are
        archs of the full space too."""
        return scope_space(self.scope) if self.scope else space

    def sample(self, space, rng: random.Random, tries: int = 2000) -> Arch:
        """A random arch the supernet can score: a sample of its scope (``scope_space(scope).sample``,
        stage by stage, no rejection) when it has one, else of ``space`` (rejection on the caps)."""
        src = scope_space(self.scope) if self.scope else space
        for _ in range(tries):
            a = src.sample(rng)
            if self.fits(a):
                return a
        raise SupernetError(f"supernet: no arch of {self.space_name!r} within the supernet in {tries} samples")

    # -- running ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        module, _ = self._template(arch)
        module.train(self.training)
        return torch.func.functional_call(module, self.sliced(arch), (x,), strict=True)

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """The module ``arch.build(num_classes)`` makes, holding copies of the inherited (sliced)
        weights.  (Built on the meta device and given the copies, which skips ``build``'s random
        init: the same classes, structure and state names, in a fraction of the time.)"""
        model = _meta_module(arch, self.num_classes)
        state = {k: v.detach().clone() for k, v in self.sliced(arch).items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model

    # -- persistence --------------------------------------------------------------------------
    def meta(self) -> dict:
        return {"format": FORMAT, "num_classes": self.num_classes, "space": self.space_name,
                "shapes": {k: list(v) for k, v in sorted(self.shapes.items())},
                "largest": self.largest.to_string() if self.largest else None,
                "smallest": self.smallest.to_string() if self.smallest else None,
                "max_channels": self.max_channels, "max_macs": self.max_macs, "n_random": self.n_random,
                "scope": self.scope}

    @classmethod
    def from_meta(cls, meta: dict) -> "Supernet":
        if meta.get("format") != FORMAT:
            raise SupernetError(f"supernet checkpoint format: got {meta.get('format')!r}; allowed: {FORMAT}")
        big = Arch.from_string(meta["largest"]) if meta.get("largest") else None
        small = Arch.from_string(meta["smallest"]) if meta.get("smallest") else None
        return cls({k: tuple(v) for k, v in meta["shapes"].items()}, meta["num_classes"], meta.get("space", ""),
                   big, small, meta.get("max_channels", 0), meta.get("max_macs", 0), meta.get("n_random", 2),
                   meta.get("scope", ""))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------------------------
# Envelope from a space
# --------------------------------------------------------------------------------------------
def _arch_width(arch: Arch) -> int:
    return max([arch.stem.out_ch, arch.head.last_ch, arch.head.hidden_ch]
               + [max(b.in_ch, b.out_ch, b.mid_ch) for b in arch.blocks])


# The supernet's scope per space.  mobile-unified holds every zoo family at every width (random samples
# reach 67 GMACs and 8,960 channels, 24 layers of six block types at the median); an envelope over all of
# it held 210M weights, stepped at 4.5 s and barely trained in 20 minutes here.  Its supernet covers a
# part of it instead, itself a space (so ``sample`` draws from it directly and ``check`` names the first
# layer outside it): mobile-unified's own stage layout restricted to the MobileNetV2/V3 / MnasNet /
# ProxylessNAS kind of net -- MBConv layers with kernel 3/5/7, expansion 3/4/6, SE (none or V3's) and
# ReLU/h-swish per stage, 2-4 stride-2 stages' depths, a 960-1280 head.  Every arch of it is an arch of
# mobile-unified (tests check), 51-602 MMACs at 224.  A search over mobile-unified with the supernet
# evaluator samples and mutates within it (``Supernet.sample`` / ``fits``; archs outside are infeasible).
def _scope_mobile_unified() -> dict:
    act = ["relu", "hswish"]
    layer = {"kernel": [3, 5, 7], "expand": [3, 4, 6]}

    def mb(depth, stride, out):
        return {"depth": depth, "stride": stride, "out_ch": out, "type": "mbconv", "act": act,
                "se": [False, "v3"], "layer": layer}

    def off(t="mbconv", out=8, stride=1, **kw):
        return {"depth": 0, "stride": stride, "out_ch": out, "type": t, **kw}

    pool = off("maxpool", "keep", 2, act="relu", kernel=3)
    return {
        "name": "mobile-unified/mbconv", "mid_rule": "expand", "se_rule": "v3", "split": "strict",
        "min_input": 32,
        "stem": {"out_ch": [16, 24], "kernel": 3, "stride": 2, "act": act},
        "stages": [      # one entry per stage of mobile-unified (depth 0: skipped)
            off("conv", 32, kernel=3),
            {"depth": 1, "stride": 1, "out_ch": 16, "type": "mbconv", "act": "relu", "kernel": 3, "expand": 1},
            off("dwsep", 64),
            mb([1, 2, 3], 2, [16, 24, 32]),                    # output stride 4
            pool, off("mbconv", 72), off("fire", 128), off("fire", 256),
            mb([1, 2, 3], 2, [32, 40, 48]),                    # 8
            pool, off("fire", 256), off("fire", 384), off("fire", 512),
            mb([2, 3, 4], 2, [64, 80, 96]),                    # 16
            pool,
            mb([0, 1, 2], 1, [112, 128]),
            off("fire", 512),
            mb([1, 2, 3], 2, [160, 192]),                      # 32
            mb([0, 1], 1, [320]),
            off("mbconv", 1280), off("conv", 200, kernel=1), pool,
        ],
        "head": {"last_ch": 960, "hidden_ch": 1280, "act": "hswish", "dropout": 0.0},
    }


SCOPES = {"mobile-unified/mbconv": _scope_mobile_unified}
SCOPE_NOTES = {"mobile-unified/mbconv": "MBConv nets of mobile-unified's layout: stem 16/24, widths 16-32, 32-48, "
                                        "64-96 (+112/128), 160-192 (+320), kernel 3/5/7, expansion 3/4/6, SE none/v3, "
                                        "relu/hswish, head 960-1280 (see searchers.supernet.SCOPES)"}
# mobile-unified's recipe: its scope, and 1,000 scheduled steps of 64 images (4 subnets each, NHWC), 860 of
# them with images on Fashion-MNIST (64,000 asked, the 55,000 training images once; the cosine schedule
# counts all 1,000): 870 s of CPU measured, ~14.5 min of one thread of this 2-core VM (largest subnet
# ~17 MMACs per 32x32 image).  Kept as is: its hash names the cached supernet every benchmark used.
# The caps every arch of the scope keeps (its largest arch: 602 MMACs at 224, 1,280 channels in the head):
# a cheap necessary test (``within_caps``) before the exact one (``scope_space(...).contains``).
SCOPE_CAPS = {"mobile-unified/mbconv": {"max_channels": 1280, "max_macs": 610_000_000}}
REDUCED_SCALE = {"mobile-unified": {"scope": "mobile-unified/mbconv", **SCOPE_CAPS["mobile-unified/mbconv"],
                                    "epochs": 1, "images_per_epoch": 64000, "batch_size": 64}}


@functools.lru_cache(maxsize=None)
def scope_space(name: str):
    """The Space of a supernet scope (SCOPES)."""
    from search_space.space import space_from_dict

    if name not in SCOPES:
        raise field_error(SupernetError, "scope", name, sorted(SCOPES))
    return space_from_dict(SCOPES[name](), name)


def default_recipe(space=None, **changes) -> SupernetRecipe:
    """The default recipe for ``space`` (with its scope, if any), plus ``changes``."""
    caps = REDUCED_SCALE.get(getattr(space, "name", space), {})
    return replace(SupernetRecipe(), **{**caps, **changes})


def within_caps(arch: Arch, max_channels: int = 0, max_macs: int = 0) -> bool:
    if max_channels and _arch_width(arch) > max_channels:
        return False
    if max_macs:
        from search_space.profile import profile

        return profile(arch, 224, 1000)["macs"] <= max_macs
    return True


def candidate_archs(space, samples: int = 300, seed: int = 0, max_channels: int = 0,
                    max_macs: int = 0) -> list[Arch]:
    """Archs that span the space (within the caps): its zoo points, one decode per option of every
    decision (from sampled base points), and ``samples`` uniform samples."""
    rng = random.Random(seed)
    out: dict[str, Arch] = {}

    def add(a):
        if a is not None and a.to_string() not in out and within_caps(a, max_channels, max_macs):
            out[a.to_string()] = a

    try:
        from search_space import zoo

        for name, width in space.zoo_entries():
            add(zoo.get(name, width))
    except (EdgenasError, ImportError, AttributeError):
        pass
    for _ in range(samples):
        add(space.sample(rng))
    try:
        cards = space.cardinalities()
        for codes in ([c - 1 for c in cards], [0] * len(cards)):   # every last / first option
            try:
                add(space.decode(codes))
            except EdgenasError:
                pass
        bases = [a for a in out.values()][:: max(1, len(out) // 4)][:4] or [space.sample(rng)]
        for base_arch in bases:
            base = space.encode(base_arch)
            for d, n in enumerate(cards):
                for o in range(n):
                    codes = list(base)
                    codes[d] = o
                    try:
                        add(space.decode(codes))
                    except EdgenasError:
                        pass
    except (AttributeError, NotImplementedError):
        pass
    if not out:
        raise SupernetError(f"supernet: space {getattr(space, 'name', space)!r} gave no archs "
                            f"(max_channels={max_channels}, max_macs={max_macs}); allowed: larger caps or 0")
    return list(out.values())


def envelope(archs: list[Arch], num_classes: int) -> dict[str, tuple[int, ...]]:
    """Elementwise max shape per supernet key over ``archs``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for a in archs:
        pos = position_keys(a)
        for local, s in state_shapes(a, num_classes):
            key = shared_name(local, pos, len(s))
            old = shapes.get(key)
            if old is None:
                shapes[key] = s
            elif len(old) != len(s):
                raise SupernetError(f"supernet: {key} has shapes {old} and {s} of different rank")
            else:
                shapes[key] = tuple(max(x, y) for x, y in zip(old, s))
    return shapes


def build_supernet(space, num_classes: int, recipe: SupernetRecipe = SupernetRecipe(), seed: int = 0,
                   resolution: tuple[int, int] = (32, 32)) -> Supernet:
    from search_space.profile import profile

    src = scope_space(recipe.scope) if recipe.scope else space
    archs = candidate_archs(src, recipe.envelope_samples, seed, recipe.max_channels, recipe.max_macs)
    macs = [profile(a, resolution, num_classes)["macs"] for a in archs]
    largest = archs[max(range(len(archs)), key=macs.__getitem__)]
    smallest = archs[min(range(len(archs)), key=macs.__getitem__)]
    torch.manual_seed(int(seed))
    return Supernet(envelope(archs, num_classes), num_classes, getattr(space, "name", ""), largest, smallest,
                    recipe.max_channels, recipe.max_macs, recipe.n_random, recipe.scope)


# --------------------------------------------------------------------------------------------
# Training, caching, evaluation
# --------------------------------------------------------------------------------------------
def space_fingerprint(space) -> str:
    """What identifies a space for the cache: its name, its decisions and, for a space read from a
    file, a hash of that file (cheap: no ``size()``, which can take minutes on a wide space)."""
    parts = [getattr(space, "name", type(space).__name__)]
    for attr in ("decision_names", "cardinalities"):
        try:
            parts.append(str(getattr(space, attr)()))
        except Exception:  # noqa: BLE001 -- a fingerprint must not fail
            pass
    src = getattr(space, "source", None)
    if isinstance(src, (str, Path)) and Path(src).is_file():
        parts.append(hashlib.sha256(Path(src).read_bytes()).hexdigest())
    return "|".join(parts)


def supernet_key(space, data, recipe: SupernetRecipe, seed: int) -> str:
    blob = json.dumps({"format": FORMAT, "space": space_fingerprint(space), "data": data.key,
                       "classes": data.num_classes, "recipe": recipe.training_key(), "seed": seed},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def supernet_dir(space, data, recipe: SupernetRecipe, seed: int, root: Path | None = None) -> Path:
    name = f"{getattr(space, 'name', 'space')}-{data.name}-{supernet_key(space, data, recipe, seed)}"
    return Path(root or cache_dir()) / "supernets" / name


TRAIN_CALLS = {"count": 0}            # how many times train_supernet ran (tests check cache hits)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def real_steps_per_epoch(recipe: SupernetRecipe, n_train: int, multiple: int = 1) -> int:
    """The steps of an epoch that get images.  An epoch takes the first ``recipe.images_per_epoch``
    images of a permutation of the training split, so when the recipe asks for more than the split
    holds (mobile-unified's default: 64,000 of Fashion-MNIST's 55,000), its last scheduled steps have
    no batch and are skipped: 860 of 1,000 there.  The DDP trainer also skips a last batch of fewer
    than ``multiple`` (its world size x accumulation) images.  The schedule (``recipe.total_steps``,
    the step counter, the learning rate, checkpoints, the cache key) still counts every scheduled step."""
    full, rest = divmod(min(recipe.images_per_epoch, n_train), recipe.batch_size)
    return full + (rest >= max(1, multiple))


def real_steps_done(step: int, recipe: SupernetRecipe, n_train: int, multiple: int = 1) -> int:
    """How many of the first ``step`` scheduled steps had images (trained)."""
    epoch, within = divmod(step, recipe.steps_per_epoch)
    real = real_steps_per_epoch(recipe, n_train, multiple)
    return epoch * real + min(within, real)


def images_seen(recipe: SupernetRecipe, n_train: int, multiple: int = 1) -> int:
    """Training images the recipe's steps see in all (the DDP trainer cuts each batch to a multiple of
    ``multiple`` images)."""
    m = max(1, multiple)
    full, rest = divmod(min(recipe.images_per_epoch, n_train), recipe.batch_size)
    per_batch = recipe.batch_size - recipe.batch_size % m
    return recipe.epochs * (full * per_batch + (rest - rest % m if rest >= m else 0))


def overshoot_message(recipe: SupernetRecipe, n_train: int, multiple: int = 1) -> str | None:
    """The line a trainer says when some scheduled steps get no batch (``real_steps_per_epoch``): the
    recipe asks for more images per epoch than the training split holds; else None."""
    real = real_steps_per_epoch(recipe, n_train, multiple)
    over = recipe.images_per_epoch > n_train
    if real >= recipe.steps_per_epoch and not over:
        return None
    total = recipe.total_steps
    rest = min(recipe.images_per_epoch, n_train) % recipe.batch_size
    why = [f"recipe.images_per_epoch {recipe.images_per_epoch} exceeds the training split ({n_train} images)"] * over
    if multiple > 1 and 0 < rest < multiple:
        why.append(f"each epoch's last batch ({rest} images) holds fewer than world x accumulation = {multiple}")
    return (f"supernet: {' and '.join(why)}: each epoch trains {real} of its {recipe.steps_per_epoch} scheduled steps "
            f"({real_steps_done(total, recipe, n_train, multiple)} of {total} in all, "
            f"{images_seen(recipe, n_train, multiple)} images seen; the learning-rate schedule counts all {total})")


def say(msg: str | None, log=None, bar=None) -> None:
    """A trainer's one-off line: to ``log`` if given, else above the progress ``bar``, else to stderr."""
    if msg is None:
        return
    if log is not None:
        log(msg)
    elif bar is not None:
        bar.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def sandwich_archs(net: Supernet, space, rng: random.Random, n_random: int | None = None) -> list[Arch]:
    """The subnets of one sandwich step: the supernet's largest and smallest arch, then ``n_random``
    (default: the recipe's, stored in the supernet) archs drawn by ``net.sample`` (uniform over the
    space, within the supernet's scope).  Deterministic given ``rng``'s state (DDP ranks agree)."""
    n = net.n_random if n_random is None else int(n_random)
    return [net.largest, net.smallest] + [net.sample(space, rng) for _ in range(n)]


def sandwich_loss(net: Supernet, images: torch.Tensor, labels: torch.Tensor, archs: list[Arch],
                  recipe: SupernetRecipe) -> torch.Tensor:
    """ONE forward of every subnet of a sandwich step on the same batch; returns the summed loss
    (one ``backward()`` gives the step's gradients).  The first arch (the largest) learns from the
    labels; with ``recipe.distill`` the others learn from its soft labels (in-place distillation:
    BigNAS / OFA), else from the labels.  ``net.last_losses`` keeps the per-subnet values."""
    ce = nn.functional.cross_entropy
    total, soft, parts = None, None, []
    for k, a in enumerate(archs):
        logits = net(images, a)
        if k == 0 or not recipe.distill or soft is None:
            loss = ce(logits, labels, label_smoothing=recipe.label_smoothing)
            if k == 0:
                soft = logits.detach().softmax(1)
        else:
            loss = torch.sum(-soft * torch.log_softmax(logits, 1), 1).mean()
        parts.append(float(loss.detach()))
        total = loss if total is None else total + loss
    net.last_losses = parts
    return total


def train_supernet(space, data, recipe: SupernetRecipe = SupernetRecipe(), seed: int = 0,
                   out_dir: Path | None = None, resume: bool = True, progress: bool = True,
                   log=None) -> Supernet:
    """Train (or resume) the supernet of ``space`` on ``data``; write ``supernet.pt`` in ``out_dir``."""
    from searchers.training import lr_at, param_groups

    TRAIN_CALLS["count"] += 1
    out_dir = Path(out_dir or supernet_dir(space, data, recipe, seed))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    step = 0
    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net = Supernet.from_meta(state["meta"])
        net.load_state_dict(state["model"])
        step = state["step"]
    else:
        net = build_supernet(space, data.num_classes, recipe, seed, data.resolution)
    opt = torch.optim.SGD(param_groups(net, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.momentum > 0)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(int(seed))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        rng.setstate(state["rng"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
    else:
        torch.manual_seed(int(seed))
    total = recipe.total_steps
    n_train = len(data.train)
    real_total = real_steps_done(total, recipe, n_train)   # steps with images (the others are skipped)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=real_total, initial=real_steps_done(step, recipe, n_train),
                   desc=f"supernet {net.space_name}", dynamic_ncols=True)
    say(overshoot_message(recipe, n_train), log, bar)
    t0 = time.perf_counter()
    net.train()
    idx = None
    while step < total:
        epoch, within = divmod(step, recipe.steps_per_epoch)
        if idx is None or within == 0:
            # this epoch's images: a permutation drawn from a per-epoch seed (so resume is exact)
            g = torch.Generator().manual_seed(int(seed) * 100003 + epoch)
            idx = torch.randperm(len(data.train), generator=g)[: recipe.images_per_epoch]
        batch = idx[within * recipe.batch_size:(within + 1) * recipe.batch_size]
        if len(batch) == 0:                  # past the split's end (real_steps_per_epoch): no images, no update
            step += 1
            continue
        x, y = data.train.batch(batch)
        x = x.contiguous(memory_format=torch.channels_last)   # NHWC: 1.6x faster steps on this CPU
        lr = lr_at(step, total, recipe.lr, recipe.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        archs = sandwich_archs(net, space, rng, recipe.n_random)
        opt.zero_grad(set_to_none=True)
        sandwich_loss(net, x, y, archs, recipe).backward()
        losses = net.last_losses
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        if not all(math.isfinite(v) for v in losses):
            raise SupernetError(f"supernet training diverged at step {step} (losses {losses}); "
                                f"allowed: a smaller recipe.lr than {recipe.lr}")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(big=f"{losses[0]:.3f}", small=f"{losses[1]:.3f}", lr=f"{lr:.3f}")
        if log is not None and (step % 10 == 0 or step == total):
            log(f"step {step}/{total} loss_big {losses[0]:.4f} loss_small {losses[1]:.4f} "
                f"lr {lr:.4f} elapsed {time.perf_counter() - t0:.1f}s")
        if step % recipe.checkpoint_every == 0 or step == total:
            _atomic_save({"meta": net.meta(), "model": net.state_dict(), "optimizer": opt.state_dict(),
                          "step": step, "rng": rng.getstate(), "gen": gen.get_state(),
                          "torch_rng": torch.get_rng_state(), "recipe": asdict(recipe),
                          # training seconds so far (earlier segments too): a resumed run reports all of them
                          "seconds": time.perf_counter() - t0 + (state or {}).get("seconds", 0.0)}, ckpt_path)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0 + (state or {}).get("seconds", 0.0)
    _atomic_save({"meta": net.meta(), "model": net.state_dict(), "recipe": asdict(recipe), "seed": seed,
                  "data": data.key, "space": space_fingerprint(space), "train_seconds": seconds},
                 out_dir / "supernet.pt")
    (out_dir / "info.json").write_text(json.dumps(
        {"space": net.space_name, "data": data.key, "recipe": asdict(recipe), "seed": seed,
         "train_seconds": round(seconds, 1), "steps": total, "real_steps": real_total,
         "images_seen": images_seen(recipe, n_train), "params": net.num_params(),
         "largest": net.meta()["largest"], "smallest": net.meta()["smallest"]}, indent=1))
    return net


def load_supernet(path: Path, field: str = "supernet") -> Supernet:
    """A supernet checkpoint; a missing or unreadable file is one line naming ``field`` (the option
    that gave the path) and the path."""
    path = Path(path).expanduser()
    allowed = "allowed: a supernet.pt written by 'python -m searchers.supernet train'"
    if not path.is_file():
        raise SupernetError(f"{field}: {path} does not exist; {allowed}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        net = Supernet.from_meta(state["meta"])
        net.load_state_dict(state["model"])
        net.train_seconds = float(state.get("train_seconds", 0.0))
    except Exception as exc:  # a user-given file may be anything: name it, whatever the reader raised
        raise SupernetError(f"{field}: {path} is not a readable supernet checkpoint ({type(exc).__name__}); "
                            f"{allowed}") from None
    return net


def get_supernet(space, data, recipe: SupernetRecipe = SupernetRecipe(), seed: int = 0,
                 root: Path | None = None, progress: bool = True, log=None) -> tuple[Supernet, bool]:
    """The cached supernet for (space, data, recipe, seed), trained if missing.  Returns
    (supernet, trained_now)."""
    d = supernet_dir(space, data, recipe, seed, root)
    final = d / "supernet.pt"
    if final.is_file():
        return load_supernet(final), False
    return train_supernet(space, data, recipe, seed, d, resume=True, progress=progress, log=log), True


_EVAL_IMAGES: "OrderedDict[tuple, tuple]" = OrderedDict()


def _eval_images(data, recipe: SupernetRecipe, seed: int) -> tuple[list[torch.Tensor], list[tuple]]:
    """The calibration batches (random training images, fixed by ``seed``) and the scored validation
    batches (the first ``eval_images`` of the split), normalised once and cached per data set."""
    key = (id(data), data.key, seed, recipe.calib_batches, recipe.calib_batch_size, recipe.eval_images, EVAL_BATCH)
    hit = _EVAL_IMAGES.get(key)
    if hit is not None:
        return hit
    g = torch.Generator().manual_seed(int(seed))
    cl = torch.channels_last                       # NHWC: faster convolutions, same arithmetic
    calib = [x.contiguous(memory_format=cl) for x, _ in data.train.batches(
        recipe.calib_batch_size, shuffle=True, generator=g, limit=recipe.calib_batches * recipe.calib_batch_size)]
    scored = [(x.contiguous(memory_format=cl), y) for x, y in data.val.batches(EVAL_BATCH, limit=recipe.eval_images)]
    _EVAL_IMAGES[key] = (calib, scored)
    while len(_EVAL_IMAGES) > EVAL_IMAGES_CACHED:
        _EVAL_IMAGES.popitem(last=False)
    return calib, scored


def fold_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv (``ConvBNAct``, ``Stem``, ``Head``'s last conv)
    into that conv's weight and bias, in place, and return ``model``: the same function in eval mode
    (up to float rounding) with one pass over each feature map less.  Only for scoring: the folded
    module has no BatchNorm left to train or re-estimate."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from search_space import modules as M

    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (M.ConvBNAct, M.Stem, M.Head)):
                continue
            conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) or bn.training:
                continue
            fused = fuse_conv_bn_eval(conv, bn)
            if fused.weight.dim() == 4:
                fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)
            fused.requires_grad_(False)
            m.conv, m.bn = fused, nn.Identity()
    return model


FOLD_BN = True                 # evaluate_subnet folds BN into the convs after calibration (same scores)
EVAL_BATCH = 500               # scored validation images per forward
EVAL_IMAGES_CACHED = 4         # prepared (calibration, scored) image sets kept in memory


def evaluate_subnet_correct(net: Supernet, arch: Arch, data, recipe: SupernetRecipe = SupernetRecipe(),
                            seed: int = 0, device: str | torch.device = "cpu", fold: bool | None = None) -> torch.Tensor:
    """``evaluate_subnet``'s per-image result: a bool tensor, one entry per scored validation image
    (the first ``recipe.eval_images`` of the split), True where the subnet's top-1 is right."""
    calib, scored = _eval_images(data, recipe, seed)
    device = torch.device(device)
    model = use_small_map_convs(net.extract(arch).to(device))     # scored here, then dropped
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    out = []
    with torch.inference_mode():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None                      # cumulative average over the calibration batches
        model.train()
        for x in calib:
            model(x.to(device, non_blocking=True))
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
        if FOLD_BN if fold is None else fold:
            fold_bn(model)
        for x, y in scored:
            out.append(model(x.to(device, non_blocking=True)).argmax(1).cpu() == y)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def evaluate_subnet(net: Supernet, arch: Arch, data, recipe: SupernetRecipe = SupernetRecipe(),
                    seed: int = 0, device: str | torch.device = "cpu", fold: bool | None = None) -> float:
    """Inherit weights (``extract``), re-estimate BatchNorm statistics (reset, cumulative average) on
    ``recipe.calib_batches`` training batches, top-1 on the first ``recipe.eval_images`` validation
    images.  Images are prepared once per data set; everything runs under ``torch.inference_mode``;
    after calibration the BatchNorms are folded into their convs (``fold_bn``; ``fold=False`` or
    ``FOLD_BN = False``: not), which changes no score but by float rounding at an arg-max tie.
    ``device``: where the extracted subnet runs (a search worker with a GPU passes ``"cuda"``); the
    supernet itself stays where it is."""
    right = evaluate_subnet_correct(net, arch, data, recipe, seed, device, fold)
    return int(right.sum()) / max(1, len(right))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _recipe_from_args(args, space) -> SupernetRecipe:
    changes = {k: getattr(args, k) for k in ("epochs", "images_per_epoch", "batch_size", "lr", "n_random",
                                             "max_channels", "max_macs", "scope") if getattr(args, k, None) is not None}
    try:
        return default_recipe(space, **changes)
    except SupernetError as exc:  # ``recipe.batch_size: ...`` -> the flag the user gave, ``--batch-size: ...``
        msg = str(exc)
        for k in changes:
            if msg.startswith(f"recipe.{k}:"):
                msg = "--" + k.replace("_", "-") + msg[len(f"recipe.{k}"):]
        raise SupernetError(msg) from None


def _parser() -> argparse.ArgumentParser:
    from search_space.errors import OneLineParser

    p = OneLineParser(prog="python -m searchers.supernet",
                      description="Train / inspect / query the weight-sharing supernet of a space.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("train", "train (or resume) the supernet; cached by (space, data, recipe)"),
                        ("eval", "score arch strings with the trained supernet"),
                        ("info", "show the supernet's envelope and cache path")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--space", default="mobile-unified", help="space name or YAML path")
        s.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, an image folder or an .npz")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--epochs", type=int)
        s.add_argument("--images-per-epoch", type=int, dest="images_per_epoch")
        s.add_argument("--batch-size", type=int, dest="batch_size")
        s.add_argument("--lr", type=float)
        s.add_argument("--n-random", type=int, dest="n_random")
        s.add_argument("--max-channels", type=int, dest="max_channels", help="reduced scale: channel cap (0: none)")
        s.add_argument("--max-macs", type=int, dest="max_macs", help="reduced scale: MACs cap at 224 (0: none)")
        s.add_argument("--scope", help=f"the part of the space covered: {', '.join(sorted(SCOPES))} or '' "
                                       "(all of it); default: the space's (mobile-unified: mobile-unified/mbconv)")
        s.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
        s.add_argument("--cache-dir", help="override $EDGENAS_CACHE")
        if name == "train":
            s.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
            s.add_argument("--force", action="store_true", help="retrain even if the cached supernet exists")
        if name == "eval":
            s.add_argument("--arch", action="append", required=True, help="arch string (repeatable)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads < 0:
        raise field_error(SupernetError, "--threads", args.threads, "an integer >= 0 (0: torch's default)")
    if args.threads:
        torch.set_num_threads(args.threads)
    from search_space.space import load_space
    from searchers.data import load_dataset

    data = load_dataset(args.dataset, seed=args.seed)
    space = load_space(args.space)
    recipe = _recipe_from_args(args, space)
    root = Path(args.cache_dir).expanduser() if args.cache_dir else None
    d = supernet_dir(space, data, recipe, args.seed, root)
    if args.cmd == "info":
        net = build_supernet(space, data.num_classes, recipe, args.seed, data.resolution)
        print(json.dumps({"dir": str(d), "trained": (d / "supernet.pt").is_file(), "params": net.num_params(),
                          "tensors": len(net.shapes), "largest": net.largest.to_string(),
                          "smallest": net.smallest.to_string(), "steps": recipe.total_steps,
                          "real_steps": real_steps_done(recipe.total_steps, recipe, len(data.train))}, indent=1))
        return 0
    if args.cmd == "train":
        if (d / "supernet.pt").is_file() and not args.force:
            print(f"cached: {d / 'supernet.pt'}")
            return 0
        t0 = time.perf_counter()
        train_supernet(space, data, recipe, args.seed, d, resume=not args.no_resume, progress=True,
                       log=None if sys.stderr.isatty() else lambda m: print(m, file=sys.stderr, flush=True))
        print(f"trained in {time.perf_counter() - t0:.0f}s: {d / 'supernet.pt'}")
        return 0
    archs = [Arch.from_string(s) for s in args.arch]  # every arch checked before any scoring
    if not (d / "supernet.pt").is_file():
        raise SupernetError(f"--arch: no trained supernet in {d}; allowed: after "
                            f"'python -m searchers.supernet train' with the same options")
    net = load_supernet(d / "supernet.pt")
    for arch in archs:  # outside the supernet's scope: one line naming the field, as the evaluator says
        try:
            net.check(arch)
        except SpaceError as exc:
            raise SpaceError("--arch: " + str(exc).removeprefix("supernet: ")) from None
    for s, arch in zip(args.arch, archs):
        t0 = time.perf_counter()
        acc = evaluate_subnet(net, arch, data, recipe, args.seed)
        print(f"{acc:.4f}\t{time.perf_counter() - t0:.2f}s\t{s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
