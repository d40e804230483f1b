"""Masks as arrays, PNG bytes and Label Studio regions, for every segmentation kind.

A mask is a 2-D array `(H, W)` at its image's own pixel size: class indices (uint8) for
semantic segmentation, instance ids (uint16) for instance and panoptic segmentation. In the
bucket it is a lossless single-channel PNG beside the label record (`labels/{image_id}.png`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from alpha.errors import AnnotationError


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Lossless PNG of a 2-D mask: 8-bit grey for values < 256, else 16-bit grey."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise ValueError("mask values must lie in 0..65535")
    wide = mask.size > 0 and mask.max() > 255
    image = Image.fromarray(mask.astype(np.uint16 if wide else np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def decode_mask_png(data: bytes, name: str) -> np.ndarray:
    """The 2-D mask a PNG holds (uint8, or uint16 for 16-bit PNGs); AnnotationError naming
    `name` when it is not a single-channel PNG."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise ValueError(f"it is {image.format or 'not an image'}, not PNG")
            if image.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I", "1"):
                raise ValueError(
                    f"it has mode {image.mode} (colour); a mask is one channel of class "
                    "indices or instance ids"
                )
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise AnnotationError(
            f"Mask {name!r} cannot be read ({error}): save it as a single-channel PNG of "
            "class indices (or instance ids)."
        ) from None
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype not in (np.uint8, np.uint16):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise AnnotationError(f"Mask {name!r} holds values outside 0..65535.")
        array = array.astype(np.uint16)
    return np.ascontiguousarray(array)
