"""Pure-torch building blocks of edgenas networks.

This file imports only ``torch`` and ``math`` and every class takes plain keyword arguments, so
``export`` can copy its source verbatim into a standalone ``model.py``.  Module registration order
(hence ``state_dict`` order) follows the reference implementations (torchvision, timm, the
MobileNeXt authors' code): e.g. stem conv, stem bn, each block's convs and BNs in data-flow order
(expand, dw, SE fc1/fc2, project), head conv, bn, hidden, classifier.
"""
import math  # noqa: F401  (kept so exported code may use it)

import torch
from torch import nn


def make_act(name):
    """The activation module for a name: relu, relu6, hswish, swish or linear (identity)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"act: got {name!r}; allowed: relu, relu6, hswish, swish, linear")


def make_gate(name):
    if name == "hsigmoid":
        return nn.Hardsigmoid(inplace=True)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"se_gate: got {name!r}; allowed: hsigmoid, sigmoid")


def pad_of(kernel, padding="same"):
    """Conv/pool padding: k // 2 for 'same', 0 for 'valid' and 'ceil'."""
    if padding == "same":
        return kernel // 2
    if padding in ("valid", "ceil"):
        return 0
    raise ValueError(f"padding: got {padding!r}; allowed: same, valid, ceil")


class ConvBNAct(nn.Module):
    """kxk conv (no bias; padding k // 2, or none if 'valid') + BatchNorm + activation.
    ``stride`` is an int or an (sH, sW) pair."""

    def __init__(self, in_ch, out_ch, kernel=1, stride=1, groups=1, act="relu", padding="same"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, pad_of(kernel, padding), groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = make_act(act)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Global pool, 1x1 conv (bias) to ``se_ch``, ReLU, 1x1 conv (bias) back, gate, scale."""

    def __init__(self, ch, se_ch, gate="hsigmoid"):
        super().__init__()
        self.fc1 = nn.Conv2d(ch, se_ch, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(se_ch, ch, 1, bias=True)
        self.gate = make_gate(gate)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MBConv(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2/V3, MnasNet, ProxylessNAS, FBNet).

    [1x1 expand-BN-act if mid_ch != in_ch or force_expand] -> dw kxk/stride-BN-act -> [SE] ->
    1x1 project-BN (linear) -> [+ input if residual].  ``groups`` groups the 1x1 convs.
    With mid_ch == in_ch this is timm's depthwise-separable "ds" block (dw, SE, pw linear).
    """

    def __init__(self, in_ch, out_ch, mid_ch, kernel=3, stride=1, se_ch=0, se_gate="hsigmoid",
                 act="relu", residual=False, groups=1, force_expand=False):
        super().__init__()
        self.residual = residual
        self.expand = (ConvBNAct(in_ch, mid_ch, 1, 1, groups, act)
                       if (mid_ch != in_ch or force_expand) else None)
        self.dw = ConvBNAct(mid_ch, mid_ch, kernel, stride, mid_ch, act)
        self.se = SqueezeExcite(mid_ch, se_ch, se_gate) if se_ch else None
        self.project = ConvBNAct(mid_ch, out_ch, 1, 1, groups, "linear")

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class DWSep(nn.Module):
    """Depthwise-separable conv of MobileNetV1: dw kxk/stride-BN-act, [SE], pw 1x1-BN-act.

    SE after the depthwise conv as PaddleOCR's MobileNetV1Enhance; ``dw_bn`` False: a bare
    depthwise conv, no BN nor act (Xception's SeparableConv2d followed by BN + act).
    """

    def __init__(self, in_ch, out_ch, kernel=3, stride=1, act="relu", se_ch=0, se_gate="hsigmoid", dw_bn=True):
        super().__init__()
        if dw_bn:
            self.dw = ConvBNAct(in_ch, in_ch, kernel, stride, in_ch, act)
        else:
            self.dw = nn.Conv2d(in_ch, in_ch, kernel, stride, kernel // 2, groups=in_ch, bias=False)
        self.se = SqueezeExcite(in_ch, se_ch, se_gate) if se_ch else None
        self.pw = ConvBNAct(in_ch, out_ch, 1, 1, 1, act)

    def forward(self, x):
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw(x)


class SandGlass(nn.Module):
    """MobileNeXt sandglass block (Zhou et al. 2020, the authors' i2rnet/mnext code).

    [dw kxk-BN-act on the wide input, if dw1] -> 1x1 reduce-BN (linear) to ``mid_ch`` ->
    1x1 expand-BN-act to ``out_ch`` -> [dw kxk/stride-BN (linear), if dw2] -> [+ input if residual].
    """

    def __init__(self, in_ch, out_ch, mid_ch, kernel=3, stride=1, act="relu6", residual=False,
                 dw1=True, dw2=True):
        super().__init__()
        self.residual = residual
        self.dw1 = ConvBNAct(in_ch, in_ch, kernel, 1, in_ch, act) if dw1 else None
        self.reduce = ConvBNAct(in_ch, mid_ch, 1, 1, 1, "linear")
        self.expand = ConvBNAct(mid_ch, out_ch, 1, 1, 1, act)
        self.dw2 = ConvBNAct(out_ch, out_ch, kernel, stride, out_ch, "linear") if dw2 else None

    def forward(self, x):
        y = x if self.dw1 is None else self.dw1(x)
        y = self.expand(self.reduce(y))
        if self.dw2 is not None:
            y = self.dw2(y)
        return x + y if self.residual else y


def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV2(nn.Module):
    """ShuffleNetV2 unit (torchvision's InvertedResidual).

    stride 1: split in half; right half through 1x1-BN-act, dw kxk-BN, 1x1-BN-act; concat; shuffle.
    stride 2: branch1 = dw kxk/2-BN, 1x1-BN-act on the whole input; branch2 as above on the whole
    input (dw with stride 2); concat; shuffle.  ``mid_ch`` is the branch width (out_ch // 2).
    """

    def __init__(self, in_ch, out_ch, mid_ch, kernel=3, stride=1, act="relu"):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(in_ch, in_ch, kernel, stride, kernel // 2, groups=in_ch, bias=False),
                nn.BatchNorm2d(in_ch),
                nn.Conv2d(in_ch, mid_ch, 1, 1, 0, bias=False),
                nn.BatchNorm2d(mid_ch),
                make_act(act),
            )
        else:
            self.branch1 = None
        b2_in = in_ch if stride > 1 else in_ch // 2
        self.branch2 = nn.Sequential(
            nn.Conv2d(b2_in, mid_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(mid_ch),
            make_act(act),
            nn.Conv2d(mid_ch, mid_ch, kernel, stride, kernel // 2, groups=mid_ch, bias=False),
            nn.BatchNorm2d(mid_ch),
            nn.Conv2d(mid_ch, mid_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(mid_ch),
            make_act(act),
        )

    def forward(self, x):
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class MaxPool(nn.Module):
    """kxk max-pool; padding k // 2 ('same'), none ('valid') or none with ceil mode ('ceil')."""

    def __init__(self, kernel=3, stride=2, padding="same"):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel, stride, pad_of(kernel, padding), ceil_mode=padding == "ceil")

    def forward(self, x):
        return self.pool(x)


class Fire(nn.Module):
    """SqueezeNet's Fire module (torchvision's): squeeze 1x1 + act, expand 1x1 and expand kxk
    (out_ch // 2 each) + act, concatenated; convs with bias, no BN; optional simple bypass."""

    def __init__(self, in_ch, out_ch, mid_ch, kernel=3, act="relu", residual=False):
        super().__init__()
        self.residual = residual
        self.squeeze = nn.Conv2d(in_ch, mid_ch, 1)
        self.squeeze_act = make_act(act)
        self.expand1x1 = nn.Conv2d(mid_ch, out_ch // 2, 1)
        self.expand1x1_act = make_act(act)
        self.expand3x3 = nn.Conv2d(mid_ch, out_ch - out_ch // 2, kernel, padding=kernel // 2)
        self.expand3x3_act = make_act(act)

    def forward(self, x):
        s = self.squeeze_act(self.squeeze(x))
        y = torch.cat([self.expand1x1_act(self.expand1x1(s)), self.expand3x3_act(self.expand3x3(s))], 1)
        return x + y if self.residual else y


class ShuffleV1(nn.Module):
    """ShuffleNetV1 unit (the authors' ShuffleNet-Series ShuffleV1Block).

    1x1 (groups, or 1 if ``first_group``) to mid_ch-BN-act, channel shuffle (groups > 1),
    dw kxk/stride-BN, 1x1 (groups)-BN; stride 1: act(x + y); stride 2: concat(avgpool 3x3/2 (x),
    act(y)), y with out_ch - in_ch channels.  The shuffle is the authors' (reshape to
    (c // groups, groups), transpose), so that their trained weights give their outputs.
    """

    def __init__(self, in_ch, out_ch, mid_ch, kernel=3, stride=1, groups=1, act="relu", first_group=False):
        super().__init__()
        self.stride = stride
        self.groups = groups
        branch_out = out_ch - in_ch if stride != 1 else out_ch
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 1, 1, 0, groups=1 if first_group else groups, bias=False),
            nn.BatchNorm2d(mid_ch),
            make_act(act),
            nn.Conv2d(mid_ch, mid_ch, kernel, stride, kernel // 2, groups=mid_ch, bias=False),
            nn.BatchNorm2d(mid_ch),
        )
        self.branch_main_2 = nn.Sequential(
            nn.Conv2d(mid_ch, branch_out, 1, 1, 0, groups=groups, bias=False),
            nn.BatchNorm2d(branch_out),
        )
        self.act = make_act(act)
        self.branch_proj = nn.AvgPool2d(3, 2, 1) if stride != 1 else None

    def forward(self, x):
        y = self.branch_main_1(x)
        if self.groups > 1:
            n, c, h, w = y.shape
            y = y.reshape(n, c // self.groups, self.groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        y = self.branch_main_2(y)
        if self.branch_proj is None:
            return self.act(x + y)
        return torch.cat((self.branch_proj(x), self.act(y)), 1)


class SeparableConv(nn.Module):
    """Xception's SeparableConv2d: depthwise kxk (padding k // 2) then pointwise 1x1, no bias, no BN between."""

    def __init__(self, in_ch, out_ch, kernel=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, kernel, 1, kernel // 2, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False)

    def forward(self, x):
        return self.pointwise(self.conv1(x))


class XceptionBlock(nn.Module):
    """Xception block (Cadene's pretrainedmodels / timm legacy ``Block``).

    skip: 1x1/stride conv + BN when the shape changes (registered first, as in the reference);
    rep: ``reps`` x [act, SeparableConv, BN] (widths in -> mid ... mid -> out; no act first if
    ``act_first`` is False), then a kxk/stride max-pool (padding k // 2) when stride != 1; out = rep + skip.
    """

    def __init__(self, in_ch, out_ch, mid_ch, kernel=3, stride=1, act="relu", reps=2, act_first=True):
        super().__init__()
        if in_ch != out_ch or stride != 1:
            self.skip = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_ch)
        else:
            self.skip = self.skipbn = None
        if reps == 1:
            widths = [(in_ch, out_ch)]
        else:
            widths = [(in_ch, mid_ch)] + [(mid_ch, mid_ch)] * (reps - 2) + [(mid_ch, out_ch)]
        rep = []
        for i, (cin, cout) in enumerate(widths):
            if i > 0 or act_first:
                rep.append(make_act(act) if i > 0 else make_act_copy(act))
            rep += [SeparableConv(cin, cout, kernel), nn.BatchNorm2d(cout)]
        if stride != 1:
            rep.append(nn.MaxPool2d(kernel, stride, kernel // 2))
        self.rep = nn.Sequential(*rep)

    def forward(self, x):
        skip = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + skip


def make_act_copy(name):
    """An activation that does not modify its input in place (the input is also the skip)."""
    act = make_act(name)
    if hasattr(act, "inplace"):
        act.inplace = False
    return act


class Stem(nn.Module):
    """kxk/stride conv + BN + act, optionally followed by a 3x3/2 max-pool (padding 1).
    ``bn`` False: the conv has a bias and no BN (SqueezeNet); ``padding`` 'valid': no padding."""

    def __init__(self, in_ch, out_ch, kernel=3, stride=2, act="relu", pool=False, bn=True, padding="same"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, pad_of(kernel, padding), bias=not bn)
        self.bn = nn.BatchNorm2d(out_ch) if bn else None
        self.act = make_act(act)
        self.pool = nn.MaxPool2d(3, 2, 1) if pool else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        x = self.act(x)
        return x if self.pool is None else self.pool(x)


class Head(nn.Module):
    """[1x1 conv last_ch + BN + act] -> global avg pool -> [Linear hidden_ch (bias) + act] ->
    dropout -> Linear classifier.

    ``classifier`` 'conv' (SqueezeNet): [1x1 conv last_ch + BN + act] -> dropout -> 1x1 conv
    classifier -> act -> global avg pool.  ``classifier_bias`` False: no classifier bias.
    """

    def __init__(self, in_ch, num_classes=1000, last_ch=0, hidden_ch=0, act="relu", dropout=0.0,
                 hidden_bias=True, classifier="linear", classifier_bias=True):
        super().__init__()
        self.conv_classifier = classifier == "conv"
        ch = in_ch
        if last_ch:
            self.conv = nn.Conv2d(ch, last_ch, 1, 1, 0, bias=False)
            self.bn = nn.BatchNorm2d(last_ch)
            self.act = make_act(act)
            ch = last_ch
        else:
            self.conv = self.bn = self.act = None
        if hidden_ch:
            self.hidden = nn.Linear(ch, hidden_ch, bias=hidden_bias)
            self.hidden_act = make_act(act)
            ch = hidden_ch
        else:
            self.hidden = self.hidden_act = None
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        if self.conv_classifier:
            self.classifier = nn.Conv2d(ch, num_classes, 1, bias=classifier_bias)
            self.classifier_act = make_act(act)
        else:
            self.classifier = nn.Linear(ch, num_classes, bias=classifier_bias)

    def forward_features(self, x):
        """What reaches the classifier: the pooled vector, or the feature map for a conv classifier."""
        if self.conv is not None:
            x = self.act(self.bn(self.conv(x)))
        if self.conv_classifier:
            return x
        x = x.mean((2, 3))
        if self.hidden is not None:
            x = self.hidden_act(self.hidden(x))
        return x

    def forward(self, x):
        if self.conv_classifier:
            return self.classifier_act(self.classifier(self.dropout(self.forward_features(x)))).mean((2, 3))
        return self.classifier(self.dropout(self.forward_features(x)))


class Net(nn.Module):
    """stem -> blocks -> head.  ``blocks`` is a list of modules."""

    def __init__(self, stem, blocks, head):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward_features(self, x):
        return self.blocks(self.stem(x))

    def forward(self, x):
        return self.head(self.forward_features(x))
