"""The Arch value: string grammar, dict/YAML/JSON round trips, signatures, validation messages."""
from __future__ import annotations

import dataclasses

import pytest

from search_space.arch import Arch, BlockSpec, Head, Stem, conv_out, make_divisible, signatures
from search_space.errors import ArchError

TEXT = ("stem_i3_o16_k3_s2_hs-mbconv_i16_o16_m16_k3_s2_se8h_re-mbconv_i16_o24_m72_k3_s2_re"
        "-mbconv_i24_o24_m88_k5_s1_g2_se24s_hs_skip-sandglass_i24_o48_m16_k3_s2_r6_xdw1=0"
        "-shufflev2_i48_o48_m24_k3_s1_re-dwsep_i48_o64_k3_s1_sw-head_l576_h1024_hs_d0.2")


def _arch() -> Arch:
    return Arch.from_string(TEXT)


def test_make_divisible_matches_the_tf_rule():
    assert make_divisible(32 * 0.35) == 16      # 8 would lose more than 10%
    assert make_divisible(18) == 24 and make_divisible(16.2) == 16
    assert make_divisible(88.08) == 88 and make_divisible(16 * 4.5) == 72 and make_divisible(108) == 112
    assert make_divisible(1280 * 1.4) == 1792 and make_divisible(3, 8) == 8
    assert make_divisible(54, 16) == 64 and make_divisible(26, 16) == 32


def test_conv_out():
    assert conv_out(224, 3, 2) == 112 and conv_out(7, 3, 2) == 4 and conv_out(15, 5, 1) == 15 and conv_out(1, 3, 2) == 1


def test_parse_fields():
    a = _arch()
    assert a.stem == Stem(out_ch=16, kernel=3, stride=2, act="hswish")
    b = a.blocks[2]
    assert (b.type, b.in_ch, b.out_ch, b.mid_ch, b.kernel, b.groups, b.se_ch, b.se_gate, b.act, b.residual) == (
        "mbconv", 24, 24, 88, 5, 2, 24, "sigmoid", "hswish", True)
    assert a.blocks[0].se_gate == "hsigmoid" and a.blocks[0].se_ch == 8
    assert a.blocks[3].opts == (("dw1", 0),) and a.blocks[3].opt("dw1", 1) == 0 and a.blocks[3].opt("dw2", 1) == 1
    assert a.head == Head(last_ch=576, hidden_ch=1024, act="hswish", dropout=0.2)
    assert a.out_ch == 64 and a.num_features == 1024


def test_string_round_trip_is_exact():
    a = _arch()
    assert a.to_string() == TEXT
    assert str(a) == TEXT
    assert Arch.from_string(a.to_string()) == a
    assert hash(Arch.from_string(TEXT)) == hash(a)


def test_dict_yaml_json_round_trip(tmp_path):
    a = _arch()
    d = a.to_dict()
    assert d["arch"] == TEXT and d["version"] == 1
    assert d["blocks"][3]["opts"] == {"dw1": 0}
    assert "se_gate" not in d["blocks"][1]        # defaults left out
    assert Arch.from_dict(d) == a
    assert Arch.from_yaml(a.to_yaml()) == a
    assert Arch.from_json(a.to_json()) == a
    assert Arch.from_dict({"arch": TEXT}) == a      # the string alone is enough
    for name in ("a.yaml", "a.json"):
        a.save(tmp_path / name)
        assert Arch.load(tmp_path / name) == a
    (tmp_path / "a.txt").write_text(TEXT + "\n")
    assert Arch.load(tmp_path / "a.txt") == a


def test_frozen_and_replace_block():
    a = _arch()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.blocks[0].kernel = 5
    b = a.replace_block(1, kernel=7)
    assert b.blocks[1].kernel == 7 and a.blocks[1].kernel == 3 and b != a
    assert Arch.from_string(b.to_string()) == b


def test_se_gate_is_canonical_without_se():
    b = BlockSpec("mbconv", 16, 16, mid_ch=32, se_gate="sigmoid")
    assert b.se_gate == "hsigmoid" and b == BlockSpec("mbconv", 16, 16, mid_ch=32)


def test_signatures_shapes_and_keys():
    a = _arch()
    sigs = signatures(a, 224)
    assert [s.kind for s in sigs] == ["stem", "mbconv", "mbconv", "mbconv", "sandglass", "shufflev2", "dwsep", "head"]
    assert [(s.h, s.w) for s in sigs] == [(224, 224), (112, 112), (56, 56), (28, 28), (28, 28), (14, 14), (14, 14), (14, 14)]
    assert sigs[1].key == "mbconv_i16_o16_m16_k3_s2_se8h_re@16x112x112"
    assert a.head.dropout == 0.2 and sigs[-1].key == "head_l576_h1024_hs@64x14x14_n1000"  # dropout: no cost
    assert signatures(a, 224, num_classes=10)[-1].key.endswith("_n10")
    rect = signatures(a, (160, 96))
    assert (rect[1].h, rect[1].w) == (80, 48) and rect[-1].out_hw == (1, 1)


@pytest.mark.parametrize("text,message", [
    ("", r"arch string: empty"),
    ("mbconv_i16_o16_m32-head_re", r"must start with 'stem_' and end with 'head_'"),
    ("stem_i3_o16_k3_s2_re-mbconv_i16_o16_m32_k3_s1_re", r"must start with 'stem_' and end with 'head_'"),
    ("stem_i3_o16_k3_s2_hs-head_l576", r"^arch string: has no blocks; allowed: stem_\.\.\.-<block>-\.\.\.-head_\.\.\. "
                                       r"\(at least one block\)$"),
    ("stem_i3_o16_k3_s2_re-mbconv_o16_m32_k3_s1_re-head_re", r"arch string block 0: missing in_ch \(i<int>\)"),
    ("stem_i3_o16_k3_s2_re-mbconv_i24_o16_m32_k3_s1_re-head_re", r"arch\.blocks\[0\]\.in_ch: got 24; allowed: 16"),
    ("stem_i3_o16_k3_s2_gelu-mbconv_i16_o16_m32_k3_s1_re-head_re", r"arch string stem: cannot parse field 'gelu'"),
    ("stem_i3_o16_k3_s3_re-mbconv_i16_o16_m32_k3_s1_re-head_re", r"stem\.stride: got 3; allowed: 1, 2"),
    ("stem_i3_o16_k3_s2_re-mbconv_i16_o16_m32_k3_s1_re-head_re_d1.5", r"head\.dropout: got 1.5; allowed: a number in \[0, 1\)"),
    ("stem_i3_o16_k3_s2_re-mbconv_i16_o16_m32_k3_s1_re-head_m8_re", r"arch string head: field 'm' does not apply here"),
    ("stem_i3_o0_k3_s2_re-mbconv_i0_o16_m32_k3_s1_re-head_re", r"stem\.out_ch: got 0; allowed: a positive integer"),
])
def test_bad_strings(text, message):
    with pytest.raises(ArchError, match=message) as exc:
        Arch.from_string(text)
    assert "\n" not in str(exc.value)


def test_bad_dicts():
    with pytest.raises(ArchError, match=r"arch: got 'list'; allowed: a mapping with stem, blocks, head"):
        Arch.from_dict([1, 2])
    with pytest.raises(ArchError, match=r"arch\.version: got 9; allowed: 1"):
        Arch.from_dict({"version": 9, "arch": TEXT})
    with pytest.raises(ArchError, match=r"arch: missing 'stem' or 'blocks'"):
        Arch.from_dict({"head": {}})
    d = _arch().to_dict()
    d["arch"] = d["arch"].replace("m72", "m96")
    with pytest.raises(ArchError, match=r"arch\.arch: the string does not match"):
        Arch.from_dict(d)
    with pytest.raises(ArchError, match=r"arch\.blocks: got 'dict'; allowed: a list of blocks"):
        Arch.from_dict({"stem": {"out_ch": 16}, "blocks": {}})
    with pytest.raises(ArchError, match=r"arch\.blocks: got no blocks"):
        Arch.from_dict({"stem": {"out_ch": 16}, "blocks": []})
    with pytest.raises(ArchError, match=r"malformed JSON at line 1"):
        Arch.from_json("{not json")
    with pytest.raises(ArchError, match=r"does not exist"):
        Arch.load("/nonexistent/arch.yaml")
    with pytest.raises(ArchError, match=r"block\(mbconv\)\.opts: got .*; allowed: sorted, unique names"):
        BlockSpec("mbconv", 16, 16, mid_ch=16, opts=(("pw", 1), ("dw", 0)))


def test_head_without_hidden_bias_round_trips_and_counts():
    from search_space.profile import profile

    a = Arch.from_string(TEXT.replace("head_l576_h1024_hs_d0.2", "head_l576_h1024_nobias_hs"))
    assert a.head.hidden_bias is False
    assert Arch.from_string(a.to_string()) == a and Arch.from_yaml(a.to_yaml()) == a
    with_bias = dataclasses.replace(a, head=dataclasses.replace(a.head, hidden_bias=True))
    assert profile(with_bias)["params"] - profile(a)["params"] == 1024
    assert sum(p.numel() for p in a.build().parameters()) == profile(a)["params"]
    with pytest.raises(ArchError, match="head.hidden_bias"):
        Head(last_ch=16, hidden_bias=False)


def test_signature_from_key_inverts_key():
    from search_space import zoo
    from search_space.arch import signature_from_key

    for name in zoo.names():
        for res in (224, (160, 96)):
            for s in signatures(zoo.get(name), res):
                t = signature_from_key(s.key)
                assert t.key == s.key and t.kind == s.kind and t.out_hw == s.out_hw
                assert t.spec == (s.spec if s.kind != "head" else dataclasses.replace(s.spec, dropout=0.0))
    for bad, msg in (("mbconv_i16_o16_k3_s1", "allowed: <layer token>@"), ("mbconv_i16_o16@16x8", "shape"),
                     ("head_re@64x7x7", "a head key ends in _n<classes>"), ("mbconv_i16_o16_q3@16x8x8", "field .q. does not apply here")):
        with pytest.raises(ArchError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            signature_from_key(bad)


def test_block_opts_given_as_a_list_of_pairs_is_the_same_spec():
    from search_space.arch import BlockSpec

    a = BlockSpec("shufflev1", 24, 48, 12, opts=[("g", 2)])
    b = BlockSpec("shufflev1", 24, 48, 12, opts=(("g", 2),))
    assert a == b and hash(a) == hash(b) and a.opts == (("g", 2),) and a.opt("g") == 2
