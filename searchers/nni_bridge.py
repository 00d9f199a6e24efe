"""NNI 3.0 interoperability (optional extra ``edgenas[nni]``): our spaces as NNI model spaces, NNI's
multi-trial strategies on our latency models and evaluators, NNI hub architectures as our Archs.

* :func:`model_space` turns a :class:`~search_space.space.Space` into an NNI ``ModelSpace``: every
  decision of ``Space.encode`` becomes one ``nni.choice`` over its option indices (label
  ``"{i:03d}_{decision name}"``, the same names as the Optuna params of a search).  Freezing it with
  a sample gives a module whose ``.arch`` is ``space.decode(codes)`` (``None`` when the codes make no
  valid arch; ``.invalid`` then says why, as it does for an arch the space's ``min_input`` collapses) and whose forward is our built network.
  :func:`arch_from_sample` / :func:`sample_from_arch` convert a frozen NNI sample and an Arch.
* :func:`run_strategy` runs NNI's ``Random``, ``RegularizedEvolution`` or ``PolicyBasedRL`` (the
  last needs ``tianshou==0.4.11`` and ``gym``) on that space in this process (NNI's sequential
  execution engine), the reward being MnasNet's ACC * (LAT/T)^w from our latency model and evaluator.
* :func:`hub_arch` builds an architecture of NNI's hub (``MobileNetV3Space``, ``ProxylessNAS``,
  ``ShuffleNetSpace``: the searched models NNI ships as arch dicts, or any arch dict of those
  spaces) with NNI itself and reads the frozen module back as our Arch; :func:`to_space` then gives
  its code list in one of our spaces or an error naming the NNI choice that is outside it.

NNI is imported only inside these functions: the rest of edgenas never needs it.
"""
from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from search_space.errors import EdgenasError, SpaceError

STRATEGIES = ("random", "regularized-evolution", "policy-rl")


class NNIError(EdgenasError):
    """NNI is missing, or an NNI architecture or strategy cannot be used here."""


def require_nni():
    try:
        import nni  # noqa: F401
        import nni.nas.nn.pytorch  # noqa: F401
    except ImportError as exc:
        raise NNIError(f"NNI is not installed ({exc.name or exc}); allowed: pip install 'edgenas[nni]' "
                       "(nni==3.0 with pytorch-lightning)") from None
    import warnings

    # NNI 3.0 predates torch 2.13: it warns once per new torch class it does not know
    warnings.filterwarnings("ignore", message=r".*is found to be not a nn.Module.*", category=RuntimeWarning)
    import nni

    return nni


# ---------------------------------------------------------------------------------------------
# Our spaces as NNI model spaces
# ---------------------------------------------------------------------------------------------
def labels(space) -> list[str]:
    """One NNI label per code position, in ``encode`` order."""
    return [f"{i:03d}_{n}" for i, n in enumerate(space.decision_names())]


_SPACES: dict[str, Any] = {}


def _space(ref):
    from search_space.space import Space, load_space

    if isinstance(ref, Space):
        _SPACES.setdefault(ref.source, ref)
        return ref
    if ref not in _SPACES:
        _SPACES[ref] = load_space(ref)
    return _SPACES[ref]


_CLASS = None


def _model_space_class():
    """The ``ModelSpace`` subclass (made on first use: NNI is optional)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    nni = require_nni()
    from nni.mutable import ensure_frozen
    from nni.nas.nn.pytorch import ModelSpace
    from nni.nas.space import model_context

    class EdgenasModelSpace(ModelSpace):
        """An edgenas ``Space`` as an NNI model space: one ``nni.choice`` per decision."""

        def __init__(self, space_ref: str, num_classes: int = 10):
            super().__init__()
            space = _space(space_ref)
            self.space_ref, self.num_classes = space_ref, int(num_classes)
            self.codes = [int(ensure_frozen(self.add_mutable(nni.choice(label, list(range(card))))))
                          for label, card in zip(labels(space), space.cardinalities())]
            self.invalid = ""
            try:
                self.arch = space.decode(self.codes)
                fits = getattr(space, "fits_input", None)
                if fits is not None and not fits(self.arch):  # kept (it is decode's), but not usable
                    self.invalid = f"the arch shrinks a {space.min_input}x{space.min_input} input to nothing"
            except SpaceError as exc:  # a code list that makes no valid arch: an invalid sample
                self.arch, self.invalid = None, str(exc)
            self._net = None

        def freeze(self, sample: dict):
            with model_context(sample):
                return self.__class__(self.space_ref, self.num_classes)

        @property
        def net(self):
            if self._net is None:
                if self.arch is None:
                    raise NNIError(f"invalid sample: {self.invalid}")
                self._net = self.arch.build(num_classes=self.num_classes)
            return self._net

        def forward(self, x):
            return self.net(x)

    _CLASS = EdgenasModelSpace
    return _CLASS


def model_space(space, num_classes: int = 10):
    """``space`` (a Space or a space name/path) as an NNI ``ModelSpace``."""
    sp = _space(space)
    ref = space if isinstance(space, str) else sp.source
    _SPACES[ref] = sp
    return _model_space_class()(ref, num_classes)


def arch_from_sample(space, sample: dict):
    """The Arch of a frozen NNI sample (a dict label -> option index); SpaceError if invalid."""
    sp = _space(space)
    labs = labels(sp)
    missing = [lab for lab in labs if lab not in sample]
    if missing:
        raise NNIError(f"sample: missing choice {missing[0]!r}; allowed: a sample of {sp.name}'s NNI model space "
                       f"({len(labs)} choices)")
    return sp.decode([int(sample[lab]) for lab in labs])


def sample_from_arch(space, arch) -> dict:
    sp = _space(space)
    return dict(zip(labels(sp), sp.encode(arch)))


# ---------------------------------------------------------------------------------------------
# NNI strategies on our latency model + evaluator
# ---------------------------------------------------------------------------------------------
@dataclass
class Trial:
    arch: str | None
    accuracy: float
    latency_ms: float
    reward: float
    sample: dict = field(default_factory=dict, repr=False)


def make_strategy(name: str, seed: int = 0, population: int = 50, sample_size: int = 10,
                  mutation_prob: float | None = None, n_decisions: int = 50):
    """An NNI strategy by name; ``policy-rl`` needs tianshou==0.4.11 and gym."""
    require_nni()
    from nni.nas import strategy as st

    if name == "random":
        return st.Random(dedup=True, seed=seed)
    if name == "regularized-evolution":
        # NNI mutates each choice with probability mutation_prob: ~1.5 changed decisions per child by default,
        # like our evolution's 1-3
        p = mutation_prob if mutation_prob is not None else min(0.5, 1.5 / max(1, n_decisions))
        return st.RegularizedEvolution(population_size=population, sample_size=sample_size, mutation_prob=p,
                                       dedup=True, seed=seed)
    if name == "policy-rl":
        try:
            return st.PolicyBasedRL(samples_per_update=8)
        except ImportError as exc:
            raise NNIError(f"NNI's PolicyBasedRL needs {exc.name or 'tianshou'}: pip install tianshou==0.4.11 "
                           "gym==0.26.2") from None
    raise NNIError(f"strategy: got {name!r}; allowed: {', '.join(STRATEGIES)}")


def run_strategy(strategy, space, latency_model, evaluate: Callable[[Any], float], reward, trials: int,
                 seed: int = 0, resolution: int = 224, population: int = 50, sample_size: int = 10) -> list[Trial]:
    """Run an NNI strategy (a name of :data:`STRATEGIES` or an NNI ``Strategy``) for ``trials`` models.

    Each model NNI submits is scored here: latency from ``latency_model`` at ``resolution``,
    accuracy from ``evaluate(arch)``, and NNI is told MnasNet's reward.
    Invalid code lists score 0 and do not count towards ``trials``.  Returns the trials in NNI's
    submission order (invalid ones with ``arch=None``).
    """
    nni = require_nni()
    import logging

    import numpy as np
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace

    for name in ("nni", "nni.nas"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sp = _space(space)
    out: list[Trial] = []

    def score(model) -> None:
        arch = getattr(model, "arch", None)
        if arch is None or getattr(model, "invalid", ""):
            out.append(Trial(None, 0.0, math.nan, 0.0))
            nni.report_final_result(0.0)
            return
        lat = float(latency_model.predict(arch, resolution=resolution))
        acc = float(evaluate(arch))
        r = float(reward(acc, lat))
        out.append(Trial(arch.to_string(), acc, lat, r, sample_from_arch(sp, arch)))
        nni.report_final_result(r)

    strat = strategy if not isinstance(strategy, str) else make_strategy(
        strategy, seed=seed, population=population, sample_size=sample_size, n_decisions=len(sp.cardinalities()))
    random.seed(seed)
    np.random.seed(seed)  # PolicyBasedRL and NNI's Random without a seed draw from the global generators
    exec_space = RawFormatModelSpace(model_space(sp), FunctionalEvaluator(score))

    class Engine(SequentialExecutionEngine):
        """NNI's in-process engine, its budget counted in valid archs (invalid code lists are free, as
        in our searchers)."""

        def budget_available(self) -> bool:
            return sum(t.arch is not None for t in out) < int(trials)

    engine = Engine(continue_on_failure=False)
    strat(exec_space, engine)
    return out


# ---------------------------------------------------------------------------------------------
# NNI hub architectures in
# ---------------------------------------------------------------------------------------------
HUB_SPACES = ("MobileNetV3Space", "ProxylessNAS", "ShuffleNetSpace")


@dataclass
class HubArch:
    """An NNI hub architecture read back as our Arch, with the NNI label(s) behind each block."""

    space: str
    name: str
    arch: Any
    block_labels: list[list[str]]
    nni_params: int


def _act(module) -> str:
    from torch import nn

    for cls, name in ((nn.ReLU6, "relu6"), (nn.ReLU, "relu"), (nn.Hardswish, "hswish"), (nn.SiLU, "swish")):
        if isinstance(module, cls):
            return name
    return ""


def _conv_bn_act(seq):
    """(conv, act name) of an NNI ConvBNReLU (Sequential of conv, norm, act, with Identity dropped)."""
    from torch import nn

    convs = [m for m in seq.modules() if isinstance(m, nn.Conv2d)]
    acts = [_act(m) for m in seq.modules() if _act(m)]
    return convs[0], (acts[0] if acts else "")


def _se(block):
    """(se_ch, gate) of the SqueezeExcite inside an NNI block, (0, 'hsigmoid') without one."""
    from torch import nn

    for m in block.modules():
        if type(m).__name__ == "SqueezeExcite":
            gate = "hsigmoid" if isinstance(m.gate, nn.Hardsigmoid) else "sigmoid"
            return m.conv_reduce.out_channels, gate
    return 0, "hsigmoid"


def _read_block(block, labels_: list[str]):
    """An NNI DepthwiseSeparableConv / InvertedResidual as our BlockSpec."""
    from torch import nn

    from search_space.arch import BlockSpec

    kind = type(block).__name__
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and type(m).__name__ != "SqueezeExcite"]
    se_convs = {id(c) for m in block.modules() if type(m).__name__ == "SqueezeExcite"
                for c in (m.conv_reduce, m.conv_expand)}
    convs = [c for c in convs if id(c) not in se_convs]
    se_ch, gate = _se(block)
    acts = [_act(m) for m in block.modules() if _act(m)]
    if kind == "DepthwiseSeparableConv":
        # dw-BN-act, (SE), pw-BN linear: an inverted residual without expansion (MobileNetV2's first block),
        # not MobileNetV1's dwsep (whose pw has an activation)
        dw, pw = convs
        return BlockSpec(type="mbconv", in_ch=dw.in_channels, out_ch=pw.out_channels, mid_ch=dw.in_channels,
                         kernel=dw.kernel_size[0], stride=dw.stride[0], se_ch=se_ch, se_gate=gate, act=acts[0],
                         residual=bool(block.has_skip))
    if kind == "InvertedResidual":
        pw, dw, pwl = convs
        return BlockSpec(type="mbconv", in_ch=pw.in_channels, out_ch=pwl.out_channels, mid_ch=pw.out_channels,
                         kernel=dw.kernel_size[0], stride=dw.stride[0], se_ch=se_ch, se_gate=gate, act=acts[0],
                         residual=bool(block.has_skip))
    raise NNIError(f"NNI block {kind} ({', '.join(labels_)}): no edgenas block type reads it; "
                   "allowed: DepthwiseSeparableConv, InvertedResidual")


def _flatten_blocks(module, prefix: str):
    """(name, block) pairs of the NNI blocks under ``module`` in forward order."""
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if type(child).__name__ in ("DepthwiseSeparableConv", "InvertedResidual", "ShuffleNetBlock",
                                    "ShuffleXceptionBlock"):
            yield full, child
        else:
            yield from _flatten_blocks(child, full)


def hub_arch(space_name: str, arch_dict: dict | None = None, name: str | None = None, **init_kwargs) -> HubArch:
    """Build an NNI hub architecture with NNI and read it back as our Arch.

    ``name``: a searched model NNI ships (``MobileNetV3Space``: mobilenetv3-large-100,
    mobilenetv3-small-050/075/100, cream-*; ``ProxylessNAS``: acenas-m1/m2/m3, proxyless-cpu/gpu/mobile;
    ``ShuffleNetSpace``: spos); or ``arch_dict`` (a frozen sample of the space) with the space's
    constructor ``init_kwargs``.  Only the topology is read; no weights are downloaded.
    """
    require_nni()
    import nni.nas.hub.pytorch as hub

    if space_name not in HUB_SPACES:
        raise NNIError(f"space: got {space_name!r}; allowed: {', '.join(HUB_SPACES)}")
    cls = getattr(hub, space_name)
    if name is not None:
        try:
            net = cls.load_searched_model(name, pretrained=False)
        except (ValueError, KeyError, NotImplementedError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "Unsupported architecture" in reason:
                raise NNIError(f"name: NNI's {space_name} has no searched model {name!r}") from None
            raise NNIError(f"name: NNI 3.0 cannot build its own {space_name} {name!r}: {reason}") from None
        label = name
    else:
        if arch_dict is None:
            raise NNIError("hub_arch: give a searched model name or an arch dict")
        space = cls(**init_kwargs)
        try:
            net = space.freeze(dict(arch_dict))
        except Exception as exc:  # NNI's own validation of the sample
            raise NNIError(f"arch dict: not a sample of NNI's {space_name}: {str(exc).splitlines()[0]}") from None
        label = "arch dict"
    return _read_net(space_name, label, net, dict(arch_dict or {}))


def _labels_of(path: str, space_name: str) -> list[str]:
    """NNI choice labels that shaped the block at module path ``path`` (best effort, for messages)."""
    nums = [int(x) for x in re.findall(r"\.(\d+)", "." + path)]
    if space_name == "MobileNetV3Space" and path.startswith("blocks") and nums:
        st = nums[0] - 0
        if len(nums) == 1:
            return [f"s{st}_i0_ks", f"s{st}_i0_se"]
        i = nums[-1]
        return [f"s{st}_depth", f"s{st}_i{i}_exp", f"s{st}_i{i}_ks", f"s{st}_i{i}_se"]
    if space_name == "ProxylessNAS" and nums:
        st, i = nums[0], nums[-1]
        return [f"s{st}_depth", f"s{st}_i{i}"]
    return [path]


def _read_net(space_name: str, name: str, net, arch_dict: dict) -> HubArch:
    from torch import nn

    from search_space.arch import Arch, Head, Stem

    nni_params = sum(p.numel() for p in net.parameters())
    if space_name == "ShuffleNetSpace":
        kinds = sorted({type(b).__name__ for _, b in _flatten_blocks(net, "")})
        xcep = [k for k, v in arch_dict.items() if v == "x"] or ["layer_i: 'x'"]
        raise NNIError(f"NNI ShuffleNetSpace {name}: choice {xcep[0]} (ShuffleXceptionBlock) and its k3/k5/k7 "
                       f"ShuffleNetBlocks with SPOS's stage widths have no edgenas block yet (blocks seen: "
                       f"{', '.join(kinds)}); allowed: the shufflev2 block of our shufflenetv2 space")
    stem_mod = getattr(net, "stem", None) or getattr(net, "first_conv")
    conv, act = _conv_bn_act(stem_mod)
    stem = Stem(out_ch=conv.out_channels, kernel=conv.kernel_size[0], stride=conv.stride[0], act=act)
    body = net.blocks
    blocks, blabels = [], []
    for path, b in _flatten_blocks(body, "blocks"):
        labs = _labels_of(path, space_name)
        blocks.append(_read_block(b, labs))
        blabels.append(labs)
    # head: MobileNetV3Space has ConvBNReLU, pool, ConvBNReLU(no BN) at the end of .blocks;
    # ProxylessNAS has feature_mix_layer + pooling + classifier
    tail = [m for m in body.children() if type(m).__name__ == "ConvBNReLU"]
    if space_name == "ProxylessNAS":
        tail = [net.feature_mix_layer]
    last_conv, last_act = _conv_bn_act(tail[0])
    hidden = 0
    hidden_bias = True
    if len(tail) > 1:
        hconv, _ = _conv_bn_act(tail[1])
        hidden, hidden_bias = hconv.out_channels, hconv.bias is not None
    drop = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    head = Head(last_ch=last_conv.out_channels, hidden_ch=hidden, act=last_act, dropout=float(drop[0]) if drop else 0.0,
                hidden_bias=hidden_bias)
    arch = Arch(stem, tuple(blocks), head)
    return HubArch(space_name, name, arch, blabels, nni_params)


def to_space(h: HubArch, space) -> list[int]:
    """``h``'s code list in our ``space``; NNIError naming the NNI choice outside it otherwise."""
    sp = _space(space)
    try:
        return sp.encode(h.arch)
    except SpaceError as exc:
        msg = str(exc)
        where = "NNI architecture"
        m = re.search(r"blocks\[(\d+)\]\.(\w+)", msg)
        if m and int(m.group(1)) < len(h.block_labels):
            b = h.arch.blocks[int(m.group(1))]
            suffix = {"kernel": "_ks", "mid_ch": "_exp", "se_ch": "_se"}.get(m.group(2))
            labs = h.block_labels[int(m.group(1))]
            chosen = [lab for lab in labs if suffix and lab.endswith(suffix)]
            if chosen:
                value = {"_ks": b.kernel, "_exp": round(b.mid_ch / b.in_ch, 2),
                         "_se": "se" if b.se_ch else "identity"}[suffix]
                where = f"NNI choice {chosen[0]}={value}"
            else:
                where = f"NNI block {' / '.join(labs)}"
        raise NNIError(f"NNI {h.space} {h.name}: {where} is outside space {sp.name}: {msg}") from None
