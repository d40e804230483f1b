import numpy as np
import pytest
import torch

from alpha.kinds.mc import ensemble, mc_dropout
from alpha.strategies import (
    MEASURES,
    STRATEGIES,
    BatchScores,
    badge,
    bald,
    class_balanced,
    class_cap,
    cluster_margin,
    coreset,
    entropy,
    gradient_embeddings,
    least_confidence,
    margin,
    pixel_embeddings,
    select_batch,
    strategy_score,
    top_k,
    typiclust,
    variation_ratio,
)


def _pool(probs: np.ndarray, embeddings: np.ndarray | None = None) -> BatchScores:
    """The pool as a kind's scoring keeps it (gradient embeddings whenever embeddings are)."""
    return BatchScores.from_probs(probs, embeddings, gradients=embeddings is not None)


PROBS = np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0.4, 0.3, 0.3]])

# Two images, three MC samples each (baal's layout: n, classes, samples).
AGREE = np.array([[0.7, 0.3]] * 3).T  # every sample says the same: unsure, but no disagreement
DISAGREE = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).T  # sure samples that contradict
MC = np.stack([AGREE, DISAGREE])


# ---- measures ----------------------------------------------------------------------------
def test_measures_on_mc_samples_use_the_mean():
    mean = MC.mean(axis=2)  # [[0.7, 0.3], [2/3, 1/3]]
    np.testing.assert_allclose(least_confidence(MC), [0.3, 1 / 3])
    np.testing.assert_allclose(margin(MC), [1 - 0.4, 1 - 1 / 3])
    np.testing.assert_allclose(entropy(MC), -(mean * np.log(mean)).sum(axis=1))


def test_bald_is_disagreement_not_ambiguity():
    h = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    np.testing.assert_allclose(bald(MC), [0.0, h], atol=1e-12)
    one_hot_split = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # two samples, opposite classes
    np.testing.assert_allclose(bald(one_hot_split), [np.log(2)])


def test_bald_needs_samples():
    with pytest.raises(ValueError, match="Monte-Carlo samples"):
        bald(PROBS)


def test_variation_ratio_counts_votes():
    votes = np.array([[[0.9, 0.6, 0.2, 0.4, 0.3], [0.1, 0.4, 0.8, 0.6, 0.7]]])  # 0,0,1,1,1
    np.testing.assert_allclose(variation_ratio(votes), [1 - 3 / 5])
    np.testing.assert_allclose(variation_ratio(MC), [0.0, 1 - 2 / 3])
    np.testing.assert_allclose(variation_ratio(PROBS), least_confidence(PROBS))


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_uniform_is_most_and_one_hot_least_uncertain(name):
    rng = np.random.default_rng(0)
    samples = rng.dirichlet(np.ones(4), size=(30, 5)).transpose(0, 2, 1)  # (30, 4, 5)
    scores = MEASURES[name](samples)
    assert scores.shape == (30,) and scores.dtype == np.float64
    one_hot = np.repeat(np.eye(4)[:, :, None], 5, axis=2)
    np.testing.assert_allclose(MEASURES[name](one_hot), np.zeros(4), atol=1e-12)
    if name not in ("bald", "variation_ratio"):  # uniform samples agree: no disagreement
        uniform = np.full((1, 4, 5), 0.25)
        assert MEASURES[name](uniform)[0] >= scores.max() - 1e-12


@pytest.mark.parametrize("bad", [np.ones(3), np.ones((2, 1)), np.ones((2, 2, 2, 2))])
def test_measures_reject_bad_shapes(bad):
    for measure in MEASURES.values():
        with pytest.raises(ValueError, match="probs must"):
            measure(bad)


def test_matches_baal_to_1e6():
    heuristics = pytest.importorskip("baal.active.heuristics")
    probs = np.random.default_rng(1).dirichlet(np.ones(10) * 0.3, size=(200, 20))
    probs = probs.transpose(0, 2, 1)
    np.testing.assert_allclose(heuristics.BALD().get_uncertainties(probs), bald(probs), atol=1e-6)
    np.testing.assert_allclose(
        heuristics.Entropy().get_uncertainties(probs), entropy(probs), atol=1e-6
    )


# ---- diversity: no image twice, and no duplicate of an image twice ------------------------
def _duplicated_pool(n_distinct: int = 40, copies: int = 3, dim: int = 6, classes: int = 4):
    """Each image appears `copies` times (same embedding, same probabilities)."""
    rng = np.random.default_rng(0)
    embeddings = np.repeat(rng.normal(size=(n_distinct, dim)), copies, axis=0)
    probs = np.repeat(rng.dirichlet(np.ones(classes), size=n_distinct), copies, axis=0)
    image_of = np.repeat(np.arange(n_distinct), copies)
    return probs, embeddings.astype(np.float32), image_of


@pytest.mark.parametrize("strategy", ["coreset", "badge", "cluster_margin", "typiclust"])
@pytest.mark.parametrize("random_state", [0, 1, 2])
def test_diversity_never_picks_the_same_image_twice(strategy, random_state):
    probs, embeddings, image_of = _duplicated_pool()
    labeled = embeddings[:3]
    picked = select_batch(
        strategy, 12, _pool(probs, embeddings), labeled, balance=False, random_state=random_state
    )
    assert len(picked) == 12
    assert len(set(picked.tolist())) == 12
    assert len(set(image_of[picked].tolist())) == 12


def test_coreset_covers_the_far_away_first():
    embeddings = np.array([[0.0], [0.1], [5.0], [10.0], [10.1]], dtype=np.float32)
    picked = coreset(embeddings, 2, labeled_embeddings=np.array([[0.0]], dtype=np.float32))
    assert picked.tolist() == [4, 2]


def test_badge_starts_from_the_largest_gradient():
    probs, embeddings, _ = _duplicated_pool(copies=1)
    grads = gradient_embeddings(probs, embeddings)
    assert grads.shape == (40, 4 * 6)
    picked = badge(grads, 5, random_state=0)
    assert picked[0] == int(np.argmax((grads**2).sum(axis=1)))
    np.testing.assert_array_equal(picked, badge(grads, 5, random_state=0))


def test_cluster_margin_takes_uncertain_images_from_different_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20]], dtype=np.float32)
    embeddings = np.concatenate([c + rng.normal(size=(30, 2)) for c in centers])
    probs = np.tile([0.5, 0.45, 0.05], (90, 1))  # everything equally uncertain
    probs[::2] = [0.98, 0.01, 0.01]  # half of each blob is sure
    picked = cluster_margin(margin(probs), embeddings.astype(np.float32), 3, candidates=20)
    assert sorted(picked // 30) == [0, 1, 2]  # one per blob
    assert (picked % 2 == 1).all()  # and only uncertain ones


def test_typiclust_picks_dense_regions_not_covered_yet():
    rng = np.random.default_rng(0)
    blob_a = rng.normal(size=(50, 2))
    blob_b = rng.normal(size=(50, 2)) + 30
    outliers = np.array([[100.0, -100.0]])
    pool = np.concatenate([blob_a, blob_b, outliers]).astype(np.float32)
    picked = typiclust(pool, 1, labeled_embeddings=blob_a[:3], random_state=0)
    assert 50 <= picked[0] < 100  # the uncovered blob, not the outlier
    assert np.linalg.norm(pool[picked[0]] - blob_b.mean(axis=0)) < 1.0  # its typical member


def test_pixel_embeddings_for_cold_start():
    images = np.random.default_rng(0).random((30, 1, 8, 8), dtype=np.float32)
    assert pixel_embeddings(images, dim=5).shape == (30, 5)


# ---- the class-balance guard ---------------------------------------------------------------
def test_class_balanced_caps_each_class():
    predicted = np.array([0] * 50 + [1] * 5 + [2] * 5)
    picked = class_balanced(np.arange(60), predicted, 10, n_classes=3)
    counts = np.bincount(predicted[picked], minlength=3)
    assert counts[0] == class_cap(10, 3) == 7 and counts.sum() == 10


def test_class_balanced_fills_from_held_back_when_classes_run_out():
    picked = class_balanced(np.arange(10), np.zeros(10, dtype=int), 6, n_classes=10)
    assert picked.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("strategy", ["margin_balanced", "cluster_margin"])
def test_balanced_strategies_do_not_collapse_onto_one_class(strategy):
    rng = np.random.default_rng(0)
    n, classes, k = 400, 10, 20
    probs = rng.dirichlet(np.ones(classes) * 5, size=n) * 0.2
    predicted = rng.integers(classes, size=n)
    probs[np.arange(n), predicted] += 0.8
    unsure = predicted == 3  # one class sits on a hard border: all top margins are class 3
    probs[unsure] = np.full(classes, 0.02)
    probs[unsure, 3], probs[unsure, 4] = 0.41, 0.41
    embeddings = rng.normal(size=(n, 8)).astype(np.float32)
    picked = select_batch(strategy, k, _pool(probs, embeddings), random_state=0)
    counts = np.bincount(probs[picked].argmax(axis=1), minlength=classes)
    assert len(set(picked.tolist())) == k
    assert counts.max() <= class_cap(k, classes)
    plain = select_batch("margin", k, _pool(probs))
    assert np.bincount(probs[plain].argmax(axis=1), minlength=classes).max() > class_cap(
        k, classes
    )


# ---- select_batch ---------------------------------------------------------------------------
def test_top_k_is_stable_and_puts_nan_last():
    assert top_k(np.array([0.5, np.nan, 0.9, 0.9]), 4).tolist() == [2, 3, 0, 1]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_returns_k_distinct_indices(strategy):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(60, 4)).transpose(0, 2, 1)
    embeddings = rng.normal(size=(60, 7)).astype(np.float32)
    picked = select_batch(strategy, 9, _pool(probs, embeddings), embeddings[:6], random_state=0)
    assert picked.dtype == np.intp and len(set(picked.tolist())) == 9
    assert ((picked >= 0) & (picked < 60)).all()
    assert strategy_score(strategy, _pool(probs)).shape == (60,)


def test_select_batch_small_pool_and_zero_k():
    probs = np.full((3, 2), 0.5)
    assert len(select_batch("margin", 10, _pool(probs))) == 3
    assert len(select_batch("margin", 0, _pool(probs))) == 0


def test_cold_start_switches_to_typicality():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=80)
    embeddings = rng.normal(size=(80, 4)).astype(np.float32)
    pool = _pool(probs, embeddings)
    cold = select_batch("margin", 5, pool, n_labeled=2, cold_start_labels=10)
    np.testing.assert_array_equal(cold, typiclust(embeddings, 5))
    warm = select_batch("margin", 5, pool, n_labeled=20, cold_start_labels=10)
    np.testing.assert_array_equal(warm, top_k(margin(probs), 5))


def test_select_batch_says_what_is_missing():
    probs = np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="Unknown selection strategy"):
        select_batch("smartest", 2, _pool(probs))
    with pytest.raises(ValueError, match="needs the pool's embeddings"):
        select_batch("badge", 2, _pool(probs))
    with pytest.raises(ValueError, match="Monte-Carlo samples"):
        select_batch("bald", 2, _pool(probs))


# ---- Monte-Carlo dropout -----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    from alpha.kinds.classification import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(1, 3, 8, embedding_dim=16, widths=(4, 8), dropout=0.5)
    return model.eval()


def test_mc_dropout_shapes_and_reproducibility(small_model):
    from alpha.kinds.classification import predict

    images = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
    for mode in ("fast", "last", "full"):
        probs, embeddings = mc_dropout(small_model, images, samples=7, mode=mode, random_state=3)
        assert probs.shape == (10, 3, 7)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        np.testing.assert_allclose(embeddings, predict(small_model, images, 1.0)[1], rtol=1e-5)
        again, _ = mc_dropout(small_model, images, samples=7, mode=mode, random_state=3)
        np.testing.assert_array_equal(probs, again)
        assert not np.allclose(probs[:, :, 0], probs[:, :, 1])  # dropout is on
    assert not small_model.training and not small_model.head[0].training  # left in eval mode


def test_fast_mc_samples_the_same_distribution_as_full(small_model):
    images = np.random.default_rng(1).random((6, 1, 8, 8), dtype=np.float32)
    fast, _ = mc_dropout(small_model, images, samples=400, mode="fast", random_state=0)
    full, _ = mc_dropout(small_model, images, samples=400, mode="full", random_state=1)
    np.testing.assert_allclose(fast.mean(axis=2), full.mean(axis=2), atol=0.04)
    np.testing.assert_allclose(bald(fast), bald(full), atol=0.04)


def test_ensemble_stacks_members(small_model):
    images = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    probs = ensemble([(small_model, 1.0), (small_model, 2.0)], images)
    assert probs.shape == (5, 3, 2)
    assert bald(probs).shape == (5,)


def test_cold_start_by_default_below_one_label_per_class():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    embeddings = rng.normal(size=(50, 3)).astype(np.float32)
    few = select_batch("margin", 5, _pool(probs, embeddings), embeddings[:3])
    np.testing.assert_array_equal(few, typiclust(embeddings, 5, embeddings[:3]))
    enough = select_batch("margin", 5, _pool(probs, embeddings), embeddings[:4])
    np.testing.assert_array_equal(enough, top_k(margin(probs), 5))
    no_model = select_batch("badge", 5, BatchScores(embeddings=embeddings), n_labeled=0)
    np.testing.assert_array_equal(no_model, typiclust(embeddings, 5))


def test_the_loop_samples_for_every_measure_that_needs_samples():
    """A measure that, without Monte-Carlo samples, is just least confidence (or undefined)
    must be in NEEDS_SAMPLES, or the loop silently ranks by least confidence under its name."""
    from alpha.strategies import NEEDS_SAMPLES
    from alpha.strategies.batch import UNCERTAINTY

    rng = np.random.default_rng(0)
    one_pass = rng.dirichlet(np.ones(4), size=50)  # (n, classes)
    samples = rng.dirichlet(np.ones(4), size=(50, 8)).transpose(0, 2, 1)  # (n, classes, T)
    for name in UNCERTAINTY:
        if name == "least_confidence":
            continue
        try:
            degenerate = np.allclose(MEASURES[name](one_pass), least_confidence(one_pass))
        except ValueError:  # undefined on one pass (BALD)
            degenerate = True
        if degenerate:
            assert name in NEEDS_SAMPLES, name
            assert not np.allclose(MEASURES[name](samples), least_confidence(samples))
