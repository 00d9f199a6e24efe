"""Evaluators: one interface, names, options, the train recipe and the zero-cost proxies."""
from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest
import torch

from search_space import zoo
from searchers.data import load_dataset
from searchers.evaluators import EvaluatorError, evaluator_names, get_evaluator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy_space import ToySpace, toy_npz  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    return load_dataset(toy_npz(tmp_path_factory.mktemp("d") / "toy.npz", n=300))


def test_names_and_unknown_evaluator():
    names = evaluator_names()
    assert names[:3] == ["supernet", "train", "proxy"]          # (and the learned predictor, issue #12)
    with pytest.raises(EvaluatorError) as e:
        get_evaluator("oracle")
    assert str(e.value) == "evaluator: got 'oracle'; allowed: " + ", ".join(names)
    with pytest.raises(EvaluatorError, match="proxy: got 'magic'; allowed: naswot, synflow, gradnorm"):
        get_evaluator("proxy", proxy="magic")
    with pytest.raises(EvaluatorError, match="train evaluator option"):
        get_evaluator("train", epoch=3)
    with pytest.raises(EvaluatorError, match="an Arch"):
        get_evaluator("proxy").evaluate("stem_i3_o8")


def test_train_evaluator_learns_and_records_cost(data):
    ev = get_evaluator("train", dataset=data, seed=0, epochs=3, images_per_epoch=192, batch_size=32, lr=0.05,
                       eval_images=100)
    arch = ToySpace().sample(random.Random(1))
    acc = ev.evaluate(arch)
    assert acc > 0.6                                   # three separable classes; chance is 1/3
    assert ev.last_cost_s > 0 and ev.n_evals == 1
    stats = ev.results[arch.to_string()]
    assert stats["steps"] == 3 * 6 and stats["accuracy"] == acc
    # the recipe is fixed by the seed: a second run gives the same accuracy
    assert get_evaluator("train", dataset=data, seed=0, epochs=3, images_per_epoch=192, batch_size=32,
                         lr=0.05, eval_images=100).evaluate(arch) == acc


def test_proxies_are_finite_deterministic_and_fast(data):
    a, b = zoo.get("mobilenet_v2", 0.35), zoo.get("mobilenet_v2", 1.0)
    raw = {}
    for proxy in ("naswot", "synflow", "gradnorm"):
        ev = get_evaluator("proxy", dataset=data, seed=0, proxy=proxy, batch_size=16)
        sa, sb = ev.evaluate(a), ev.evaluate(b)
        raw[proxy] = ev.score(a), ev.score(b)
        assert 0.0 < sa < 1.0 and 0.0 < sb < 1.0
        assert all(math.isfinite(v) for v in raw[proxy])
        assert ev.score(a) == raw[proxy][0]            # same seed, same init, same batch
        assert ev.last_cost_s < 10
    # synflow sees no data (all-ones input): another batch leaves it unchanged; naswot reads the batch
    other = {p: get_evaluator("proxy", dataset=data, seed=0, proxy=p, batch_size=16) for p in ("synflow", "naswot")}
    for ev in other.values():
        ev.prepare()
        ev._batch = data.train.batch(torch.arange(100, 116))
    assert other["synflow"].score(a) == raw["synflow"][0]
    assert other["naswot"].score(a) != raw["naswot"][0]
    # naswot: the log-determinant of a 16x16 kernel with at most ~units on the diagonal
    assert 0 < raw["naswot"][0] < 16 * math.log(1e7)
    # gradnorm at init: every conv / linear weight gets a gradient, so the sum is positive
    assert raw["gradnorm"][0] > 0


def test_ranking_ground_truth_mean_over_seeds_and_seed_to_seed_tau(tmp_path):
    """benchmarks/evaluators_ranking.py: the ground truth is the mean test accuracy over the training
    seeds of one recipe (archs missing a seed left out, other recipes' rows ignored), and the
    seed-to-seed tau is Kendall's tau between the seeds on the archs both trained."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import evaluators_ranking as er

    r32, r5 = er.GT_RECIPES["32k"], er.GT_RECIPES["5k"]
    path = tmp_path / "standalone.csv"
    rows = [("a", 0, 0.80, r32), ("b", 0, 0.70, r32), ("c", 0, 0.60, r32), ("d", 0, 0.90, r32),
            ("a", 1, 0.70, r32), ("b", 1, 0.76, r32), ("c", 1, 0.50, r32),    # d: seed 0 only
            ("a", 1, 0.10, r5)]                                              # another recipe
    import csv
    import json

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=er.FIELDS)
        w.writeheader()
        for arch, seed, acc, rec in rows:
            w.writerow({"arch": arch, "seed": seed, "accuracy_test": acc, "accuracy_val": acc,
                        "recipe": json.dumps(rec.to_dict(), sort_keys=True)})
    mean, per_seed = er.ground_truth(path, r32, [0, 1])
    assert mean == pytest.approx({"a": 0.75, "b": 0.73, "c": 0.55})
    assert per_seed[1] == {"a": 0.70, "b": 0.76, "c": 0.50}
    # seed 0 orders a > b > c, seed 1 b > a > c: 2 concordant pairs, 1 discordant -> tau 1/3
    assert er.seed_to_seed(per_seed) == {"0-1": {"tau": 0.333, "n": 3}}
    mean, _ = er.ground_truth(path, r32, [0], archs={"a", "d"})
    assert mean == {"a": 0.80, "d": 0.90}
    assert er.ground_truth(path, r5, [1])[0] == {"a": 0.10}
