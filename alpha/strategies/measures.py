"""Uncertainty measures on class probabilities, with an optional Monte-Carlo axis.

`probs` is `(n, classes)` for one prediction per image, or `(n, classes, samples)` for
Monte-Carlo dropout passes or ensemble members (baal's layout, so its heuristics and ours
read the same arrays). Measures of a single distribution (least confidence, margin, entropy)
use the mean over samples, the Bayesian model average; BALD and variation ratio look at how
the samples disagree, which a single distribution cannot show. Higher always means more
uncertain, and every measure returns float64 of shape (n,), so strategies rank by any of them
the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import entr


def as_samples(probs: np.ndarray) -> np.ndarray:
    """View any accepted input as `(n, classes, samples)`, float64.

    One code path for both layouts keeps the measures short; a single prediction is one
    sample.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[:, :, None]
    if probs.ndim != 3 or probs.shape[2] < 1:
        raise ValueError(
            f"probs must be (n_images, n_classes) or (n_images, n_classes, n_samples), got "
            f"shape {probs.shape}: put Monte-Carlo samples on the last axis."
        )
    if probs.shape[1] < 2:
        raise ValueError(
            f"probs must have at least 2 classes, got shape {probs.shape}: "
            "uncertainty is undefined for a single class."
        )
    return probs


def mean_probs(probs: np.ndarray) -> np.ndarray:
    """The Bayesian model average `(n, classes)`: what the model predicts when asked once."""
    return as_samples(probs).mean(axis=2)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max p of the averaged prediction: how far the model is from sure of its guess."""
    return 1.0 - mean_probs(probs).max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2) of the averaged prediction: near a decision border between two classes."""
    mean = mean_probs(probs)
    top_two = np.partition(mean, -2, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy H[mean p] (natural log; 0 log 0 = 0): total uncertainty, data
    plus model, spread over all classes rather than the top two."""
    return entr(mean_probs(probs)).sum(axis=1)


def bald(probs: np.ndarray) -> np.ndarray:
    """Mutual information H[mean p] - mean H[p] (Houlsby et al. 2011; Gal et al. 2017).

    The part of the uncertainty that comes from the model not knowing (samples disagree),
    not from the image being ambiguous (every sample unsure alike): labels fix the first,
    not the second. It needs samples; one prediction has no disagreement to measure.
    """
    samples = as_samples(probs)
    if samples.shape[2] < 2:
        raise ValueError(
            f"BALD needs Monte-Carlo samples, got shape {np.shape(probs)}: pass "
            "(n_images, n_classes, n_samples) with n_samples >= 2 (see alpha.strategies.mc)."
        )
    expected_entropy = entr(samples).sum(axis=1).mean(axis=1)
    # Rounding can make the difference a hair below zero for a confident image.
    return np.maximum(entropy(samples) - expected_entropy, 0.0)


def variation_ratio(probs: np.ndarray) -> np.ndarray:
    """1 - (share of samples voting for the modal class) (Freeman 1965; Gal et al. 2017).

    With one sample every vote agrees, so it falls back to least confidence, its
    single-prediction analogue.
    """
    samples = as_samples(probs)
    if samples.shape[2] == 1:
        return least_confidence(samples)
    votes = samples.argmax(axis=1)  # (n, samples)
    n_classes = samples.shape[1]
    counts = np.stack([(votes == c).sum(axis=1) for c in range(n_classes)], axis=1)
    return 1.0 - counts.max(axis=1) / samples.shape[2]


MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "bald": bald,
    "variation_ratio": variation_ratio,
}
"""Every measure by name; `bald` needs Monte-Carlo samples, the others take either layout."""
