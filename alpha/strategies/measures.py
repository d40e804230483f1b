"""Uncertainty measures on class probabilities, with optional spatial and Monte-Carlo axes.

`probs` is `(n, classes)` for one prediction per image, or `(n, classes, samples)` for
Monte-Carlo dropout passes or ensemble members (baal's layout, so its heuristics and ours
read the same arrays). Measures of a single distribution (least confidence, margin, entropy)
use the mean over samples, the Bayesian model average; BALD and variation ratio look at how
the samples disagree, which a single distribution cannot show. Higher always means more
uncertain, and every measure returns float64 of shape (n,), so strategies rank by any of them
the same way.

Segmentation adds spatial axes after the class axis: `(n, classes, H, W)` per pixel, or
`(n, classes, H, W, samples)` with Monte-Carlo samples, and a measure then returns a float64
map `(n, H, W)` that `alpha.strategies.reductions` turns into one score per image. The
keyword `mc` says whether the last axis holds samples: by default 2-D is one prediction, 3-D
has samples, 4-D is spatial without and 5-D spatial with samples; `mc=False` on a 3-D array
reads `(n, classes, L)` as one spatial axis, `mc=True` on a 4-D one `(n, classes, L, T)`.
Spatial input must be probabilities over the class axis (each pixel sums to 1, within 1e-3):
a 4-D array is otherwise easily a mistaken layout. Spatial maps are computed on the class
axis in place, with at most about one float64 copy of `(n, classes, H, W)` at a time (never
a float64 copy of the samples), so a batch of probability maps stays affordable.
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


def mean_probs(probs: np.ndarray, *, mc: bool | None = None) -> np.ndarray:
    """The Bayesian model average `(n, classes)` (`(n, classes, H, W)` for spatial input):
    what the model predicts when asked once."""
    spatial = _spatial_layout(probs, mc)
    if spatial is not None:
        array, has_samples = spatial
        return _mean_map(array, has_samples, own=False)
    return as_samples(probs).mean(axis=2)


def least_confidence(probs: np.ndarray, *, mc: bool | None = None) -> np.ndarray:
    """1 - max p of the averaged prediction: how far the model is from sure of its guess."""
    spatial = _spatial_layout(probs, mc)
    if spatial is not None:
        return _least_confidence_map(*spatial)
    return 1.0 - mean_probs(probs).max(axis=1)


def margin(probs: np.ndarray, *, mc: bool | None = None) -> np.ndarray:
    """1 - (p1 - p2) of the averaged prediction: near a decision border between two classes."""
    spatial = _spatial_layout(probs, mc)
    if spatial is not None:
        return _margin_map(*spatial)
    mean = mean_probs(probs)
    top_two = np.partition(mean, -2, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def entropy(probs: np.ndarray, *, mc: bool | None = None) -> np.ndarray:
    """Predictive entropy H[mean p] (natural log; 0 log 0 = 0): total uncertainty, data
    plus model, spread over all classes rather than the top two."""
    spatial = _spatial_layout(probs, mc)
    if spatial is not None:
        return _entropy_map(*spatial)
    return entr(mean_probs(probs)).sum(axis=1)


def bald(probs: np.ndarray, *, mc: bool | None = None) -> np.ndarray:
    """Mutual information H[mean p] - mean H[p] (Houlsby et al. 2011; Gal et al. 2017).

    The part of the uncertainty that comes from the model not knowing (samples disagree),
    not from the image being ambiguous (every sample unsure alike): labels fix the first,
    not the second. It needs samples; one prediction has no disagreement to measure.
    """
    spatial = _spatial_layout(probs, mc)
    if spatial is not None:
        return _bald_map(*spatial)
    samples = as_samples(probs)
    if samples.shape[2] < 2:
        raise ValueError(
            f"BALD needs Monte-Carlo samples, got shape {np.shape(probs)}: pass "
            "(n_images, n_classes, n_samples) with n_samples >= 2 (see alpha.strategies.mc)."
        )
    expected_entropy = entr(samples).sum(axis=1).mean(axis=1)
    # Rounding can make the difference a hair below zero for a confident image.
    return np.maximum(entropy(samples) - expected_entropy, 0.0)


def variation_ratio(probs: np.ndarray, *, mc: bool | None = None) -> np.ndarray:
    """1 - (share of samples voting for the modal class) (Freeman 1965; Gal et al. 2017).

    With one sample every vote agrees, so it falls back to least confidence, its
    single-prediction analogue.
    """
    spatial = _spatial_layout(probs, mc)
    if spatial is not None:
        return _variation_ratio_map(*spatial)
    samples = as_samples(probs)
    if samples.shape[2] == 1:
        return least_confidence(samples)
    votes = samples.argmax(axis=1)  # (n, samples)
    n_classes = samples.shape[1]
    counts = np.stack([(votes == c).sum(axis=1) for c in range(n_classes)], axis=1)
    return 1.0 - counts.max(axis=1) / samples.shape[2]


# ---- spatial layouts: (n, classes, *spatial) and (n, classes, *spatial, samples) --------
_SUM_TOLERANCE = 1e-3


def _spatial_layout(probs: np.ndarray, mc: bool | None) -> tuple[np.ndarray, bool] | None:
    """None for the per-image layouts `(n, classes)` and `(n, classes, T)` (their code path
    is unchanged); else `(probs as a float array, whether the last axis holds samples)`.

    The array keeps its float32 or float64 dtype: the maps upcast one slice at a time.
    """
    ndim = np.ndim(probs)
    if mc is None:
        if ndim <= 3:
            return None
        if ndim > 5:
            raise ValueError(
                f"probs must be (n, classes), (n, classes, T), (n, classes, H, W) or "
                f"(n, classes, H, W, T), got shape {np.shape(probs)}: pass mc= to say "
                "whether the last axis holds Monte-Carlo samples."
            )
        mc = ndim == 5
    elif (ndim == 2 and not mc) or (ndim == 3 and mc):
        return None
    n_spatial = ndim - 2 - int(mc)
    if n_spatial < 1:
        raise ValueError(
            f"probs must have a class axis{', a spatial axis' if ndim >= 2 else ''} and, "
            f"with mc=True, a samples axis last; got shape {np.shape(probs)}."
        )
    array = np.asarray(probs)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32 if array.dtype.itemsize <= 4 else np.float64)
    if array.shape[1] < 2:
        raise ValueError(
            f"probs must have at least 2 classes, got shape {array.shape}: "
            "uncertainty is undefined for a single class."
        )
    if mc and array.shape[-1] < 1:
        raise ValueError(f"probs must have at least one sample on the last axis, got "
                         f"shape {array.shape}.")
    if array.size:
        deviation = float(np.abs(array.sum(axis=1) - 1.0).max())
        if not deviation <= _SUM_TOLERANCE:  # also refuses NaN
            raise ValueError(
                f"probs must be probabilities over the class axis (axis 1) of shape "
                f"{array.shape}, but a pixel's classes sum {deviation:.3g} away from 1: put "
                "classes on axis 1, spatial axes next and Monte-Carlo samples last, as softmax "
                "over axis 1 gives."
            )
    return array, bool(mc)


def _mean_map(probs: np.ndarray, mc: bool, own: bool) -> np.ndarray:
    """The averaged prediction `(n, classes, *spatial)` as float64; with `own` it is a new
    array the caller may overwrite."""
    if mc:
        return probs.mean(axis=-1, dtype=np.float64)
    return np.array(probs, dtype=np.float64, copy=True) if own else probs.astype(
        np.float64, copy=False
    )


def _least_confidence_map(probs: np.ndarray, mc: bool) -> np.ndarray:
    top = (probs.mean(axis=-1, dtype=np.float64) if mc else probs).max(axis=1)
    return 1.0 - top.astype(np.float64, copy=False)


def _margin_map(probs: np.ndarray, mc: bool) -> np.ndarray:
    mean = probs.mean(axis=-1, dtype=np.float64) if mc else probs
    top = mean.max(axis=1)
    # the runner-up: the second largest of the partition, in the input's dtype
    if mc:
        mean.partition(-2, axis=1)  # our own array: partition it in place
        second = mean[:, -2]
    else:
        second = np.partition(mean, -2, axis=1)[:, -2]
    return 1.0 - (top.astype(np.float64) - second.astype(np.float64))


def _entropy_map(probs: np.ndarray, mc: bool) -> np.ndarray:
    mean = _mean_map(probs, mc, own=True)
    return entr(mean, out=mean).sum(axis=1)


def _check_mc(probs: np.ndarray, mc: bool, what: str) -> None:
    if not mc or probs.shape[-1] < 2:
        raise ValueError(
            f"{what} needs Monte-Carlo samples, got shape {probs.shape}: pass "
            "(n, classes, H, W, n_samples) with n_samples >= 2 (see alpha.kinds.mc)."
        )


def _bald_map(probs: np.ndarray, mc: bool) -> np.ndarray:
    _check_mc(probs, mc, "BALD")
    samples = probs.shape[-1]
    expected = np.zeros((probs.shape[0], *probs.shape[2:-1]), dtype=np.float64)
    for t in range(samples):  # one float64 slice at a time, never the whole sample stack
        draw = probs[..., t].astype(np.float64)
        expected += entr(draw, out=draw).sum(axis=1)
    expected /= samples
    return np.maximum(_entropy_map(probs, mc) - expected, 0.0)


def _variation_ratio_map(probs: np.ndarray, mc: bool) -> np.ndarray:
    if not mc or probs.shape[-1] == 1:
        return _least_confidence_map(probs, mc)
    samples, n_classes = probs.shape[-1], probs.shape[1]
    vote_type = np.uint8 if n_classes <= 256 else np.int32
    votes = np.empty((probs.shape[0], *probs.shape[2:]), dtype=vote_type)  # (n, *spatial, T)
    for t in range(samples):
        votes[..., t] = probs[..., t].argmax(axis=1)
    modal = np.zeros(votes.shape[:-1], dtype=np.int32)
    for c in range(n_classes):
        np.maximum(modal, (votes == c).sum(axis=-1, dtype=np.int32), out=modal)
    return 1.0 - modal / samples


MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "bald": bald,
    "variation_ratio": variation_ratio,
}
"""Every measure by name; `bald` needs Monte-Carlo samples, the others take either layout
(and the spatial ones, with the `mc` keyword)."""
