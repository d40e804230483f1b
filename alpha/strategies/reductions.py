"""Pixel (or object) score maps -> one score per image.

A segmentation measure gives a map `(n, *spatial)` (alpha.strategies.measures on
`(n, classes, H, W[, T])`); selection ranks images, so a named reduction turns each map into
one float64 score, as baal's heuristics reduce theirs:

- `mean`: the mean over pixels; favours images that are unsure everywhere.
- `topk`: the mean of the `top_percent` % most uncertain pixels (at least one); favours
  images with a clearly unsure region even when most of the image is easy (sky, road).
- `class_weighted`: the mean weighted by the weight of each pixel's predicted class
  (`class_weights`, e.g. inverse training frequencies from `inverse_frequency_weights`), so
  uncertainty on rare classes counts more than on the background.
- `max`: the single most uncertain pixel (noisy: one odd pixel decides).
- `sum`: the total; ranks like `mean` when every map has the same size, unlike it when
  `ignore` leaves different numbers of pixels.

`ignore` (bool, True = leave the pixel out) masks pixels that should not count, such as
padding; an image with no pixel left scores 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Reduction = Literal["mean", "topk", "class_weighted", "max", "sum"]
REDUCTIONS: tuple[str, ...] = ("mean", "topk", "class_weighted", "max", "sum")
"""Every reduction `reduce_map` knows, by name."""


def reduce_map(
    maps: np.ndarray,
    how: str,
    *,
    top_percent: float = 10.0,
    predicted: np.ndarray | None = None,
    class_weights: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
) -> np.ndarray:
    """One float64 score per image `(n,)` from score maps `(n, *spatial)`.

    `top_percent` in (0, 100] is topk's share of pixels. `predicted` `(n, *spatial)` int
    class map and `class_weights` `(classes,)` are class_weighted's. `ignore` is a bool mask
    of `maps`' shape (or one spatial mask broadcast to every image): True pixels do not count.
    """
    if how not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {how!r}: choose one of {', '.join(REDUCTIONS)}.")
    maps = np.asarray(maps)
    if maps.ndim < 1:
        raise ValueError("maps must be (n, *spatial): one map per image")
    n = maps.shape[0]
    flat = maps.reshape(n, int(np.prod(maps.shape[1:], dtype=np.int64)))
    valid = None
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        try:
            ignore = np.broadcast_to(ignore, maps.shape)
        except ValueError:
            raise ValueError(
                f"ignore has shape {ignore.shape}, not the maps' {maps.shape}"
            ) from None
        valid = ~ignore.reshape(n, -1)
        if valid.all():
            valid = None
    if flat.shape[1] == 0 or n == 0:
        return np.zeros(n, dtype=np.float64)
    if how == "mean":
        return _weighted_mean(flat, valid.astype(np.float64) if valid is not None else None)
    if how == "sum":
        return flat.sum(axis=1, dtype=np.float64, where=valid if valid is not None else True)
    if how == "max":
        if valid is None:
            return flat.max(axis=1).astype(np.float64)
        best = np.max(flat, axis=1, where=valid, initial=-np.inf).astype(np.float64)
        return np.where(np.isfinite(best), best, 0.0)
    if how == "topk":
        return _top_mean(flat, valid, top_percent)
    # class_weighted
    if predicted is None or class_weights is None:
        raise ValueError(
            "the class_weighted reduction needs `predicted` (each pixel's class) and "
            "`class_weights` (one weight per class)"
        )
    predicted = np.asarray(predicted)
    if predicted.shape != maps.shape:
        raise ValueError(f"predicted has shape {predicted.shape}, not the maps' {maps.shape}")
    weights = np.asarray(class_weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0 or (weights < 0).any():
        raise ValueError("class_weights must be one non-negative weight per class")
    classes = predicted.reshape(n, -1)
    if classes.size and (classes.min() < 0 or classes.max() >= len(weights)):
        raise ValueError(
            f"predicted holds classes {classes.min()}..{classes.max()} but class_weights has "
            f"{len(weights)}"
        )
    pixel_weights = weights[classes]
    if valid is not None:
        pixel_weights *= valid
    return _weighted_mean(flat, pixel_weights)


def _weighted_mean(flat: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return flat.mean(axis=1, dtype=np.float64)
    total = weights.sum(axis=1)
    weighted = np.einsum("np,np->n", flat.astype(np.float64, copy=False), weights)
    return np.divide(weighted, total, out=np.zeros(len(flat)), where=total > 0)


def _top_mean(flat: np.ndarray, valid: np.ndarray | None, top_percent: float) -> np.ndarray:
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must lie in (0, 100], got {top_percent}")
    n, pixels = flat.shape
    if valid is None:
        k = max(1, int(np.ceil(pixels * top_percent / 100.0)))
        top = np.partition(flat, pixels - k, axis=1)[:, pixels - k :]
        return top.mean(axis=1, dtype=np.float64)
    out = np.zeros(n, dtype=np.float64)
    for i in range(n):  # each image keeps its own number of pixels
        values = flat[i][valid[i]]
        if len(values):
            k = max(1, int(np.ceil(len(values) * top_percent / 100.0)))
            out[i] = np.partition(values, len(values) - k)[len(values) - k :].mean(
                dtype=np.float64
            )
    return out


def inverse_frequency_weights(frequencies: np.ndarray) -> np.ndarray:
    """Class weights ~ 1 / frequency, summing to 1, for the class_weighted reduction.

    A class never seen (frequency 0) gets the rarest seen class's weight: the model seldom
    predicts it, and where it does that is worth a look. No frequencies at all: uniform.
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    if freq.ndim != 1 or len(freq) == 0 or (freq < 0).any() or not np.isfinite(freq).all():
        raise ValueError("frequencies must be one non-negative number per class")
    seen = freq > 0
    if not seen.any():
        return np.full(len(freq), 1.0 / len(freq))
    freq = np.where(seen, freq, freq[seen].min())
    weights = 1.0 / freq
    return weights / weights.sum()
