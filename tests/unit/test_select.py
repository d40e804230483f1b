import numpy as np
import pytest

from alpha.select import select, select_random, select_top_k

IDS = ["e", "a", "d", "b", "c"]
SCORES = np.array([0.5, 0.9, 0.9, 0.1, 0.9])


def test_top_k_highest_first_ties_by_id():
    picked = select_top_k(IDS, SCORES, 4)
    assert [IDS[i] for i in picked] == ["a", "c", "d", "e"]


def test_top_k_never_returns_excluded():
    picked = select_top_k(IDS, SCORES, 3, exclude={"a", "d"})
    assert [IDS[i] for i in picked] == ["c", "e", "b"]


def test_top_k_larger_than_pool_returns_all_eligible():
    picked = select_top_k(IDS, SCORES, 100, exclude=["b"])
    assert sorted(IDS[i] for i in picked) == ["a", "c", "d", "e"]


@pytest.mark.parametrize("k", [0, -3])
def test_top_k_zero_or_negative(k):
    assert select_top_k(IDS, SCORES, k) == []


def test_top_k_nan_ranks_last_and_empty_pool():
    scores = np.array([np.nan, 0.1, 0.2, 0.3, 0.4])
    assert select_top_k(IDS, scores, 5)[-1] == 0
    assert select_top_k([], np.empty(0), 3) == []
    assert select_top_k(IDS, SCORES, 3, exclude=IDS) == []


def test_top_k_rejects_mismatched_scores():
    with pytest.raises(ValueError, match="one score per image"):
        select_top_k(IDS, SCORES[:3], 2)


def test_random_reproducible_and_respects_exclusions():
    ids = [f"img{i:03d}" for i in range(200)]
    excluded = set(ids[:150])
    first = select_random(ids, 20, exclude=excluded, random_state=7)
    assert first == select_random(ids, 20, exclude=excluded, random_state=7)
    assert first != select_random(ids, 20, exclude=excluded, random_state=8)
    assert len(set(first)) == 20
    assert not {ids[i] for i in first} & excluded
    assert sorted(select_random(ids, 500, exclude=excluded)) == list(range(150, 200))
    assert select_random(ids, 0) == []


def test_select_dispatches_each_strategy():
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.99, 0.01]])
    ids = ["w", "x", "y", "z"]
    for strategy in ("least_confidence", "margin", "entropy"):
        picked, scores = select(strategy, ids, probs, 2, exclude=())
        assert picked == [1, 2]
        assert scores.shape == (4,)
    picked, scores = select("random", ids, probs, 2, exclude={"x"}, random_state=3)
    assert len(picked) == 2 and 1 not in picked
    np.testing.assert_allclose(scores, [0.2, 1.0, 0.8, 0.02])


def test_select_unknown_strategy():
    with pytest.raises(ValueError, match="choose one of"):
        select("coreset", ["a", "b"], np.full((2, 2), 0.5), 1)
