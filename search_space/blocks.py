"""Block types: the registry that maps a ``BlockSpec.type`` to its rules, cost and module.

A block type knows nothing of strings: given a ``BlockSpec`` it says whether the spec is valid
(``check``, raising ``ArchError`` with one line naming the field and the allowed values), what it
costs analytically (``cost(spec, h, w) -> (params, macs)`` at input shape h x w: all parameters
including BatchNorm affine ones, and the multiply-accumulates of its Conv2d/Linear layers), which
keyword arguments its ``modules.py`` class takes (``kwargs``) and the module itself (``module``).

Adding a block family = a new class in ``modules.py`` + a new ``BlockType`` registered here.
"""
from __future__ import annotations

from search_space.arch import BlockSpec, out_hw
from search_space.errors import ArchError, field_error

BLOCKS: dict[str, type["BlockType"]] = {}


def register(name: str):
    def deco(cls):
        cls.type_name = name
        BLOCKS[name] = cls
        return cls

    return deco


def get_block_type(name: str) -> type["BlockType"]:
    bt = BLOCKS.get(name)
    if bt is None:
        raise field_error(ArchError, "block.type", name, sorted(BLOCKS))
    return bt


def check_block(spec: BlockSpec) -> None:
    get_block_type(spec.type).check(spec)


# --------------------------------------------------------------------------------------------
# Analytic cost helpers (shared with profile.py)
# --------------------------------------------------------------------------------------------
def conv_cost(in_ch: int, out_ch: int, kernel: int, stride, h: int, w: int, groups: int = 1,
              bias: bool = False, bn: bool = True, padding: str = "same") -> tuple[int, int, int, int]:
    """(params, macs, out_h, out_w) of a conv (+ BN affine params if ``bn``); ``stride`` an int or
    an (sH, sW) pair, ``padding`` 'same' (k // 2) or 'valid'."""
    oh, ow = out_hw(h, w, kernel, stride, padding)
    weights = out_ch * (in_ch // groups) * kernel * kernel
    params = weights + (out_ch if bias else 0) + (2 * out_ch if bn else 0)
    return params, weights * oh * ow, oh, ow


def se_cost(ch: int, se_ch: int) -> tuple[int, int]:
    """Squeeze-excite: two 1x1 convs with bias on the pooled vector."""
    return ch * se_ch + se_ch + se_ch * ch + ch, 2 * ch * se_ch


# --------------------------------------------------------------------------------------------
# Block types
# --------------------------------------------------------------------------------------------
class BlockType:
    type_name = "?"
    module_class = "?"  # the class name in search_space.modules
    opts_allowed: dict[str, tuple[int, ...]] = {}
    paddings: tuple[str, ...] = ("same",)  # BlockSpec.padding values the type takes
    pair_stride = False                     # whether an (sH, sW) stride pair is allowed

    # -- validation -----------------------------------------------------------------------------
    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        if not isinstance(spec.stride, int) and not cls.pair_stride:
            pairs = sorted(n for n, b in BLOCKS.items() if b.pair_stride)
            raise ArchError(f"block({spec.type}).stride: got {spec.stride}; allowed: 1, 2 "
                            f"(an (sH, sW) pair only for {', '.join(pairs)})")
        if spec.padding not in cls.paddings:
            raise field_error(ArchError, f"block({spec.type}).padding", spec.padding, cls.paddings)
        for key, value in spec.opts:
            if key not in cls.opts_allowed:
                raise field_error(ArchError, f"block({spec.type}).opts", key,
                                  sorted(cls.opts_allowed) or "none for this block type")
            if value not in cls.opts_allowed[key]:
                raise field_error(ArchError, f"block({spec.type}).opts.{key}", value, cls.opts_allowed[key])

    @classmethod
    def _require(cls, spec: BlockSpec, name: str, ok: bool, allowed) -> None:
        if not ok:
            raise field_error(ArchError, f"block({spec.type}).{name}", getattr(spec, name), allowed)

    # -- cost / module ----------------------------------------------------------------------------
    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        raise NotImplementedError

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        raise NotImplementedError

    @classmethod
    def module(cls, spec: BlockSpec):
        from search_space import modules

        return getattr(modules, cls.module_class)(**cls.kwargs(spec))


@register("mbconv")
class MBConvType(BlockType):
    """Inverted residual (MobileNetV2/V3, MnasNet, ProxylessNAS, FBNet, OFA); mid_ch == in_ch
    drops the expansion conv (timm's "ds" block) unless opts pw=1 keeps it (timm ``ir_e1``)."""

    module_class = "MBConv"
    opts_allowed = {"pw": (1,)}
    pair_stride = True

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "mid_ch", spec.mid_ch > 0, "a positive integer (the expanded channels)")
        if spec.opt("pw") and spec.mid_ch != spec.in_ch:
            raise ArchError(f"block(mbconv).opts.pw: got 1 with mid_ch {spec.mid_ch} != in_ch {spec.in_ch}; "
                            "allowed: pw=1 only when mid_ch == in_ch")
        cls._require(spec, "kernel", spec.kernel % 2 == 1, "an odd kernel size (1, 3, 5, 7)")
        g = spec.groups
        if g != 1:
            for name in ("in_ch", "mid_ch", "out_ch"):
                if getattr(spec, name) % g:
                    raise ArchError(f"block(mbconv).groups: got {g}, which does not divide {name} "
                                    f"{getattr(spec, name)}; allowed: a common divisor of in_ch, mid_ch, out_ch")

    @classmethod
    def has_expand(cls, spec: BlockSpec) -> bool:
        return spec.mid_ch != spec.in_ch or bool(spec.opt("pw"))

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        params = macs = 0
        if cls.has_expand(spec):
            p, m, h, w = conv_cost(spec.in_ch, spec.mid_ch, 1, 1, h, w, spec.groups)
            params, macs = params + p, macs + m
        p, m, h, w = conv_cost(spec.mid_ch, spec.mid_ch, spec.kernel, spec.stride, h, w, spec.mid_ch)
        params, macs = params + p, macs + m
        if spec.se_ch:
            p, m = se_cost(spec.mid_ch, spec.se_ch)
            params, macs = params + p, macs + m
        p, m, h, w = conv_cost(spec.mid_ch, spec.out_ch, 1, 1, h, w, spec.groups)
        return params + p, macs + m

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        return dict(in_ch=spec.in_ch, out_ch=spec.out_ch, mid_ch=spec.mid_ch, kernel=spec.kernel,
                    stride=spec.stride, se_ch=spec.se_ch, se_gate=spec.se_gate, act=spec.act,
                    residual=spec.residual, groups=spec.groups, force_expand=bool(spec.opt("pw")))


@register("dwsep")
class DWSepType(BlockType):
    """MobileNetV1 depthwise-separable conv: dw kxk-BN-act, [SE], pw 1x1-BN-act.

    SE on the depthwise output (PaddleOCR's MobileNetV1Enhance); opts dwbn=0: the depthwise conv
    has neither BN nor activation (Xception's SeparableConv2d + BN + act)."""

    module_class = "DWSep"
    opts_allowed = {"dwbn": (0,)}
    pair_stride = True

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "mid_ch", spec.mid_ch == 0, "0 (dwsep has no inner width)")
        cls._require(spec, "groups", spec.groups == 1, [1])
        cls._require(spec, "residual", not spec.residual, "False (use mbconv with mid_ch == in_ch)")
        cls._require(spec, "kernel", spec.kernel % 2 == 1, "an odd kernel size (1, 3, 5, 7)")

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        p1, m1, h, w = conv_cost(spec.in_ch, spec.in_ch, spec.kernel, spec.stride, h, w, spec.in_ch,
                                 bn=bool(spec.opt("dwbn", 1)))
        if spec.se_ch:
            p, m = se_cost(spec.in_ch, spec.se_ch)
            p1, m1 = p1 + p, m1 + m
        p2, m2, h, w = conv_cost(spec.in_ch, spec.out_ch, 1, 1, h, w)
        return p1 + p2, m1 + m2

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        kw = dict(in_ch=spec.in_ch, out_ch=spec.out_ch, kernel=spec.kernel, stride=spec.stride, act=spec.act)
        if spec.se_ch:
            kw.update(se_ch=spec.se_ch, se_gate=spec.se_gate)
        if not spec.opt("dwbn", 1):
            kw["dw_bn"] = False
        return kw



@register("sandglass")
class SandGlassType(BlockType):
    """MobileNeXt sandglass block: [dw kxk-BN-act] -> 1x1 reduce-BN (linear, to mid_ch) ->
    1x1 expand-BN-act -> [dw kxk/stride-BN (linear)] -> [+ input].  The authors' code drops the
    first dw (opts dw1=0) when a stage changes width, and both dws (dw1=0, dw2=0) for such a block
    at stride 1; the stride sits on the second dw."""

    module_class = "SandGlass"
    opts_allowed = {"dw1": (0,), "dw2": (0,)}

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "mid_ch", spec.mid_ch > 0, "a positive integer (the reduced hidden channels)")
        cls._require(spec, "se_ch", spec.se_ch == 0, [0])
        cls._require(spec, "groups", spec.groups == 1, [1])
        cls._require(spec, "kernel", spec.kernel % 2 == 1, "an odd kernel size (1, 3, 5, 7)")
        if spec.stride != 1 and not spec.opt("dw2", 1):
            raise ArchError("block(sandglass).stride: got 2 with opts dw2=0; allowed: stride 1 "
                            "without the second depthwise conv (the stride sits on it)")

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        params = macs = 0
        if spec.opt("dw1", 1):
            p, m, h, w = conv_cost(spec.in_ch, spec.in_ch, spec.kernel, 1, h, w, spec.in_ch)
            params, macs = params + p, macs + m
        p, m, h, w = conv_cost(spec.in_ch, spec.mid_ch, 1, 1, h, w)
        params, macs = params + p, macs + m
        p, m, h, w = conv_cost(spec.mid_ch, spec.out_ch, 1, 1, h, w)
        params, macs = params + p, macs + m
        if spec.opt("dw2", 1):
            p, m, h, w = conv_cost(spec.out_ch, spec.out_ch, spec.kernel, spec.stride, h, w, spec.out_ch)
            params, macs = params + p, macs + m
        return params, macs

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        return dict(in_ch=spec.in_ch, out_ch=spec.out_ch, mid_ch=spec.mid_ch, kernel=spec.kernel,
                    stride=spec.stride, act=spec.act, residual=spec.residual,
                    dw1=bool(spec.opt("dw1", 1)), dw2=bool(spec.opt("dw2", 1)))


@register("shufflev2")
class ShuffleV2Type(BlockType):
    """ShuffleNetV2 unit; ``mid_ch`` is the branch width and out_ch == 2 * mid_ch.  At stride 1
    the input is split in half (in_ch == out_ch); at stride 2 both branches see the whole input."""

    module_class = "ShuffleV2"

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "se_ch", spec.se_ch == 0, [0])
        cls._require(spec, "groups", spec.groups == 1, [1])
        cls._require(spec, "residual", not spec.residual, "False (the split/concat is the shortcut)")
        cls._require(spec, "kernel", spec.kernel % 2 == 1, "an odd kernel size (3, 5, 7)")
        cls._require(spec, "out_ch", spec.out_ch % 2 == 0, "an even number (two branches of mid_ch)")
        cls._require(spec, "mid_ch", spec.mid_ch * 2 == spec.out_ch, f"out_ch / 2 = {spec.out_ch // 2}")
        if spec.stride == 1 and spec.in_ch != spec.out_ch:
            raise ArchError(f"block(shufflev2).in_ch: got {spec.in_ch} at stride 1; allowed: "
                            f"{spec.out_ch} (== out_ch: the unit splits its input in half)")

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        k, s, mid = spec.kernel, spec.stride, spec.mid_ch
        params = macs = 0
        if s > 1:
            p, m, oh, ow = conv_cost(spec.in_ch, spec.in_ch, k, s, h, w, spec.in_ch)
            params, macs = params + p, macs + m
            p, m, _, _ = conv_cost(spec.in_ch, mid, 1, 1, oh, ow)
            params, macs = params + p, macs + m
            b2_in = spec.in_ch
        else:
            b2_in = spec.in_ch // 2
        p, m, h, w = conv_cost(b2_in, mid, 1, 1, h, w)
        params, macs = params + p, macs + m
        p, m, h, w = conv_cost(mid, mid, k, s, h, w, mid)
        params, macs = params + p, macs + m
        p, m, h, w = conv_cost(mid, mid, 1, 1, h, w)
        return params + p, macs + m

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        return dict(in_ch=spec.in_ch, out_ch=spec.out_ch, mid_ch=spec.mid_ch, kernel=spec.kernel,
                    stride=spec.stride, act=spec.act)


@register("conv")
class ConvType(BlockType):
    """A plain kxk conv (optionally grouped) + BN + act: Xception's second stem conv, the 1x1 conv
    before PP-OCR's last pool.  ``padding`` 'same' or 'valid'."""

    module_class = "ConvBNAct"
    paddings = ("same", "valid")
    pair_stride = True

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "mid_ch", spec.mid_ch == 0, "0 (a conv has no inner width)")
        cls._require(spec, "se_ch", spec.se_ch == 0, [0])
        cls._require(spec, "residual", not spec.residual, "False")
        for name in ("in_ch", "out_ch"):
            if getattr(spec, name) % spec.groups:
                raise ArchError(f"block(conv).groups: got {spec.groups}, which does not divide {name} "
                                f"{getattr(spec, name)}; allowed: a common divisor of in_ch and out_ch")

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        p, m, _, _ = conv_cost(spec.in_ch, spec.out_ch, spec.kernel, spec.stride, h, w, spec.groups,
                               padding=spec.padding)
        return p, m

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        kw = dict(in_ch=spec.in_ch, out_ch=spec.out_ch, kernel=spec.kernel, stride=spec.stride,
                  groups=spec.groups, act=spec.act)
        if spec.padding != "same":
            kw["padding"] = spec.padding
        return kw


@register("maxpool")
class MaxPoolType(BlockType):
    """A kxk max-pool: SqueezeNet's ceil-mode pools between fire groups ('ceil'), PP-OCR's final
    2x2 pool ('valid').  No parameters; in_ch == out_ch; ``act`` is not used (keep the default)."""

    module_class = "MaxPool"
    paddings = ("same", "valid", "ceil")
    pair_stride = True

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "out_ch", spec.out_ch == spec.in_ch, f"{spec.in_ch} (== in_ch: pooling keeps channels)")
        cls._require(spec, "mid_ch", spec.mid_ch == 0, [0])
        cls._require(spec, "se_ch", spec.se_ch == 0, [0])
        cls._require(spec, "groups", spec.groups == 1, [1])
        cls._require(spec, "residual", not spec.residual, "False")
        cls._require(spec, "act", spec.act == "relu", "relu (the default: a pool has no activation)")

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        return 0, 0

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        return dict(kernel=spec.kernel, stride=spec.stride, padding=spec.padding)


@register("fire")
class FireType(BlockType):
    """SqueezeNet's Fire module: squeeze 1x1 (``mid_ch``) + act, then expand 1x1 and expand 3x3
    (``kernel``) of out_ch / 2 each + act, concatenated.  Convs with bias, no BN (torchvision's
    Fire); ``residual`` adds the paper's simple bypass (in_ch == out_ch)."""

    module_class = "Fire"

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "mid_ch", spec.mid_ch > 0, "a positive integer (the squeeze channels)")
        cls._require(spec, "out_ch", spec.out_ch % 2 == 0, "an even number (expand 1x1 + expand kxk of out_ch / 2)")
        cls._require(spec, "stride", spec.stride == 1, "1 (SqueezeNet downsamples with maxpool blocks)")
        cls._require(spec, "se_ch", spec.se_ch == 0, [0])
        cls._require(spec, "groups", spec.groups == 1, [1])
        cls._require(spec, "kernel", spec.kernel % 2 == 1, "an odd kernel size (3, 5, 7)")

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        e = spec.out_ch // 2
        p1, m1, _, _ = conv_cost(spec.in_ch, spec.mid_ch, 1, 1, h, w, bias=True, bn=False)
        p2, m2, _, _ = conv_cost(spec.mid_ch, e, 1, 1, h, w, bias=True, bn=False)
        p3, m3, _, _ = conv_cost(spec.mid_ch, e, spec.kernel, 1, h, w, bias=True, bn=False)
        return p1 + p2 + p3, m1 + m2 + m3

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        return dict(in_ch=spec.in_ch, out_ch=spec.out_ch, mid_ch=spec.mid_ch, kernel=spec.kernel, act=spec.act,
                    residual=spec.residual)


@register("shufflev1")
class ShuffleV1Type(BlockType):
    """ShuffleNetV1 unit (the authors' ShuffleNet-Series code): grouped 1x1 to ``mid_ch`` + BN + act,
    channel shuffle, dw kxk/stride + BN, grouped 1x1 + BN; stride 1: act(x + y) (in_ch == out_ch);
    stride 2: concat(avgpool 3x3/2 (x), act(y)) with y of out_ch - in_ch channels.  ``groups`` groups
    both 1x1 convs; opts gpw1=1 leaves the first one ungrouped (the first unit of stage 2)."""

    module_class = "ShuffleV1"
    opts_allowed = {"gpw1": (1,)}

    @classmethod
    def branch_out(cls, spec: BlockSpec) -> int:
        return spec.out_ch - spec.in_ch if spec.stride != 1 else spec.out_ch

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "mid_ch", spec.mid_ch > 0, "a positive integer (the bottleneck channels)")
        cls._require(spec, "se_ch", spec.se_ch == 0, [0])
        cls._require(spec, "residual", not spec.residual, "False (the unit's shortcut is built in)")
        cls._require(spec, "kernel", spec.kernel % 2 == 1, "an odd kernel size (3, 5, 7)")
        if spec.stride == 1 and spec.in_ch != spec.out_ch:
            raise ArchError(f"block(shufflev1).in_ch: got {spec.in_ch} at stride 1; allowed: {spec.out_ch} "
                            "(== out_ch: the unit adds its input)")
        if spec.stride != 1 and spec.out_ch <= spec.in_ch:
            raise ArchError(f"block(shufflev1).out_ch: got {spec.out_ch} at stride 2; allowed: more than in_ch "
                            f"{spec.in_ch} (the pooled input is concatenated)")
        g = spec.groups
        need = {"mid_ch": spec.mid_ch, "out_ch" if spec.stride == 1 else "out_ch - in_ch": cls.branch_out(spec)}
        if not spec.opt("gpw1"):
            need = {"in_ch": spec.in_ch, **need}
        for name, v in need.items():
            if v % g:
                raise ArchError(f"block(shufflev1).groups: got {g}, which does not divide {name} {v}; "
                                f"allowed: a common divisor of {', '.join(need)}")

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        g1 = 1 if spec.opt("gpw1") else spec.groups
        p1, m1, _, _ = conv_cost(spec.in_ch, spec.mid_ch, 1, 1, h, w, g1)
        p2, m2, h, w = conv_cost(spec.mid_ch, spec.mid_ch, spec.kernel, spec.stride, h, w, spec.mid_ch)
        p3, m3, _, _ = conv_cost(spec.mid_ch, cls.branch_out(spec), 1, 1, h, w, spec.groups)
        return p1 + p2 + p3, m1 + m2 + m3

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        kw = dict(in_ch=spec.in_ch, out_ch=spec.out_ch, mid_ch=spec.mid_ch, kernel=spec.kernel,
                  stride=spec.stride, groups=spec.groups, act=spec.act)
        if spec.opt("gpw1"):
            kw["first_group"] = True
        return kw


@register("xception")
class XceptionType(BlockType):
    """Xception block (Chollet 2017; Cadene's / timm's legacy code): ``reps`` x [act, separable kxk
    conv (dw, pw; no BN between), BN], widths in -> mid -> ... -> mid -> out, then a kxk/stride
    max-pool (padding k // 2) when stride 2; plus a skip: 1x1/stride conv + BN when the shape
    changes, the identity otherwise.  opts reps=<n> (default 2); relu1=0: no act before the first
    separable conv (the first block, after the stem's act).  mid_ch == out_ch is "grow first";
    mid_ch == in_ch grows at the last separable conv (the exit block).  With reps 1, mid_ch == out_ch."""

    module_class = "XceptionBlock"
    opts_allowed = {"reps": (1, 2, 3, 4), "relu1": (0,)}

    @classmethod
    def widths(cls, spec: BlockSpec) -> list[tuple[int, int]]:
        reps = spec.opt("reps", 2)
        if reps == 1:
            return [(spec.in_ch, spec.out_ch)]
        return [(spec.in_ch, spec.mid_ch)] + [(spec.mid_ch, spec.mid_ch)] * (reps - 2) + [(spec.mid_ch, spec.out_ch)]

    @classmethod
    def check(cls, spec: BlockSpec) -> None:
        super().check(spec)
        cls._require(spec, "mid_ch", spec.mid_ch > 0, "a positive integer (the width between separable convs)")
        if spec.opt("reps", 2) == 1:
            cls._require(spec, "mid_ch", spec.mid_ch == spec.out_ch, f"{spec.out_ch} (== out_ch with opts reps=1)")
        cls._require(spec, "se_ch", spec.se_ch == 0, [0])
        cls._require(spec, "groups", spec.groups == 1, [1])
        cls._require(spec, "residual", not spec.residual, "False (the block's skip is built in)")
        cls._require(spec, "kernel", spec.kernel % 2 == 1, "an odd kernel size (3, 5, 7)")

    @classmethod
    def has_skip_conv(cls, spec: BlockSpec) -> bool:
        return spec.in_ch != spec.out_ch or spec.stride != 1

    @classmethod
    def cost(cls, spec: BlockSpec, h: int, w: int) -> tuple[int, int]:
        params = macs = 0
        if cls.has_skip_conv(spec):
            p, m, _, _ = conv_cost(spec.in_ch, spec.out_ch, 1, spec.stride, h, w, padding="valid")
            params, macs = params + p, macs + m
        for cin, cout in cls.widths(spec):
            p, m, _, _ = conv_cost(cin, cin, spec.kernel, 1, h, w, cin, bn=False)
            params, macs = params + p, macs + m
            p, m, _, _ = conv_cost(cin, cout, 1, 1, h, w)
            params, macs = params + p, macs + m
        return params, macs

    @classmethod
    def kwargs(cls, spec: BlockSpec) -> dict:
        kw = dict(in_ch=spec.in_ch, out_ch=spec.out_ch, mid_ch=spec.mid_ch, kernel=spec.kernel,
                  stride=spec.stride, act=spec.act, reps=spec.opt("reps", 2))
        if spec.opt("relu1", 1) == 0:
            kw["act_first"] = False
        return kw


__all__ = ["BLOCKS", "BlockType", "check_block", "conv_cost", "get_block_type", "register", "se_cost"]
