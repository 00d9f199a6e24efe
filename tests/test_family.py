"""The rest of the family (issue 9): SqueezeNet, ShuffleNetV1, Xception and the PP-OCR backbones as
block types (fire, shufflev1, xception, conv, maxpool), zoo entries and fixed points.

Reference numbers and where they come from:
- SqueezeNet 1.0 / 1.1: ``../shared/data/reference_nets.json`` (torchvision), checked in test_zoo.py
  (params, MACs, state_dict order and shapes); here the structure behind them.
- ShuffleNetV1: Zhang et al. 2018 (arXiv:1707.01083), Table 1: stage output channels per group
  count and the complexity row "143 140 137 133 137" MFLOPs (ShuffleNet 1x, g = 1, 2, 3, 4, 8);
  megvii-model/ShuffleNet-Series ShuffleNetV1/README.md: 1.0x g3 1.9M and g8 2.4M parameters.
- Xception: Chollet 2017 (arXiv:1610.02357), Table 3: 22,855,952 parameters; section 3: 36
  convolutional layers in the feature extractor; the 10x10 final feature map at 299x299
  (timm's xception configs: pool_size [10, 10]).
- PP-OCR: PaddleOCR ppocr/modeling/backbones/rec_mobilenet_v3.py (the small cfg table below, scale
  0.35, make_divisible, SE = channel // 4) and rec_mv1_enhance.py (scale 0.5); input shapes from
  configs/cls/cls_mv3.yml (3x48x192) and the PP-OCRv2 recognizer (3x32x320).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from search_space import zoo
from search_space.arch import Arch, BlockSpec, Head, Stem, conv_out, make_divisible, signatures
from search_space.blocks import check_block, get_block_type
from search_space.errors import ArchError
from search_space.profile import count_module, profile, profile_layers

torch.set_num_threads(1)


def _block_outputs(net, x) -> list[tuple[int, int, int]]:
    """(C, H, W) after the stem and after every block, measured with hooks."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for m in [net.stem, *net.blocks]]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return shapes


def _check_signatures_match(arch: Arch, hw: tuple[int, int]) -> None:
    """signatures() -- the one place shapes are derived -- agrees with the module, layer by layer."""
    sigs = signatures(arch, hw)
    measured = _block_outputs(arch.build(), torch.zeros(1, 3, *hw))
    predicted = [(s.spec.out_ch, *s.out_hw) for s in sigs[:-1]]
    assert measured == predicted
    assert (sigs[-1].h, sigs[-1].w) == measured[-1][1:]


# --------------------------------------------------------------------------------------------
# SqueezeNet
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,stem_k,fires", [("squeezenet1_0", 7, 8), ("squeezenet1_1", 3, 8)])
def test_squeezenet_structure(name, stem_k, fires):
    arch = zoo.get(name)
    assert (arch.stem.kernel, arch.stem.bn, arch.stem.padding, arch.stem.pool) == (stem_k, False, "valid", False)
    assert [b.type for b in arch.blocks].count("fire") == fires
    pools = [b for b in arch.blocks if b.type == "maxpool"]
    assert len(pools) == 3 and all((p.kernel, p.stride, p.padding) == (3, 2, "ceil") for p in pools)
    assert (arch.head.classifier, arch.head.dropout, arch.head.act) == ("conv", 0.5, "relu")
    net = arch.build()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))
    # torchvision's SqueezeNets end on a 13x13 map at 224 (ceil-mode pools: 109/111 -> 55 ... -> 13)
    assert _block_outputs(net, torch.zeros(1, 3, 224, 224))[-1] == (512, 13, 13)
    _check_signatures_match(arch, (224, 224))
    _check_signatures_match(arch, (97, 130))
    # the conv classifier's ReLU comes before the pool: logits are never negative
    with torch.no_grad():
        assert (net.eval()(torch.randn(2, 3, 64, 64)) >= 0).all()


def test_ceil_mode_rounding_matches_torch():
    for size in range(5, 40):
        for k, s in ((3, 2), (2, 2), (3, 1)):
            got = nn.MaxPool2d(k, s, 0, ceil_mode=True)(torch.zeros(1, 1, size, size)).shape[-1]
            assert conv_out(size, k, s, "ceil") == got, (size, k, s)
            got = nn.MaxPool2d(k, s, 0)(torch.zeros(1, 1, size, size)).shape[-1]
            assert conv_out(size, k, s, "valid") == got, (size, k, s)


# --------------------------------------------------------------------------------------------
# ShuffleNetV1
# --------------------------------------------------------------------------------------------
# Zhang et al. 2018, Table 1: stage 2/3/4 output channels and complexity (MFLOPs), ShuffleNet 1x
TABLE1 = {1: ((144, 288, 576), 143), 2: ((200, 400, 800), 140), 3: ((240, 480, 960), 137),
          4: ((272, 544, 1088), 133), 8: ((384, 768, 1536), 137)}
README_PARAMS_M = {3: 1.9, 8: 2.4}  # ShuffleNet-Series ShuffleNetV1/README.md, 1.0x


@pytest.mark.parametrize("g", sorted(TABLE1))
def test_shufflenet_v1_matches_the_paper(g):
    arch = zoo.get(f"shufflenet_v1_g{g}")
    widths, mflops = TABLE1[g]
    assert all(b.type == "shufflev1" and b.groups == g for b in arch.blocks)
    assert [b.out_ch for b in arch.blocks if b.stride == 2] == list(widths)
    assert [sum(1 for b in arch.blocks if b.out_ch == w) for w in widths] == [4, 8, 4]
    assert all(b.mid_ch == b.out_ch // 4 for b in arch.blocks)
    assert [b.opt("gpw1") for b in arch.blocks].count(1) == 1 and arch.blocks[0].opt("gpw1") == 1
    assert arch.head.classifier_bias is False
    p = profile(arch)
    fc_macs = widths[-1] * 1000
    # the paper's complexity row counts the convolutions (the 1000-way FC is left out)
    assert round((p["macs"] - fc_macs) / 1e6) == mflops
    if g in README_PARAMS_M:
        assert round(p["params"] / 1e6, 1) == README_PARAMS_M[g]
    _check_signatures_match(arch, (224, 224))


def test_shufflev1_unit_shapes_and_the_authors_shuffle_order():
    spec = BlockSpec("shufflev1", 24, 240, mid_ch=60, stride=2, groups=3, opts=(("gpw1", 1),))
    unit = get_block_type("shufflev1").module(spec)
    w = [m.weight.shape for m in unit.modules() if isinstance(m, nn.Conv2d)]
    assert w == [(60, 24, 1, 1), (60, 1, 3, 3), (216, 20, 1, 1)]  # first 1x1 ungrouped, 240 - 24 from the branch
    # the channel shuffle between the two halves of the main branch: output channel j * (c / g) + i
    # comes from channel i * g + j (reshape to (c / g, g) and transpose, as the authors' code does)
    seen = {}
    unit.branch_main_1.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    unit.branch_main_2.register_forward_pre_hook(lambda m, i: seen.__setitem__("in", i[0]))
    unit.eval()
    with torch.no_grad():
        y = unit(torch.randn(1, 24, 16, 16))
    c, g = 60, 3
    perm = [i * g + j for j in range(g) for i in range(c // g)]
    assert torch.equal(seen["in"], seen["out"][:, perm])
    assert y.shape == (1, 240, 8, 8)
    # the first 24 output channels are the 3x3/2 average-pooled input
    x = torch.randn(1, 24, 16, 16)
    with torch.no_grad():
        assert torch.allclose(unit(x)[:, :24], nn.AvgPool2d(3, 2, 1)(x))
    # stride 1: act(x + y) keeps the shape
    unit1 = get_block_type("shufflev1").module(BlockSpec("shufflev1", 240, 240, mid_ch=60, groups=3)).eval()
    with torch.no_grad():
        out = unit1(torch.randn(1, 240, 8, 8))
    assert out.shape == (1, 240, 8, 8) and (out >= 0).all()


# --------------------------------------------------------------------------------------------
# Xception
# --------------------------------------------------------------------------------------------
def test_xception_matches_the_paper():
    arch = zoo.get("xception")
    assert profile(arch)["params"] == 22_855_952  # Chollet 2017, Table 3
    sep = sum(get_block_type("xception").widths(b).__len__() for b in arch.blocks if b.type == "xception")
    sep += sum(1 for b in arch.blocks if b.type == "dwsep")
    assert 1 + sum(1 for b in arch.blocks if b.type == "conv") + sep == 36  # "36 convolutional layers"
    assert [b.out_ch for b in arch.blocks if b.type == "xception" and b.stride == 2] == [128, 256, 728, 1024]
    assert sum(1 for b in arch.blocks if b.type == "xception" and b.opt("reps") == 3) == 8
    # entry flow without padding: 299 -> 149 -> 147 -> 74 -> 37 -> 19 -> ... -> 10
    sigs = signatures(arch, 299)
    assert [sigs[i].h for i in range(1, 4)] == [149, 147, 74]
    assert (sigs[-1].in_ch, sigs[-1].h, sigs[-1].w) == (2048, 10, 10)


def test_xception_block_variants_and_registration_order():
    first = BlockSpec("xception", 64, 128, mid_ch=128, stride=2, opts=(("relu1", 0),))
    mod = get_block_type("xception").module(first)
    keys = [k for k in mod.state_dict() if "running" not in k and "num_batches" not in k]
    # the reference registers the skip conv + BN before the separable stack
    assert keys[:3] == ["skip.weight", "skipbn.weight", "skipbn.bias"]
    assert [type(m).__name__ for m in mod.rep] == ["SeparableConv", "BatchNorm2d", "ReLU", "SeparableConv",
                                                   "BatchNorm2d", "MaxPool2d"]
    middle = get_block_type("xception").module(BlockSpec("xception", 32, 32, mid_ch=32, opts=(("reps", 3),)))
    assert middle.skip is None and [type(m).__name__ for m in middle.rep].count("SeparableConv") == 3
    assert middle.rep[0].inplace is False  # the input is also the identity skip
    x = torch.randn(1, 32, 9, 9)
    middle.eval()
    with torch.no_grad():
        y = middle(x.clone())
    assert y.shape == x.shape
    # identity skip: with the stack's last BN zeroed the block returns its input
    last_bn = [m for m in middle.rep if isinstance(m, nn.BatchNorm2d)][-1]
    nn.init.zeros_(last_bn.weight)
    with torch.no_grad():
        assert torch.equal(middle(x.clone()), x)
    exit_ = BlockSpec("xception", 48, 64, mid_ch=48, stride=2)  # grows at its last separable conv
    shapes = [m.weight.shape for m in get_block_type("xception").module(exit_).rep.modules()
              if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert shapes == [(48, 48, 1, 1), (64, 48, 1, 1)]


# --------------------------------------------------------------------------------------------
# PP-OCR backbones
# --------------------------------------------------------------------------------------------
# rec_mobilenet_v3.py, model_name="small": k, exp, c, se, nl, s (s 2 -> (2, 1) with small_stride [2]*4)
PADDLE_SMALL = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
                (5, 96, 40, True, "hswish", 2), (5, 240, 40, True, "hswish", 1), (5, 240, 40, True, "hswish", 1),
                (5, 120, 48, True, "hswish", 1), (5, 144, 48, True, "hswish", 1), (5, 288, 96, True, "hswish", 2),
                (5, 576, 96, True, "hswish", 1), (5, 576, 96, True, "hswish", 1)]


def test_ppocr_mv3_small_x035_channel_rounding_follows_paddleocr():
    scale = 0.35
    arch = zoo.get("ppocr_mv3_small_x035")
    inplanes = make_divisible(16 * scale)
    assert arch.stem.out_ch == inplanes == 8 and arch.stem.act == "hswish"
    mb = [b for b in arch.blocks if b.type == "mbconv"]
    assert len(mb) == len(PADDLE_SMALL)
    for b, (k, exp, c, se, nl, s) in zip(mb, PADDLE_SMALL):
        mid, out = make_divisible(scale * exp), make_divisible(scale * c)
        assert (b.in_ch, b.mid_ch, b.out_ch, b.kernel, b.act) == (inplanes, mid, out, k, nl)
        assert b.stride == ((2, 1) if s == 2 else 1)
        assert b.se_ch == (mid // 4 if se else 0) and (not se or b.se_gate == "hsigmoid")
        assert b.opt("pw", 0) == 1 or b.mid_ch != b.in_ch  # the expand conv is always there
        assert b.residual == (s == 1 and inplanes == out)
        inplanes = out
    conv, pool = arch.blocks[-2:]
    assert (conv.type, conv.kernel, conv.out_ch, conv.act) == ("conv", 1, make_divisible(scale * 576), "hswish")
    assert (pool.type, pool.kernel, pool.stride, pool.padding) == ("maxpool", 2, 2, "valid")


def test_ppocr_mv1_enhance_follows_paddleocr():
    arch = zoo.get("ppocr_mv1_enhance")
    dw = [b for b in arch.blocks if b.type == "dwsep"]
    assert arch.stem.out_ch == int(32 * 0.5) and len(dw) == 13
    assert [b.out_ch for b in dw] == [int(c * 0.5) for c in (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512,
                                                              1024, 1024)]
    assert [i for i, b in enumerate(dw) if b.stride == (2, 1)] == [3, 5, 11]
    assert [b.kernel for b in dw] == [3] * 6 + [5] * 7
    assert [b.se_ch for b in dw] == [0] * 11 + [256 // 4, 512 // 4]
    assert all(b.act == "hswish" for b in dw)
    assert (arch.blocks[-1].type, arch.blocks[-1].kernel, arch.blocks[-1].padding) == ("maxpool", 2, "valid")


@pytest.mark.parametrize("name,hw,shape", [
    ("ppocr_mv1_enhance", (32, 320), (1, 512, 1, 80)),      # PP-OCRv2 recognizer input; width / 4
    ("ppocr_mv3_small_x035", (48, 192), (1, 200, 1, 48)),   # cls_mv3.yml input; out_channels 200
])
def test_ppocr_text_line_feature_shape(name, hw, shape):
    arch = zoo.get(name)
    net = arch.build().eval()
    with torch.no_grad():
        assert tuple(net.forward_features(torch.randn(1, 3, *hw)).shape) == shape
        assert net(torch.randn(1, 3, *hw)).shape == (1, 1000)
    _check_signatures_match(arch, hw)
    # analytic cost on the text-line shape agrees with the hooks
    assert count_module(net, hw) == profile(arch, hw)


# --------------------------------------------------------------------------------------------
# Grammar, round trips, signatures
# --------------------------------------------------------------------------------------------
NEW_ENTRIES = [n for n in zoo.names() if n.startswith(("squeezenet", "shufflenet_v1", "xception", "ppocr"))]


def test_new_entries_are_in_the_zoo_and_round_trip():
    assert len(NEW_ENTRIES) == 10
    for name in NEW_ENTRIES:
        arch = zoo.get(name)
        for back in (Arch.from_string(arch.to_string()), Arch.from_dict(arch.to_dict()),
                     Arch.from_yaml(arch.to_yaml()), Arch.from_json(arch.to_json())):
            assert back == arch and back.to_string() == arch.to_string()


def test_new_grammar_tokens():
    text = ("stem_i3_o16_k3_s2_re_nobn_valid-maxpool_i16_o16_k3_s2_ceil_re-conv_i16_o32_k3_s2x1_valid_hs"
            "-dwsep_i32_o32_k5_s1x2_se8h_hs-fire_i32_o64_m8_k3_s1_re-xception_i64_o64_m64_k3_s1_re_xreps=3"
            "-shufflev1_i64_o128_m32_k3_s2_g2_re-head_convcls_re_d0.5")
    a = Arch.from_string(text)
    assert a.to_string() == text
    assert (a.stem.bn, a.stem.padding) == (False, "valid")
    assert a.blocks[1].stride == (2, 1) and a.blocks[2].stride == (1, 2) and a.blocks[0].padding == "ceil"
    assert a.head.classifier == "conv"
    d = a.to_dict()
    assert d["blocks"][1]["stride"] == [2, 1] and d["stem"]["bn"] is False
    assert Arch.from_dict(d) == a and Arch.from_yaml(a.to_yaml()) == a and Arch.from_json(a.to_json()) == a
    # a square pair is stored as an int, so both spellings are one value
    assert BlockSpec("conv", 8, 8, stride=(2, 2)) == BlockSpec("conv", 8, 8, stride=2)
    assert BlockSpec("conv", 8, 8, stride=[2, 1]).stride == (2, 1)
    # the fields added for this family leave older dicts unchanged
    old = zoo.get("mobilenet_v2").to_dict()
    assert set(old["stem"]) == {"out_ch", "kernel", "stride", "act", "pool", "in_ch"}
    assert set(old["head"]) == {"last_ch", "hidden_ch", "act", "dropout", "hidden_bias"}
    assert Head(classifier_bias=False).to_string() == "head_clsnobias_re"
    _check_signatures_match(a, (40, 56))
    net = a.build()
    for res in (64, (41, 67)):
        assert count_module(net, res) == profile(a, res)


def test_signature_keys_carry_the_new_fields():
    keys = [k for k, _, _ in profile_layers(zoo.get("ppocr_mv1_enhance"), (32, 320))]
    assert keys[4] == "dwsep_i64_o128_k3_s2x1_hs@64x16x160"
    assert keys[-2] == "maxpool_i512_o512_k2_s2_valid_re@512x2x160"
    assert keys[-1] == "head_re@512x1x80_n1000"
    sq = signatures(zoo.get("squeezenet1_0"), 224)
    assert sq[0].key == "stem_i3_o96_k7_s2_re_nobn_valid@3x224x224" and sq[1].key.startswith("maxpool_i96_o96_k3_s2_ceil_re@96x109x109")
    assert zoo.get("squeezenet1_0").head.dropout == 0.5 and sq[-1].key == "head_convcls_re@512x13x13_n1000"
    xs = signatures(zoo.get("xception"), 299)
    assert len(xs) == 17 and len({s.key for s in xs}) == 10  # the 8 middle blocks share one key


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the field and the allowed values
# --------------------------------------------------------------------------------------------
BAD = [
    (dict(type="shufflev1", in_ch=240, out_ch=240, mid_ch=60, groups=7),
     r"block\(shufflev1\)\.groups: got 7, which does not divide in_ch 240; allowed: a common divisor of in_ch, mid_ch, out_ch"),
    (dict(type="shufflev1", in_ch=24, out_ch=240, mid_ch=62, stride=2, groups=3, opts=(("gpw1", 1),)),
     r"block\(shufflev1\)\.groups: got 3, which does not divide mid_ch 62; allowed: a common divisor of mid_ch, out_ch - in_ch"),
    (dict(type="shufflev1", in_ch=24, out_ch=240, mid_ch=60, groups=3),
     r"block\(shufflev1\)\.in_ch: got 24 at stride 1; allowed: 240"),
    (dict(type="shufflev1", in_ch=240, out_ch=240, mid_ch=60, stride=2),
     r"block\(shufflev1\)\.out_ch: got 240 at stride 2; allowed: more than in_ch 240"),
    (dict(type="fire", in_ch=64, out_ch=127, mid_ch=16), r"block\(fire\)\.out_ch: got 127; allowed: an even number"),
    (dict(type="fire", in_ch=64, out_ch=128, mid_ch=16, stride=2), r"block\(fire\)\.stride: got 2; allowed: 1"),
    (dict(type="fire", in_ch=64, out_ch=128), r"block\(fire\)\.mid_ch: got 0; allowed: a positive integer"),
    (dict(type="maxpool", in_ch=64, out_ch=128), r"block\(maxpool\)\.out_ch: got 128; allowed: 64"),
    (dict(type="maxpool", in_ch=64, out_ch=64, act="hswish"), r"block\(maxpool\)\.act: got 'hswish'; allowed: relu"),
    (dict(type="xception", in_ch=64, out_ch=128, mid_ch=128, opts=(("reps", 5),)),
     r"block\(xception\)\.opts\.reps: got 5; allowed: 1, 2, 3, 4"),
    (dict(type="xception", in_ch=64, out_ch=128, mid_ch=64, opts=(("reps", 1),)),
     r"block\(xception\)\.mid_ch: got 64; allowed: 128 \(== out_ch with opts reps=1\)"),
    (dict(type="conv", in_ch=16, out_ch=24, groups=5), r"block\(conv\)\.groups: got 5, which does not divide in_ch 16"),
    (dict(type="conv", in_ch=16, out_ch=24, padding="ceil"), r"block\(conv\)\.padding: got 'ceil'; allowed: same, valid"),
    (dict(type="mbconv", in_ch=16, out_ch=16, mid_ch=32, padding="valid"), r"block\(mbconv\)\.padding: got 'valid'; allowed: same"),
    (dict(type="shufflev2", in_ch=24, out_ch=48, mid_ch=24, stride=(2, 1)),
     r"block\(shufflev2\)\.stride: got \(2, 1\); allowed: 1, 2 \(an \(sH, sW\) pair only for conv, dwsep, maxpool, mbconv\)"),
    (dict(type="conv", in_ch=16, out_ch=24, stride=(3, 1)), r"block\(conv\)\.stride: got \(3, 1\); allowed: 1, 2 or a pair"),
    (dict(type="conv", in_ch=16, out_ch=24, padding="full"), r"block\(conv\)\.padding: got 'full'; allowed: same, valid, ceil"),
]


@pytest.mark.parametrize("kw,message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_block_specs(kw, message):
    with pytest.raises(ArchError, match=message) as exc:
        check_block(BlockSpec(**kw))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("make,message", [
    (lambda: Stem(16, padding="ceil"), r"stem\.padding: got 'ceil'; allowed: same, valid"),
    (lambda: Stem(16, bn="no"), r"stem\.bn: got 'no'; allowed: true, false"),
    (lambda: Stem(16, stride=(2, 1)), r"stem\.stride: got \(2, 1\); allowed: 1, 2"),
    (lambda: Head(classifier="mlp"), r"head\.classifier: got 'mlp'; allowed: linear, conv"),
    (lambda: Head(hidden_ch=64, classifier="conv"), r"head\.hidden_ch: got 64 with classifier conv; allowed: 0"),
    (lambda: Arch.from_string("stem_i3_o16_k3_s2_re-conv_i16_o16_k3_s3x1_re-head_re"),
     r"block\(conv\)\.stride: got \(3, 1\); allowed: 1, 2 or a pair"),
    (lambda: Arch.from_string("stem_i3_o16_k3_s2_re-conv_i16_o16_k3_s1_re-head_re_valid"),
     r"arch string head: field 'padding' does not apply here"),
])
def test_bad_stem_head_and_strings(make, message):
    with pytest.raises(ArchError, match=message) as exc:
        make()
    assert "\n" not in str(exc.value)
