"""Uncertainty measures: short pure functions of class probabilities.

They take arrays, not models, so any model (or an ensemble's averaged output) can be scored
and every measure can be tested with hand-written probabilities. Every measure returns
float64 of shape (n,) where higher means more uncertain, so strategies can rank by any of
them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import entr


def _check(probs: np.ndarray) -> np.ndarray:
    """Refuse shapes that would silently give meaningless scores (a 1-D vector, one class)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(
            f"probs must be 2-D (n_images, n_classes), got shape {probs.shape}: "
            "pass one row of class probabilities per image."
        )
    if probs.shape[1] < 2:
        raise ValueError(
            f"probs must have at least 2 classes, got shape {probs.shape}: "
            "uncertainty is undefined for a single class."
        )
    return probs


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max p: how far the model is from being sure of its best guess."""
    probs = _check(probs)
    return 1.0 - probs.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): high when the two best classes are close, i.e. near a decision border."""
    probs = _check(probs)
    top_two = np.partition(probs, -2, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    """-sum p log p (natural log; 0 log 0 = 0): spread over all classes, not just the top two."""
    probs = _check(probs)
    return entr(probs).sum(axis=1)


SCORERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
}
