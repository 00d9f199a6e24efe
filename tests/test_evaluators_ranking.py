"""benchmarks/evaluators_ranking.py: the arch samplers, the rank correlations and the option checks."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import evaluators_ranking as er  # noqa: E402

from search_space.profile import profile  # noqa: E402
from search_space.space import load_space  # noqa: E402
from searchers.supernet import SCOPE_CAPS, scope_space, within_caps  # noqa: E402


@pytest.fixture(scope="module")
def space():
    return load_space("mobile-unified")


def log_macs(archs):
    return [math.log(profile(a, 32, 10)["macs"]) for a in archs]


def test_stratified_macs_sample_is_deterministic_distinct_in_scope_and_spread(space):
    """The session-4 sample: 20 distinct archs of the supernet's scope, the same on every call, in
    ascending MACs at 32x32, one per stratum of the pool's log-MACs range (so they span it), and
    spread far wider than 20 uniform draws (the sessions 1-3 sample)."""
    archs = er.sample_archs(space, 20, 1, method="stratified-macs")
    again = er.sample_archs(space, 20, 1, method="stratified-macs")
    assert [a.to_string() for a in archs] == [a.to_string() for a in again]
    assert len({a.to_string() for a in archs}) == 20
    scope = scope_space("mobile-unified/mbconv")
    caps = SCOPE_CAPS["mobile-unified/mbconv"]
    for a in archs:
        assert scope.explain(a) == ""
        assert space.contains(a)
        assert within_caps(a, caps["max_channels"], caps["max_macs"])
    lm = log_macs(archs)
    assert lm == sorted(lm)
    # the pool the strata cut: the same 2,000 draws of the scope
    import random

    rng = random.Random(1)
    pool = log_macs(scope.sample(rng) for _ in range(er.SAMPLE_POOL))
    lo, hi = min(pool), max(pool)
    width = (hi - lo) / 20
    assert lo <= lm[0] <= lo + width and hi - width <= lm[-1] <= hi
    # each stratum's pick lies near its centre: no two neighbours more than two strata apart
    assert max(b - a for a, b in zip(lm, lm[1:])) <= 2 * width
    # the pool spans a factor of 4.2 in MACs at 32x32 (2.6-11.1 MMACs); the sample a factor of 4.1, the
    # uniform sample of seed 0 (the sessions 1-3 ground truth) a factor of 2.0 (3.9-7.9 MMACs)
    assert math.exp(hi - lo) > 4 and math.exp(lm[-1] - lm[0]) > 4
    uni = log_macs(er.sample_archs(space, 20, 0, method="uniform"))
    assert (lm[-1] - lm[0]) > 1.5 * (max(uni) - min(uni))
    # another seed, another sample
    other = er.sample_archs(space, 20, 2, method="stratified-macs")
    assert [a.to_string() for a in other] != [a.to_string() for a in archs]


def test_uniform_sample_unchanged_and_pool_too_small(space):
    """uniform: 20 distinct archs, deterministic (the sessions 1-3 sample); a pool with fewer distinct
    archs than n is refused naming both."""
    a = er.sample_archs(space, 20, 0)
    assert [x.to_string() for x in a] == [x.to_string() for x in er.sample_archs(space, 20, 0, method="uniform")]
    # the archs sessions 1-3 scored with the supernet (their ground truth is in the CSV), in sampling order
    scored = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "data"
                         / "supernet_scores_mobile-unified.json").read_text())["scores"]
    assert [x.to_string() for x in a] == list(scored)
    assert len({x.to_string() for x in a}) == 20
    with pytest.raises(ValueError, match=r"pool of 5 draws holds only 5 distinct archs; need n=20"):
        er.sample_archs(space, 20, 1, method="stratified-macs", pool=5)
    with pytest.raises(ValueError, match=r"sample: got 'quantile'; allowed: uniform, stratified-macs"):
        er.sample_archs(space, 20, 1, method="quantile")


def test_rank_corr_known_values():
    # one swapped pair of four: tau = (5 - 1) / 6, rho = 1 - 6 * 2 / (4 * 15)
    assert er.rank_corr([1, 2, 3, 4], [1, 3, 2, 4]) == {"tau": 0.667, "spearman": 0.8}
    assert er.rank_corr([1, 2, 3], [3, 2, 1]) == {"tau": -1.0, "spearman": -1.0}


@pytest.mark.parametrize("argv, msg", [
    (["--sample", "quantile"], "error: --sample: got 'quantile'; allowed: distinct names among uniform, "
                               "stratified-macs separated by commas"),
    (["--sample", "uniform,uniform"], "error: --sample: got 'uniform,uniform'"),
    (["--sample", "stratified-macs", "--pool", "10"], "error: --pool: got 10; allowed: at least --n (20)"),
])
def test_bad_options_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        er.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(msg) and err.count("\n") == 1
