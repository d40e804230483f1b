import numpy as np
import pytest

from alpha.strategies.measures import (
    MEASURES,
    bald,
    entropy,
    least_confidence,
    margin,
    mean_probs,
    variation_ratio,
)
from alpha.strategies.reductions import REDUCTIONS, inverse_frequency_weights, reduce_map

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


# ---- spatial layouts and reductions ---------------------------------------------------------


def _pixel_probs(shape, seed=0, dtype=np.float64):
    """Random softmax probabilities with classes on axis 1."""
    logits = np.random.default_rng(seed).normal(0, 2, shape)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs.astype(dtype)


def _per_pixel(measure, probs):
    """The per-image measure applied to every pixel: (n, C, H, W[, T]) -> (n, H, W)."""
    n, c, h, w = probs.shape[:4]
    moved = np.moveaxis(probs, 1, 3)  # (n, H, W, C[, T])
    return measure(moved.reshape(n * h * w, c, *probs.shape[4:])).reshape(n, h, w)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy", "variation_ratio"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spatial_measures_are_the_per_image_measures_at_each_pixel(name, dtype):
    probs = _pixel_probs((3, 4, 5, 6), dtype=dtype)
    result = MEASURES[name](probs)
    assert result.shape == (3, 5, 6) and result.dtype == np.float64
    np.testing.assert_allclose(result, _per_pixel(MEASURES[name], probs), atol=1e-12)


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spatial_mc_measures_are_the_per_image_measures_at_each_pixel(name, dtype):
    probs = _pixel_probs((2, 3, 4, 5, 7), seed=1, dtype=dtype)
    result = MEASURES[name](probs)
    assert result.shape == (2, 4, 5) and result.dtype == np.float64
    np.testing.assert_allclose(result, _per_pixel(MEASURES[name], probs), atol=1e-9)


def test_mean_probs_keeps_the_spatial_axes():
    probs = _pixel_probs((2, 3, 4, 5, 6))
    np.testing.assert_allclose(mean_probs(probs), probs.mean(axis=-1))
    assert mean_probs(probs[..., 0]).shape == (2, 3, 4, 5)


def test_mc_keyword_overrides_the_layout():
    probs = _pixel_probs((2, 3, 8))  # 3-D is (n, C, T) by default ...
    line = entropy(probs, mc=False)  # ... or one spatial axis of length 8
    assert line.shape == (2, 8)
    np.testing.assert_allclose(line, entropy(probs[:, :, :, None]).reshape(2, 8))
    assert entropy(probs, mc=True).shape == (2,)
    samples = _pixel_probs((2, 3, 8, 4))  # 4-D with mc=True: (n, C, L, T)
    assert bald(samples, mc=True).shape == (2, 8)
    np.testing.assert_allclose(margin(_pixel_probs((2, 3)), mc=False), margin(_pixel_probs((2, 3))))
    with pytest.raises(ValueError, match="probs must"):
        entropy(_pixel_probs((2, 3)), mc=True)  # no axis left for samples


def test_existing_layouts_are_unchanged_by_the_keyword():
    probs = _pixel_probs((6, 4, 5), seed=3)
    for measure in MEASURES.values():
        assert np.array_equal(measure(probs), measure(probs, mc=True))
    single = probs[:, :, 0]
    for name in ("least_confidence", "margin", "entropy", "variation_ratio"):
        assert np.array_equal(MEASURES[name](single), MEASURES[name](single, mc=False))


def test_spatial_bald_and_variation_ratio_need_samples():
    with pytest.raises(ValueError, match="needs Monte-Carlo samples"):
        bald(_pixel_probs((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="needs Monte-Carlo samples"):
        bald(_pixel_probs((2, 3, 4, 5, 1)))
    one = _pixel_probs((2, 3, 4, 5, 1))
    np.testing.assert_allclose(variation_ratio(one), least_confidence(one))


def test_spatial_input_must_be_probabilities_over_axis_1():
    probs = _pixel_probs((2, 3, 4, 5))
    with pytest.raises(ValueError, match="probs must be probabilities"):
        entropy(np.moveaxis(probs, 1, 3))  # classes last: the common mistake
    with pytest.raises(ValueError, match="at least 2 classes"):
        entropy(np.ones((2, 1, 4, 5)))
    nan = probs.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="probs must be probabilities"):
        margin(nan)


def test_spatial_empty_batch():
    for name, measure in MEASURES.items():
        assert measure(np.empty((0, 3, 4, 5, 2))).shape == (0, 4, 5), name


def test_reductions_known_values():
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 4.0], [4.0, 8.0]]])  # (2, 2, 2)
    np.testing.assert_allclose(reduce_map(maps, "mean"), [1.5, 5.0])
    np.testing.assert_allclose(reduce_map(maps, "max"), [3.0, 8.0])
    np.testing.assert_allclose(reduce_map(maps, "sum"), [6.0, 20.0])
    np.testing.assert_allclose(reduce_map(maps, "topk", top_percent=50), [2.5, 6.0])
    np.testing.assert_allclose(reduce_map(maps, "topk", top_percent=1), [3.0, 8.0])  # >= 1
    np.testing.assert_allclose(reduce_map(maps, "topk", top_percent=100), [1.5, 5.0])
    predicted = np.array([[[0, 0], [0, 1]], [[1, 1], [1, 1]]])
    weights = np.array([1.0, 3.0])
    # image 0: (0 + 1 + 2 + 3 * 3) / (1 + 1 + 1 + 3); image 1: one class -> the mean
    np.testing.assert_allclose(
        reduce_map(maps, "class_weighted", predicted=predicted, class_weights=weights),
        [12 / 6, 5.0],
    )
    assert set(REDUCTIONS) == {"mean", "topk", "class_weighted", "max", "sum"}
    for how in REDUCTIONS:
        out = reduce_map(maps, how, predicted=predicted, class_weights=weights)
        assert out.dtype == np.float64 and out.shape == (2,)


def test_reductions_leave_out_ignored_pixels():
    maps = np.array([[1.0, 9.0, 3.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    ignore = np.array([[False, True, False, False], [True, True, True, True]])
    np.testing.assert_allclose(reduce_map(maps, "mean", ignore=ignore), [3.0, 0.0])
    np.testing.assert_allclose(reduce_map(maps, "max", ignore=ignore), [5.0, 0.0])
    np.testing.assert_allclose(reduce_map(maps, "sum", ignore=ignore), [9.0, 0.0])
    np.testing.assert_allclose(reduce_map(maps, "topk", top_percent=34, ignore=ignore), [4.0, 0.0])
    np.testing.assert_allclose(
        reduce_map(maps, "class_weighted", predicted=np.zeros((2, 4), int),
                   class_weights=np.ones(1), ignore=ignore),
        [3.0, 0.0],
    )
    np.testing.assert_allclose(reduce_map(maps, "mean", ignore=ignore[0]), [3.0, 2.0])  # broadcast


def test_topk_ranks_a_small_unsure_region_above_a_faint_haze():
    haze = np.full((1, 10, 10), 0.2)
    region = np.zeros((1, 10, 10))
    region[0, :3, :3] = 1.0  # 9 % of the image, very unsure
    maps = np.concatenate([haze, region])
    assert reduce_map(maps, "mean")[0] > reduce_map(maps, "mean")[1]
    assert reduce_map(maps, "topk", top_percent=9)[1] > reduce_map(maps, "topk", top_percent=9)[0]


def test_reductions_refuse_bad_arguments():
    maps = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="Unknown reduction"):
        reduce_map(maps, "median")
    with pytest.raises(ValueError, match="needs `predicted`"):
        reduce_map(maps, "class_weighted")
    with pytest.raises(ValueError, match="top_percent"):
        reduce_map(maps, "topk", top_percent=0)
    with pytest.raises(ValueError, match="class_weights has 2"):
        reduce_map(maps, "class_weighted", predicted=np.full((2, 3, 3), 2),
                   class_weights=np.ones(2))
    assert reduce_map(np.zeros((0, 3, 3)), "topk").shape == (0,)


def test_inverse_frequency_weights():
    weights = inverse_frequency_weights(np.array([0.7, 0.2, 0.1, 0.0]))
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0] < weights[1] < weights[2] == weights[3]  # unseen = the rarest seen
    np.testing.assert_allclose(inverse_frequency_weights(np.zeros(4)), np.full(4, 0.25))
