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

# the zoo names the brief lists (later seed families with new block types are not in these spaces)
ORIGINAL_ZOO = {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1",
                "mnasnet_b1", "mnasnet_small", "proxylessnas_mobile", "fbnet_c", "shufflenet_v2", "mobilenext"}
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
        assert claimed == {(n, w) for n, w in zoo.entries() if n in ORIGINAL_ZOO} and len(claimed) == 36
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
def test_200_samples_build_and_run(spaces, name):
    torch.set_num_threads(1)
    space = spaces[name]
    rng = random.Random(0)
    x = torch.randn(1, 3, 64, 64)
    # 200 x 5 spaces + 60 mobile-unified nets (up to 30M+ parameters): about 55 s of CPU in all
    n = 200 if name != "mobile-unified" else 60
    seen = set()
    with torch.no_grad():
        for _ in range(n):
            arch = space.sample(rng)
            seen.add(arch.to_string())
            net = arch.build(num_classes=10).eval()
            y = net(x)
            assert y.shape == (1, 10) and torch.isfinite(y).all()
    assert len(seen) == n


def test_size_matches_brute_force_on_a_tiny_space():
    """Rounding duplicates (expand 2 vs 9/4 on 8 channels), a field meaningless for a block type
    (SE of dwsep, pw of an expanding mbconv), a first-layer override, a skippable stage."""
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
    assert tiny.size() == len(distinct) == 1742


@pytest.mark.parametrize("name", [n for n in SPACES if n != "mobile-unified"])
def test_size_is_exact_int(spaces, name):
    size = spaces[name].size()
    assert isinstance(size, int) and size > 1
    assert size <= _product(spaces[name].cardinalities())


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
