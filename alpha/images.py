"""Turning image bytes from the bucket into arrays a model can take.

The pool is the user's data: some files will be truncated, corrupt, not images at all, or
decompression bombs. One bad file must never stop a round, so every failure becomes an
ImageError that names the file and the cause, and the batch helpers skip and report instead
of raising.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from alpha.errors import ImageError

ACCEPTED_FORMATS = ("PNG", "JPEG")
_MODES = {1: "L", 3: "RGB"}


def _cause(error: BaseException) -> str:
    """A short human cause for a Pillow failure, so messages read the same for every format."""
    text = str(error).lower()
    if isinstance(error, UnidentifiedImageError):
        return "not a PNG or JPEG image"
    if isinstance(error, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"decompression bomb: {error}"
    if "truncated" in text or isinstance(error, EOFError):
        return "truncated file"
    if any(word in text for word in ("broken", "crc", "corrupt", "invalid", "bad ")):
        return f"corrupt file: {error}"
    return f"{type(error).__name__}: {error}" if text else type(error).__name__


def _open(data: bytes, name: str) -> Image.Image:
    """Open lazily, refusing empty input and images over Pillow's pixel limit.

    The bomb warning is made an error here, and the size is checked again by hand, because
    `warnings` filters are process-wide and another thread may have changed them.
    """
    if not data:
        raise ImageError(f"Image {name!r} cannot be read (empty file): replace or remove it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Exception as error:  # Pillow raises many types for hostile input
        raise ImageError(
            f"Image {name!r} cannot be read ({_cause(error)}): replace or remove it."
        ) from None
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageError(
            f"Image {name!r} cannot be read (decompression bomb: {width}x{height} pixels is "
            f"over the limit of {limit}): replace or remove it."
        )
    return image


def _load(image: Image.Image, name: str) -> None:
    """Decode every pixel now, so a truncated file fails here and not inside the model."""
    try:
        image.load()
    except Exception as error:
        raise ImageError(
            f"Image {name!r} cannot be read ({_cause(error)}): replace or remove it."
        ) from None


def check_image_bytes(data: bytes, name: str) -> tuple[str, tuple[int, int]]:
    """Verify an image fully before it enters the bucket; return (format, (width, height))."""
    image = _open(data, name)
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise ImageError(
                f"Image {name!r} is {image.format or 'of an unknown format'}, not PNG or JPEG: "
                "convert it to PNG or JPEG."
            )
        _load(image, name)
        return image.format, image.size


def decode_image(data: bytes, name: str, size: int, channels: int) -> np.ndarray:
    """Decode to float32 (channels, size, size) in [0, 1], the layout the models expect."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    mode = _MODES[channels]
    image = _open(data, name)
    with image:
        # JPEG can decode at a reduced scale directly: much faster for large photos.
        image.draft(mode, (size, size))
        _load(image, name)
        try:
            converted = image.convert(mode)
            if converted.size != (size, size):
                converted = converted.resize((size, size), Image.Resampling.BILINEAR)
        except Exception as error:
            raise ImageError(
                f"Image {name!r} cannot be read ({_cause(error)}): replace or remove it."
            ) from None
    array = np.asarray(converted, dtype=np.float32) / 255.0
    if array.ndim == 2:
        return array[np.newaxis]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_batch(
    blobs: Sequence[bytes], names: Sequence[str], size: int, channels: int
) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode what can be decoded; return (images, indices that decoded, error messages).

    Never raises for a bad image: a corrupt file in the pool is reported, not fatal.
    """
    if len(blobs) != len(names):
        raise ValueError(f"got {len(blobs)} images but {len(names)} names")
    arrays: list[np.ndarray] = []
    good: list[int] = []
    errors: list[str] = []
    for index, (data, name) in enumerate(zip(blobs, names, strict=True)):
        try:
            arrays.append(decode_image(data, name, size, channels))
        except ImageError as error:
            errors.append(str(error))
        else:
            good.append(index)
    if not arrays:
        return np.empty((0, channels, size, size), dtype=np.float32), good, errors
    return np.stack(arrays), good, errors
