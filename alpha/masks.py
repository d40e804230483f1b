"""Masks as arrays, PNG bytes and Label Studio regions, for every segmentation kind.

A mask is a 2-D array `(H, W)` at its image's own pixel size: class indices (uint8) for
semantic segmentation, instance ids (uint16) for instance and panoptic segmentation. In the
bucket it is a lossless single-channel PNG beside the label record (`labels/{image_id}.png`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def mask_problem(mask: np.ndarray | None, values: str) -> str | None:
    """Why a stored target's mask is not a 2-D array of integer `values` ("class indices",
    "segment ids"), phrased to follow "the label of <image> ..."; None when it is one."""
    if mask is None:
        return "labeled but has no mask"
    mask = np.asarray(mask)
    if mask.ndim != 2:
        return f"has a mask of shape {mask.shape}, not (height, width)"
    if not np.issubdtype(mask.dtype, np.integer):
        return f"has a mask of {mask.dtype} values, not {values}"
    return None


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


# ---- Label Studio regions: brush RLE and polygons ------------------------------------------
# A brush region's mask is Label Studio's RLE of an RGBA image at the image's own pixel size
# (label_studio_sdk.converter.brush); the mask is its alpha channel. Masks are painted with
# 0/255: the editor keeps the decoded alpha, so 0/1 would render almost invisible. Polygon
# points are in percent of the image's width and height.

POLYGON_TOLERANCE = 0.5
"""How far (in percent of the image) a polygon point may lie outside it: the editor lets a
point land a hair past the border."""

_FIX = "fix the annotation in Label Studio"


def brush_region(
    mask: np.ndarray, label: str, from_name: str, to_name: str, score: float | None = None,
    region_id: str | None = None,
) -> dict:
    """A `brushlabels` result painting the True pixels of a bool mask `(H, W)` as `label`."""
    from label_studio_sdk.converter.brush import mask2rle

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a brush mask is 2-D (H, W), got shape {mask.shape}")
    height, width = mask.shape
    region: dict = {
        "from_name": from_name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {
            "format": "rle",
            "rle": mask2rle(np.where(mask.astype(bool), 255, 0).astype(np.uint8)),
            "brushlabels": [label],
        },
    }
    if region_id is not None:
        region["id"] = region_id
    if score is not None:
        region["score"] = float(score)
    return region


def polygon_region(
    points_percent: np.ndarray, label: str, from_name: str, to_name: str,
    size: tuple[int, int], score: float | None = None, region_id: str | None = None,
) -> dict:
    """A closed `polygonlabels` result with points `(k, 2)` (x, y) in percent of `size`
    (width, height)."""
    points = np.asarray(points_percent, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 (x, y) points, got shape {points.shape}")
    region: dict = {
        "from_name": from_name,
        "to_name": to_name,
        "type": "polygonlabels",
        "original_width": int(size[0]),
        "original_height": int(size[1]),
        "image_rotation": 0,
        "value": {"points": points.tolist(), "polygonlabels": [label], "closed": True},
    }
    if region_id is not None:
        region["id"] = region_id
    if score is not None:
        region["score"] = float(score)
    return region


def region_size(region: dict, name: str) -> tuple[int, int]:
    """(width, height) of the image a region was drawn on; AnnotationError naming `name`."""
    width, height = region.get("original_width"), region.get("original_height")
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) and v == int(v) and v > 0
             for v in (width, height))
    if not ok:
        raise AnnotationError(
            f"{name} has no valid original_width/original_height (got {width!r} x {height!r}): "
            f"{_FIX} (Label Studio records the image size with every region)."
        )
    return int(width), int(height)  # type: ignore[arg-type]


def decode_brush(value: object, width: int, height: int, name: str) -> np.ndarray:
    """The bool mask `(H, W)` a brush region's `value` ({"format": "rle", "rle": [...]})
    paints; AnnotationError naming `name` when the RLE is malformed or of another size.

    The RLE's header (its first 32 bits) says how many values it holds; it must be
    width * height * 4 (RGBA), checked before decoding so garbage cannot ask for gigabytes.
    """
    from label_studio_sdk.converter.brush import decode_rle

    if not isinstance(value, dict):
        raise AnnotationError(f"{name} has no value with a mask: {_FIX}.")
    if value.get("format", "rle") != "rle":
        raise AnnotationError(
            f"{name} has mask format {value.get('format')!r}, not 'rle': {_FIX}."
        )
    rle = value.get("rle")
    if not isinstance(rle, list | tuple) or not rle:
        raise AnnotationError(f"{name} has no RLE mask (value.rle is {_type(rle)}): {_FIX}.")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in rle):
        bad = next(v for v in rle if not isinstance(v, int) or isinstance(v, bool))
        raise AnnotationError(
            f"{name} has a malformed RLE: it holds {_type(bad)} values, not integers: {_FIX}."
        )
    try:
        data = bytes(rle)
    except ValueError:
        raise AnnotationError(
            f"{name} has a malformed RLE: values outside 0..255: {_FIX}."
        ) from None
    expected = width * height * 4
    count = int.from_bytes(data[:4], "big") if len(data) >= 7 else None
    word_size = (data[4] >> 3) + 1 if len(data) >= 7 else None
    if count != expected:
        said = "is too short to hold a mask" if count is None else f"holds {count} values"
        raise AnnotationError(
            f"{name} has a malformed RLE: it {said}, but a {width}x{height} image needs "
            f"{expected} (RGBA): {_FIX} (or its original_width/original_height)."
        )
    if word_size is not None and word_size > 8:
        raise AnnotationError(
            f"{name} has a malformed RLE: {word_size}-bit values, not 8-bit: {_FIX}."
        )
    try:
        decoded = decode_rle(data)
    except (ValueError, IndexError, TypeError):
        raise AnnotationError(
            f"{name} has a malformed RLE: it ends before its {expected} values: {_FIX}."
        ) from None
    return decoded.reshape(height, width, 4)[:, :, 3] > 0


def rasterize_polygon(
    points_percent: object, width: int, height: int, name: str,
    tolerance: float = POLYGON_TOLERANCE,
) -> np.ndarray:
    """The bool mask `(H, W)` of a polygon with points [[x%, y%], ...] (percent of the image):
    the pixels whose centre lies inside (even-odd rule), so a polygon along pixel edges gives
    exactly those pixels and two polygons sharing an edge never share a pixel.
    AnnotationError naming `name` for fewer than 3 points, points that are not numbers or lie
    outside the image (beyond `tolerance` percent).

    Not PIL.ImageDraw.polygon: it floors the vertices and fills every pixel the outline
    touches, which grows a polygon by up to a pixel on its right and bottom (measured: 21 %
    of the pixels of small random polygons differed from the pixel-centre rule).
    """
    try:
        points = np.asarray(points_percent, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(
            f"{name} has points that are not [x, y] numbers: {_FIX}."
        ) from None
    if points.ndim == 1 and points.size == 0:
        points = points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise AnnotationError(f"{name} has points that are not [x, y] pairs: {_FIX}.")
    if len(points) < 3:
        raise AnnotationError(
            f"{name} has {len(points)} point(s); a polygon needs at least 3: {_FIX}."
        )
    if not np.isfinite(points).all():
        raise AnnotationError(f"{name} has points that are not finite numbers: {_FIX}.")
    low, high = float(points.min()), float(points.max())
    if low < -tolerance or high > 100 + tolerance:
        raise AnnotationError(
            f"{name} has points outside the image ({low:.1f}..{high:.1f} %, not 0..100 %): "
            f"{_FIX}."
        )
    return _polygon_mask(points, width, height)


def _polygon_mask(points_percent: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scanline fill at pixel centres: row i crosses the edges at y = i + 0.5 (an edge
    counts when its ends lie on different sides, its lower end inclusive, so a vertex on the
    line is counted once), and the pixels whose centres lie between pairs of crossings are
    inside."""
    xy = points_percent / 100.0 * np.array([width, height], dtype=np.float64)
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    centre = (np.arange(height, dtype=np.float64) + 0.5)[:, None]  # (H, 1)
    crosses = (y0 <= centre) != (y1 <= centre)  # (H, edges); never true for a flat edge
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x0 + (centre - y0) * (x1 - x0) / (y1 - y0)
    at = np.sort(np.where(crosses, at, np.inf), axis=1)
    if at.shape[1] % 2:
        at = np.concatenate([at, np.full((height, 1), np.inf)], axis=1)
    starts, ends = at[:, 0::2], at[:, 1::2]
    rows, pair = np.nonzero(np.isfinite(ends))
    first = np.clip(np.ceil(starts[rows, pair] - 0.5), 0, width).astype(np.intp)
    stop = np.clip(np.ceil(ends[rows, pair] - 0.5), 0, width).astype(np.intp)
    edges = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(edges, (rows, first), 1)
    np.add.at(edges, (rows, stop), -1)
    return np.cumsum(edges, axis=1)[:, :width] > 0


def _type(value: object) -> str:
    return type(value).__name__


# ---- reading one annotation's regions ------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """One region an annotation (or prediction) draws: the tool it came from (`from_name`),
    its single label, and its pixels, a bool mask `(H, W)` at the image's own size."""

    tag: str
    label: str
    pixels: np.ndarray


def read_regions(
    result: Any, tags: Mapping[tuple[str, str], Sequence[str]], to_name: str, what: str,
    task_labels: Sequence[str], *, allow_empty: bool = False,
) -> tuple[list[Region], tuple[int, int] | None]:
    """The regions of one annotation's `result`, in result order, and the (width, height)
    they were drawn at (None for an empty result).

    `tags` maps each declared (type, from_name) pair — ("brushlabels", "label"),
    ("polygonlabels", "polygon") — to the labels that tool takes; `task_labels` are all of
    the task's labels (a label outside them is unknown; one inside them but not taken by its
    tool is misplaced). Brush regions decode from their RLE, polygons rasterise at pixel
    centres. AnnotationError names the region (`what`, region k) and what is wrong: a region
    type or tool the config does not declare, another image name, not exactly one label,
    an unknown or misplaced label, regions drawn at different sizes, a malformed mask. An
    empty result is an error unless `allow_empty` (a prediction with no region)."""
    if not isinstance(result, list):
        raise AnnotationError(f"{what} has a result of type {type(result).__name__}, not a "
                              f"list of regions: {_FIX}.")
    if not result and not allow_empty:
        raise AnnotationError(
            f"{what} has an empty result (nothing drawn): paint or outline the regions in "
            "Label Studio (an empty result says neither the classes nor the image size), or "
            "skip the task."
        )
    declared = " and ".join(f"{kind} from {source!r}" for kind, source in tags)
    regions: list[Region] = []
    sizes: set[tuple[int, int]] = set()
    for number, region in enumerate(result, start=1):
        name = f"{what}, region {number}"
        if not isinstance(region, dict):
            raise AnnotationError(f"{name} is a {type(region).__name__}, not a region: {_FIX}.")
        kind, source = region.get("type"), region.get("from_name")
        if (kind, source) not in tags:
            raise AnnotationError(
                f"{name} is a {kind!r} region from {source!r}, which the label config does not "
                f"declare (it has {declared}): {_FIX} or the project's label config."
            )
        if region.get("to_name", to_name) != to_name:
            raise AnnotationError(f"{name} points at {region.get('to_name')!r}, not at "
                                  f"{to_name!r}: {_FIX}.")
        value = region.get("value")
        if not isinstance(value, dict):
            raise AnnotationError(f"{name} has no value: {_FIX}.")
        names = value.get(kind)
        if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
            raise AnnotationError(
                f"{name} names {len(names) if isinstance(names, list) else 'no'} labels; a "
                f"region takes exactly one: {_FIX}."
            )
        label = names[0]
        shown = label if len(label) <= 40 else label[:40] + "..."
        if label not in task_labels:
            raise AnnotationError(
                f"{name} has label {shown!r}, which is not one of the task's labels: add it to "
                f"task.labels or {_FIX}."
            )
        allowed = tags[(kind, source)]
        if label not in allowed:
            raise AnnotationError(
                f"{name} has label {shown!r} in the {source!r} tool, which takes only "
                f"{', '.join(allowed)}: {_FIX} (draw it with the tool that has its label)."
            )
        width, height = region_size(region, name)
        sizes.add((width, height))
        if len(sizes) > 1:
            raise AnnotationError(
                f"{name} was drawn on a {width}x{height} image, unlike the regions before it: "
                f"{_FIX}."
            )
        pixels = (
            decode_brush(value, width, height, name)
            if kind == "brushlabels"
            else rasterize_polygon(value.get("points"), width, height, name)
        )
        regions.append(Region(tag=str(source), label=label, pixels=pixels))
    return regions, (sizes.pop() if sizes else None)
