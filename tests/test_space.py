"""Search spaces as data: zoo fixed points, code lists, sampling/variation, size, bad input."""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch

from search_space import zoo
from search_space.arch import Arch
from search_space.errors import SpaceError
from search_space.importers import from_net_config
from search_space.space import load_space, space_from_dict, space_names

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SPACES = ["mobile-unified", "mnasnet", "mobilenetv3", "proxylessnas", "ofa-mbv3", "shufflenetv2"]

# the later seed families (new block types, stem/head fields, (2, 1) strides): mobile-unified holds them too
NEW_FAMILIES = {"squeezenet1_0", "squeezenet1_1", "shufflenet_v1_g1", "shufflenet_v1_g2", "shufflenet_v1_g3",
                "shufflenet_v1_g4", "shufflenet_v1_g8", "xception", "ppocr_mv3_small_x035", "ppocr_mv1_enhance"}
# what each space must claim (the brief); mobile-unified claims every zoo entry
CLAIMS = {
    "mnasnet": {("mnasnet_a1", 1.0), ("mnasnet_b1", 1.0)},
    "mobilenetv3": {("mobilenet_v3_large", 1.0), ("mobilenet_v3_small", 1.0)},
    "proxylessnas": {("proxylessnas_mobile", 1.0)},
    "shufflenetv2": {("shufflenet_v2", w) for w in (0.5, 1.0, 1.5, 2.0)},
}


@pytest.fixture(scope="module")
def spaces():
    return {n: load_space(n) for n in SPACES}


def test_space_names():
    assert space_names() == SPACES


@pytest.mark.parametrize("name", SPACES)
def test_zoo_entries_are_fixed_points(spaces, name):
    space = spaces[name]
    claimed = set(space.zoo_entries())
    if name == "mobile-unified":
        assert claimed == set(zoo.entries()) and len(claimed) == 46
        assert NEW_FAMILIES <= {n for n, _ in claimed}
    elif name == "ofa-mbv3":
        assert claimed == set()  # its fixed points are OFA's specialized nets (next test)
    else:
        assert CLAIMS[name] <= claimed
    for n, w in claimed:
        arch = zoo.get(n, w)
        assert space.contains(arch), (n, w, space.explain(arch))
        codes = space.encode(arch)
        assert space.decode(codes) == arch
        assert space.encode(space.decode(codes)) == codes


def _configs(pattern: str) -> list[Path]:
    files = sorted(DATA.glob(pattern))
    assert files, f"no {pattern} under {DATA}"
    return files


def test_ofa_specialized_nets_are_points_of_ofa_mbv3(spaces):
    space = spaces["ofa-mbv3"]
    mbv3 = [p for p in _configs("ofa_specialized/*.net.config") if '"MobileNetV3"' in p.read_text()]
    assert len(mbv3) == 15  # LG-G8 x4, note8 x4, s7edge x4, flops-* x3 (width 1.2)
    for p in mbv3:
        arch = from_net_config(p)
        assert space.contains(arch), (p.name, space.explain(arch))
        assert space.decode(space.encode(arch)) == arch
    # OFA's ProxylessNAS-based specialized nets (40-channel stem) are not points of it
    other = [p for p in _configs("ofa_specialized/*.net.config") if p not in mbv3][0]
    assert "stem.out_ch: got 40; allowed: 16, 24" in space.explain(from_net_config(other))


def test_proxylessnas_searched_nets_are_points(spaces):
    space = spaces["proxylessnas"]
    for p in _configs("proxylessnas/*.config"):
        arch = from_net_config(p)
        assert space.decode(space.encode(arch)) == arch, p.name
    assert space.encode(from_net_config(DATA / "proxylessnas" / "proxyless_mobile.config")) == \
        space.encode(zoo.get("proxylessnas_mobile"))


def test_spaces_hold_only_their_own_zoo_points(spaces):
    assert not spaces["mnasnet"].contains(zoo.get("mobilenet_v2"))
    assert not spaces["shufflenetv2"].contains(zoo.get("mobilenet_v3_large"))
    assert not spaces["mobilenetv3"].contains(zoo.get("mnasnet_a1"))
    assert spaces["ofa-mbv3"].explain(zoo.get("shufflenet_v2")) == "stem.act: got 'relu'; allowed: hswish"


@pytest.mark.parametrize("name", SPACES)
def test_codes_sample_mutate_crossover(spaces, name):
    space = spaces[name]
    card = space.cardinalities()
    assert len(card) == len(space.decision_names()) and all(c > 1 for c in card)
    rng = random.Random(7)
    archs = [space.sample(rng) for _ in range(30)]
    assert len({a.to_string() for a in archs}) > 25  # samples differ
    for a in archs[:15]:
        codes = space.encode(a)
        assert len(codes) == len(card)
        assert all(isinstance(c, int) and 0 <= c < k for c, k in zip(codes, card))
        assert space.decode(codes) == a
        assert Arch.from_string(a.to_string()) == a
    for a, b in zip(archs[:10], archs[10:20]):
        m = space.mutate(a, rng)
        assert m != a and space.contains(m)
        one = space.mutate(a, rng, n=1)  # one decision changed (others may be re-canonicalised)
        assert one != a and space.contains(one)
        c = space.crossover(a, b, rng)
        assert space.contains(c)
        ca, cb, cc = space.encode(a), space.encode(b), space.encode(c)
        # every decision comes from a parent except those canonicalised (skipped slots -> 0)
        assert sum(z not in (x, y) for x, y, z in zip(ca, cb, cc)) <= sum(z == 0 for z in cc)


@pytest.mark.parametrize("name", SPACES)
def test_samples_build_and_run(spaces, name):
    torch.set_num_threads(1)
    space = spaces[name]
    rng = random.Random(0)
    x = torch.randn(1, 3, 64, 64)
    x32 = torch.randn(1, 3, 32, 32)
    # 100 x 5 spaces + 60 mobile-unified nets (up to 30M+ parameters)
    n = 100 if name != "mobile-unified" else 60
    seen = set()
    with torch.no_grad():
        for i in range(n):
            arch = space.sample(rng)
            seen.add(arch.to_string())
            net = arch.build(num_classes=10).eval()
            y = net(x)
            assert y.shape == (1, 10) and torch.isfinite(y).all()
            if name == "mobile-unified":  # min_input 32: no layer shrinks a 32x32 input to nothing
                assert space.fits_input(arch, 32)
                if i % 3 == 0:
                    assert net(x32).shape == (1, 10)
    assert len(seen) == n


def test_min_input_keeps_samples_but_not_membership(spaces):
    space = spaces["mobile-unified"]
    assert space.min_input == 32
    ocr = zoo.get("ppocr_mv3_small_x035")  # four (2, 1) strides and a 2x2 pool: 64 pixels high at least
    assert space.contains(ocr) and not space.fits_input(ocr) and space.fits_input(ocr, 64)
    rng = random.Random(3)
    kinds = set()
    for _ in range(40):
        a = space.sample(rng)
        assert space.fits_input(a) and space.fits_input(space.mutate(a, rng))
        kinds |= {b.type for b in a.blocks} | {str(b.stride) for b in a.blocks}
    assert {"maxpool", "fire", "xception", "(2, 1)"} <= kinds, kinds


def test_size_matches_brute_force_on_a_tiny_space():
    """Rounding duplicates (expand 2 vs 9/4 on 8 channels), a field meaningless for a block type
    (expand of dwsep, pw of an expanding mbconv), a first-layer override, a skippable stage."""
    tiny = space_from_dict({
        "name": "tiny", "mid_rule": "divisible", "se_rule": "mnasnet",
        "stem": {"out_ch": 8},
        "stages": [
            {"depth": [1, 2], "stride": 1, "out_ch": [8, 16], "type": ["mbconv", "dwsep"], "se": [False, True],
             "kernel": [3, 5], "opts": [{}, {"pw": 1}], "first": {"kernel": 3}, "layer": {"expand": [1, 2, "9/4"]}},
            {"depth": [0, 1, 2], "stride": 2, "out_ch": [24], "type": ["mbconv", "sandglass"],
             "layer": {"expand": [2, 6]}},
        ],
        "head": {"last_ch": 32},
    })
    card = tiny.cardinalities()
    assert card == [2, 2, 2, 2, 2, 2, 3, 3, 3, 2, 2, 2]
    distinct = {tiny.decode(list(c)).to_string() for c in itertools.product(*(range(k) for k in card))}
    assert tiny.size() == len(distinct) == 1820  # dwsep takes SE (on its depthwise output)


@pytest.mark.parametrize("name", [n for n in SPACES if n != "mobile-unified"])
def test_size_is_exact_int(spaces, name):
    space = spaces[name]
    if name == "mnasnet":  # stage 4 (stride 1) may continue stage 3 at the same width: several splits
        assert not space.split_is_unique()
        with pytest.raises(SpaceError) as e:
            space.size()
        assert "upper_bound=True" in _one_line(e) and "stages[3]" in str(e.value)
        size = space.size(upper_bound=True)
    else:
        assert space.split_is_unique()
        size = space.size()
    assert isinstance(size, int) and size > 1
    assert size <= _product(space.cardinalities())


def test_mobile_unified_size_is_exact(spaces):
    space = spaces["mobile-unified"]
    assert space.split == "strict" and space.split_is_unique()
    size = space.size()  # about 8 s of CPU
    assert isinstance(size, int) and 10 ** 100 < size < _product(space.cardinalities())


def _distinct(space) -> dict[str, Arch]:
    out = {}
    for c in itertools.product(*(range(k) for k in space.cardinalities())):
        try:
            a = space.decode(list(c))
        except SpaceError:
            continue
        out[a.to_string()] = a
    return out


# split: strict on small spaces where stages can continue one another or be skipped for a later one
STRICT_POOLS = {
    "name": "strict-pools", "split": "strict", "mid_rule": "expand",
    "stem": {"out_ch": 8},
    "stages": [
        {"depth": [0, 1, 2], "stride": 1, "out_ch": [8, 16], "type": ["mbconv", "dwsep"], "expand": [1, 2]},
        {"depth": [0, 1], "stride": 1, "out_ch": 16, "type": ["mbconv", "fire"], "expand": [1, 4]},
        {"depth": [0, 1], "stride": 2, "out_ch": "keep", "type": "maxpool", "padding": ["ceil", "valid"]},
        {"depth": [0, 1, 2], "stride": [2, [2, 1]], "out_ch": 24, "type": ["mbconv", "dwsep"]},
    ],
    "head": {"hidden_ch": [0, 16], "classifier": ["linear", "conv"]},  # conv + hidden is no head
}
STRICT_SKIPS = {
    "name": "strict-skips", "split": "strict", "mid_rule": "expand",
    "stem": {"out_ch": [16, 24]},
    "stages": [
        {"depth": [0, 1, 2], "stride": 2, "out_ch": [16, 24], "type": ["mbconv", "dwsep"], "kernel": [3, 5]},
        {"depth": [0, 1], "stride": 1, "out_ch": [16, 24], "type": "mbconv", "expand": [1, 3]},
        {"depth": [0, 1, 2], "stride": 2, "out_ch": 24, "type": ["mbconv", "dwsep"], "first": {"kernel": 5},
         "layer": {"expand": [1, 3]}},
    ],
    "head": {},
}


@pytest.mark.parametrize("data,n_strict,n_free", [(STRICT_POOLS, 4452, 5100), (STRICT_SKIPS, 1224, 1484)])
def test_strict_size_matches_brute_force(data, n_strict, n_free):
    """split: strict: every arch has one code list up to duplicate options, so size() counts archs;
    the same stages with split: free hold more archs, some with several splits (an upper bound)."""
    strict = space_from_dict(data)
    archs = _distinct(strict)
    assert strict.split_is_unique() and strict.size() == len(archs) == n_strict
    for a in archs.values():
        assert strict.decode(strict.encode(a)) == a
    free = space_from_dict({**data, "split": "free"})
    free_archs = _distinct(free)
    assert len(free_archs) == n_free and set(archs) < set(free_archs)
    assert not free.split_is_unique() and free.size(upper_bound=True) > n_free
    with pytest.raises(SpaceError):
        free.size()
    # an arch of the free space outside the strict one: stage 1 continues stage 0 (same width,
    # type and stride 1)
    outside = [a for k, a in free_archs.items() if k not in archs]
    msgs = {strict.explain(a) for a in outside}
    assert all(m.startswith("arch.blocks") and "\n" not in m for m in msgs)
    assert any("continuation of the previous stage" in m for m in msgs) or any("skipped" in m for m in msgs)


def test_strict_decode_rejects_non_canonical_splits():
    space = space_from_dict(STRICT_SKIPS)
    names = space.decision_names()
    assert names[:3] == ["stem.out_ch", "stages[0].depth", "stages[0].out_ch"]
    # stage 0 skipped, stage 2 starts with a stride-2 mbconv to 24 that stage 0 offers
    codes = [0] * len(names)
    codes[names.index("stages[2].depth")] = 1
    with pytest.raises(SpaceError) as e:
        space.decode(codes)
    assert "skipped stages[0]" in _one_line(e) and "split: strict" in str(e.value)
    # stage 1 (stride 1, 16 -> 16, mbconv) right after stage 0 at 16 channels: a continuation
    codes = [0] * len(names)
    codes[names.index("stages[0].depth")] = 1
    codes[names.index("stages[1].depth")] = 1
    with pytest.raises(SpaceError) as e:
        space.decode(codes)
    assert "continuation of the previous stage" in _one_line(e)
    codes[names.index("stages[0].depth")] = 2  # the same layers as stage 0 alone: its code list
    arch = space.decode([c if n != "stages[1].depth" else 0 for n, c in zip(names, codes)])
    assert space.encode(arch)[names.index("stages[0].depth")] == 2


def _product(xs):
    p = 1
    for x in xs:
        p *= x
    return p


def test_known_sizes(spaces):
    # shufflenetv2: widths 4^3 (x) depths 5*7*5 (x) kernel 3 per unit, head 2:
    # sum over depths of 3^(d1+d2+d3) * 4^3 * 2
    d1, d2, d3 = range(2, 7), range(4, 11), range(2, 7)
    expected = 4 ** 3 * 2 * sum(3 ** (a + b + c) for a in d1 for b in d2 for c in d3)
    assert spaces["shufflenetv2"].size() == expected
    # ofa-mbv3 at width 1.0 x 1.2 choices: per stage sum_d 9^d, 5 stages; all other choices binary
    per_stage = sum(9 ** d for d in (2, 3, 4))
    assert spaces["ofa-mbv3"].size() == 2 ** 2 * 2 ** 5 * per_stage ** 5 * 2 ** 3


# --------------------------------------------------------------------------------------------
# Bad input: one-line SpaceErrors naming the field and the allowed values
# --------------------------------------------------------------------------------------------
def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_space_name_lists_known():
    with pytest.raises(SpaceError) as e:
        load_space("mobilenet-v9")
    msg = _one_line(e)
    assert "mobilenet-v9" in msg and all(n in msg for n in SPACES)


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nstages: [\n  - {depth: 1\n")
    with pytest.raises(SpaceError) as e:
        load_space(p)
    assert "malformed YAML" in _one_line(e) and "line" in str(e.value)


def test_unknown_fields_name_the_field_and_allowed_keys(tmp_path):
    base = (Path(__file__).resolve().parents[1] / "search_space" / "spaces" / "ofa-mbv3.yaml").read_text()
    p = tmp_path / "s.yaml"
    p.write_text(base.replace("stem: {out_ch", "stem: {colour: red, out_ch"))
    with pytest.raises(SpaceError) as e:
        load_space(p)
    msg = _one_line(e)
    assert "stem.colour" in msg and "out_ch, kernel, stride, act, pool" in msg
    p.write_text(base.replace("expand: [3, 4, 6]}}", "expnd: [3, 4, 6]}}", 1))
    with pytest.raises(SpaceError) as e:
        load_space(p)
    assert "stages[1].layer.expnd" in _one_line(e) and "kernel, expand, mid, se" in str(e.value)
    p.write_text(base + "budget: 3\n")
    with pytest.raises(SpaceError) as e:
        load_space(p)
    assert "budget" in _one_line(e) and "stages" in str(e.value)


def test_bad_new_fields_in_yaml():
    def make(top=None, **stage):
        return {"stem": {"out_ch": 16}, "stages": [{"depth": 1, "out_ch": 16, **stage}], "head": {}, **(top or {})}

    for top, stage, where, allowed_text in [
            ({"split": "exact"}, {}, "split", "free, strict"),
            ({"min_input": -1}, {}, "min_input", "integer >= 0"),
            ({}, {"stride": [[2, 3]]}, "stages[0].stride", "[2, 1]"),
            ({}, {"kernel": [2, 3]}, "stages[0].kernel", "maxpool or conv"),
            ({}, {"type": ["maxpool", "mbconv"]}, "stages[0].type", "maxpool alone"),
            ({}, {"type": "maxpool", "out_ch": "keep", "act": ["relu", "hswish"]}, "stages[0].act", "relu alone"),
            ({}, {"out_ch": "kept"}, "stages[0].out_ch", "keep"),
            ({}, {"padding": "reflect"}, "stages[0].padding", "same, valid, ceil"),
            ({"split": "strict"}, {"type": "mbconv", "first": {"type": "dwsep"}}, "stages[0].first.type", "split"),
    ]:
        with pytest.raises(SpaceError) as e:
            space_from_dict(make(top, **stage))
        assert _one_line(e).startswith(where) and allowed_text in str(e.value), (top, stage, str(e.value))
    with pytest.raises(SpaceError) as e:
        space_from_dict({"stem": {"out_ch": 16, "padding": "full"}, "stages": [{"depth": 1, "out_ch": 16}], "head": {}})
    assert _one_line(e).startswith("stem.padding") and "same, valid" in str(e.value)


def test_bad_values_in_yaml():
    def make(**stage):
        return {"stem": {"out_ch": 16}, "stages": [{"depth": 1, "out_ch": 16, **stage}], "head": {}}

    for stage, where in [({"kernel": [3, 4]}, "stages[0].kernel"), ({"act": "gelu"}, "stages[0].act"),
                         ({"type": "xception9"}, "stages[0].type"), ({"stride": 3}, "stages[0].stride"),
                         ({"se": "v9"}, "stages[0].se"), ({"expand": [3, "x"]}, "stages[0].expand"),
                         ({"kernel": []}, "stages[0].kernel")]:
        with pytest.raises(SpaceError) as e:
            space_from_dict(make(**stage))
        assert _one_line(e).startswith(where) and "allowed" in str(e.value), (stage, str(e.value))


def test_encode_outside_names_the_layer_field_and_allowed(spaces):
    space = spaces["mobilenetv3"]
    large = zoo.get("mobilenet_v3_large")
    bad = large.replace_block(4, kernel=9)
    with pytest.raises(SpaceError) as e:
        space.encode(bad)
    assert _one_line(e) == "arch.blocks[4].kernel: got 9; allowed: 3, 5, 7 (stages[2].kernel layer 1)"
    assert not space.contains(bad) and space.explain(bad) == str(e.value)
    # a shared (per-stage) decision: MnasNet's SE
    mn = spaces["mnasnet"]
    a1 = zoo.get("mnasnet_a1")
    with pytest.raises(SpaceError) as e:
        mn.encode(a1.replace_block(3, act="hswish"))
    assert _one_line(e).startswith("arch.blocks[3].act: got 'hswish'; allowed: relu")
    with pytest.raises(SpaceError) as e:
        spaces["shufflenetv2"].encode(zoo.get("shufflenet_v2", 1.0).replace_block(1, kernel=9))
    assert "arch.blocks[1].kernel: got 9; allowed: 3, 5, 7" in _one_line(e)
    with pytest.raises(SpaceError) as e:
        space.encode("stem_i3_o16")
    assert "arch: got 'str'; allowed: an Arch" in _one_line(e)


def test_decode_bad_codes(spaces):
    space = spaces["mnasnet"]
    n = len(space.cardinalities())
    with pytest.raises(SpaceError) as e:
        space.decode([0] * (n - 1))
    assert f"got {n - 1} values; allowed: a list of {n} integers" in _one_line(e)
    codes = [0] * n
    codes[2] = space.cardinalities()[2]
    with pytest.raises(SpaceError) as e:
        space.decode(codes)
    msg = _one_line(e)
    assert msg.startswith(f"codes[2] ({space.decision_names()[2]}): got {codes[2]}; allowed: 0..")
    with pytest.raises(SpaceError):
        space.decode([0.5] + [0] * (n - 1))


def test_sample_draws_stage_by_stage_over_the_whole_space():
    """Space.sample draws each stage among its valid choices (no whole-arch rejection): every draw is
    an arch of the space, the draws are deterministic per rng, and they reach nearly all of the 1,224
    archs of a strict space in 10,000 draws (uniform over the code lists would reach about 1,220)."""
    space = space_from_dict(STRICT_SKIPS)
    archs = _distinct(space)
    calls = {"decode": 0}
    real = space.decode

    def counting(codes):
        calls["decode"] += 1
        return real(codes)

    space.decode = counting
    rng = random.Random(0)
    seen = set()
    for _ in range(10000):
        a = space.sample(rng)
        assert a.to_string() in archs
        seen.add(a.to_string())
    assert calls["decode"] == 0                       # no code list decoded and thrown away
    assert len(seen) >= 0.9 * len(archs)
    a, b = (space.sample(random.Random(11)) for _ in range(2))
    assert a == b
    mu = load_space("mobile-unified")
    r1, r2 = random.Random(3), random.Random(3)
    for _ in range(20):
        x, y = mu.sample(r1), mu.sample(r2)
        assert x == y and mu.fits_input(x) and mu.decode(mu.encode(x)) == x
