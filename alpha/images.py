"""Turning image bytes from the bucket into arrays a model can take.

The pool is the user's data: some files will be truncated, corrupt, not images at all, or
decompression bombs. One bad file must never stop a round, so every failure becomes an
ImageError that names the file and the cause, and the batch helpers skip and report instead
of raising.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from alpha.errors import ImageError

# MPO is how Pillow names a JPEG with extra frames (many phone and camera photos): browsers
# show its first frame, and so does the model.
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO")
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg"}
# Pillow's default bomb limit, kept here too: a library that sets Image.MAX_IMAGE_PIXELS to
# None (some do, to open big scans) must not switch off alpha's protection.
MAX_PIXELS = 89_478_485
_MODES = {1: "L", 3: "RGB"}
_HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grey PNG
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_BACKGROUND = (255, 255, 255, 255)  # white, like image viewers behind transparent pixels


def _cause(error: BaseException) -> str:
    """A short human cause for a Pillow failure, so messages read the same for every format."""
    text = str(error).lower()
    if isinstance(error, UnidentifiedImageError):
        return "not a PNG or JPEG image"
    if "too large" in text:  # a PNG text chunk that inflates past Pillow's limit
        return "decompression bomb: a metadata chunk inflates past Pillow's limit"
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
    limit = _pixel_limit()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise _bomb(name, f"{found.group(1) if found else 'too many'} pixels", limit) from None
    except Exception as error:  # Pillow raises many types for hostile input
        raise ImageError(
            f"Image {name!r} cannot be read ({_cause(error)}): replace or remove it."
        ) from None
    width, height = image.size
    if width * height > limit:
        image.close()
        raise _bomb(name, f"{width}x{height} pixels", limit)
    return image


def _bomb(name: str, size: str, limit: int) -> ImageError:
    """The error for an image that declares more pixels than may be decoded: decoding it
    would take gigabytes, so it is refused from its header, before any pixel is read."""
    return ImageError(
        f"Image {name!r} cannot be read (decompression bomb: {size} is over the limit of "
        f"{limit} pixels): downscale it below {limit} pixels or remove it."
    )


def _pixel_limit() -> int:
    """The smaller of Pillow's limit (tests and users may lower it) and alpha's own."""
    pillow = Image.MAX_IMAGE_PIXELS
    return MAX_PIXELS if pillow is None else min(int(pillow), MAX_PIXELS)


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


Size = int | tuple[int, int]
"""A model input size: one side of a square, or (width, height)."""


def as_width_height(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image that decodes (read from its header only)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def decode_image(data: bytes, name: str, size: Size, channels: int) -> np.ndarray:
    """Decode to float32 (channels, height, width) in [0, 1], the layout the models expect.

    `size` is one side of a square or (width, height). Exactly `decode_pixels(...) / 255`,
    so pixels kept as uint8 (alpha.pool_cache) give the model the same floats.
    """
    return to_float(decode_pixels(data, name, size, channels))


def decode_pixels(data: bytes, name: str, size: Size, channels: int) -> np.ndarray:
    """Decode to uint8 (channels, height, width) at `size`: what a model sees before the
    scaling to [0, 1], a quarter of its bytes (what the pool cache keeps)."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    mode = _MODES[channels]
    wanted = as_width_height(size)
    image = _open(data, name)
    with image:
        # JPEG can decode at a reduced scale directly: much faster for large photos.
        image.draft(mode, wanted)
        _load(image, name)
        try:
            converted = _to_mode(image, mode)
            if converted.size != wanted:
                converted = converted.resize(wanted, Image.Resampling.BILINEAR)
        except Exception as error:
            raise ImageError(
                f"Image {name!r} cannot be read ({_cause(error)}): replace or remove it."
            ) from None
    array = np.asarray(converted, dtype=np.uint8)
    if array.ndim == 2:
        return array[np.newaxis]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels `(..., C, H, W)` as the float32 in [0, 1] the models take."""
    return np.asarray(pixels, dtype=np.float32) / 255.0


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any PNG/JPEG mode to `mode` ("L" or "RGB") the way a person sees the image.

    Pillow's plain `convert` gets two kinds wrong for a model: 16-bit grey is clipped at 255
    (a dark 16-bit scan turns almost white), and transparency is dropped, so the colour
    hidden under transparent pixels (often black, sometimes garbage) reaches the model. Here
    16 bits are scaled to 8, and transparent pixels are laid over a white background. CMYK,
    palette, 1-bit and the rest convert as Pillow does.
    """
    if image.mode in _HIGH_BIT_DEPTH:
        pixels = np.asarray(image, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, _BACKGROUND), rgba)
    return image.convert(mode)


def decode_batch(
    blobs: Sequence[bytes], names: Sequence[str], size: Size, channels: int
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
        width, height = as_width_height(size)
        return np.empty((0, channels, height, width), dtype=np.float32), good, errors
    return np.stack(arrays), good, errors
