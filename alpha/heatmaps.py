"""Uncertainty maps as images an annotator can read: where the model is unsure.

Label Studio predictions cannot carry image layers, so a map is a second, unlabeled image in
the task (STACK.md): a PNG in the bucket that the task's data points to.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Anchors of matplotlib's "inferno" (perceptually uniform, readable in grey, colour-blind
# safe): dark = sure, bright yellow = unsure.
_ANCHORS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                    dtype=np.float64)


def heatmap_rgb(values: np.ndarray) -> np.ndarray:
    """RGB uint8 `(H, W, 3)` of a map `(H, W)` of values in [0, 1] (clipped; NaN reads 0)."""
    values = np.nan_to_num(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0))
    if values.ndim != 2:
        raise ValueError(f"a heatmap is 2-D (H, W), got shape {values.shape}")
    channels = [np.interp(values, _ANCHORS, _COLOURS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def heatmap_png(values: np.ndarray) -> bytes:
    """PNG bytes of `heatmap_rgb(values)`."""
    buffer = io.BytesIO()
    Image.fromarray(heatmap_rgb(values)).save(buffer, format="PNG")
    return buffer.getvalue()
