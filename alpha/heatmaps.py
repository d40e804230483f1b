"""Uncertainty maps as images an annotator can read: where the model is unsure.

Label Studio predictions cannot carry image layers, so a map is a second, unlabeled image in
the task (STACK.md): a PNG in the bucket that the task's data points to.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image


@cache
def _lut() -> np.ndarray:
    """The 256 colours of the map, darkest (sure) first, `(256, 3)` uint8: matplotlib's
    "inferno" (perceptually uniform, readable in grey, colour-blind safe), imported only
    when a map is drawn."""
    from matplotlib import colormaps

    return np.rint(colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def heatmap_levels(values: np.ndarray) -> np.ndarray:
    """uint8 levels `(H, W)` (0 sure .. 255 unsure) of a map of values in [0, 1] (clipped;
    NaN reads 0)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"a heatmap is 2-D (H, W), got shape {values.shape}")
    return np.rint(np.nan_to_num(np.clip(values, 0.0, 1.0)) * 255).astype(np.uint8)


def heatmap_rgb(values: np.ndarray) -> np.ndarray:
    """RGB uint8 `(H, W, 3)` of a map `(H, W)` of values in [0, 1]: what heatmap_png shows."""
    return _lut()[heatmap_levels(values)]


def heatmap_png(values: np.ndarray) -> bytes:
    """A palette PNG of the map (one byte per pixel, the 256 colours of _lut): several times
    smaller and faster to write than RGB."""
    image = Image.fromarray(heatmap_levels(values), mode="P")
    image.putpalette(_lut().tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
