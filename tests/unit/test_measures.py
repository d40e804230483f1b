import numpy as np
import pytest

from alpha.strategies.measures import entropy, least_confidence, margin

SCORERS = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}

PROBS = np.array(
    [
        [0.9, 0.05, 0.05],  # sure
        [0.5, 0.4, 0.1],  # close call between two classes
        [0.4, 0.3, 0.3],  # spread out
    ]
)


def test_least_confidence_known_values():
    np.testing.assert_allclose(least_confidence(PROBS), [0.1, 0.5, 0.6])


def test_margin_known_values():
    np.testing.assert_allclose(margin(PROBS), [1 - 0.85, 1 - 0.1, 1 - 0.1])


def test_entropy_known_values():
    expected = [-(p * np.log(p)).sum() for p in PROBS]
    np.testing.assert_allclose(entropy(PROBS), expected)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_sure_ranks_below_unsure(name):
    scores = SCORERS[name](PROBS)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert scores[0] < min(scores[1], scores[2])


@pytest.mark.parametrize(
    ("name", "uniform_value"),
    [("least_confidence", 1 - 1 / 4), ("margin", 1.0), ("entropy", np.log(4))],
)
def test_uniform_is_max_and_one_hot_is_zero(name, uniform_value):
    rng = np.random.default_rng(0)
    random_probs = rng.dirichlet(np.ones(4), size=50)
    uniform = np.full((1, 4), 0.25)
    one_hot = np.eye(4)
    scorer = SCORERS[name]
    np.testing.assert_allclose(scorer(uniform), [uniform_value])
    assert scorer(random_probs).max() <= uniform_value + 1e-12
    np.testing.assert_allclose(scorer(one_hot), np.zeros(4), atol=0)


def test_entropy_treats_zero_probability_as_zero():
    assert np.isfinite(entropy(np.array([[0.0, 1.0], [0.5, 0.5]]))).all()


def test_empty_pool_gives_empty_scores():
    for scorer in SCORERS.values():
        assert scorer(np.empty((0, 3))).shape == (0,)


@pytest.mark.parametrize(
    "bad", [np.array([0.2, 0.8]), np.ones((2, 1)), np.ones((2, 1, 2)), np.ones((2, 2, 2, 2))]
)
def test_rejects_bad_shapes(bad):
    for scorer in SCORERS.values():
        with pytest.raises(ValueError, match="probs must"):
            scorer(bad)
