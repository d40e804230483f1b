"""Seed labels from a COCO-style instances JSON (polygons or RLE), for the segment-id kinds.

COCO's object-detection format (`images`, `annotations`, `categories`) is how most existing
instance labels are kept. Each listed image becomes one segment-id mask: annotation k of the
image (in file order) is segment k, its category name the segment's class. Where two
annotations overlap, the later one keeps the shared pixels, the same rule as a pull from
Label Studio (alpha.kinds.objects.read_annotations). An image listed without annotations is
labeled "no objects", as COCO means it; an image of the folder that the file does not list
stays in the pool. pycocotools rasterises the polygons and decodes the RLE.

Problems are reported per image and the image is ingested unlabeled (nothing of it is
guessed): an unknown category, a malformed segmentation, a box without a mask, a crowd
region (alpha's object masks have no "ignore" area to put it in), or a size that is not the
image's.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alpha.errors import AlphaError, AnnotationError


@dataclass
class CocoImage:
    """One entry of the file's `images`, with its annotations in file order; `problem` says
    why the image cannot be labeled from the file (it is then ingested unlabeled)."""

    file_name: str
    width: int
    height: int
    annotations: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def read_coco(path: Path, labels: list[str]) -> tuple[dict[str, CocoImage], list[str]]:
    """({NFC file name: CocoImage}, problems) from a COCO instances JSON.

    A file that is not such a JSON stops the ingest before any upload (AlphaError naming the
    fix), like a label CSV that cannot be parsed. Annotations whose category is unknown, or
    named other than task.labels, mark their image with a problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AlphaError(f"COCO file {path} cannot be read ({type(error).__name__}: {error}): "
                         "give a COCO instances JSON (images, annotations, categories).") from None
    if not isinstance(data, dict) or not all(
            isinstance(data.get(part), list) for part in ("images", "annotations", "categories")):
        raise AlphaError(f"COCO file {path} is not a COCO instances JSON: it needs the lists "
                         "'images', 'annotations' and 'categories'.")
    names, problems = _categories(data["categories"], labels, path.name)
    images: dict[int, CocoImage] = {}
    for number, entry in enumerate(data["images"]):
        try:
            ident, image = int(entry["id"]), CocoImage(
                str(entry["file_name"]), int(entry["width"]), int(entry["height"]))
        except (TypeError, KeyError, ValueError):
            problems.append(f"{path.name}: images[{number}] needs an integer id, a file_name, "
                            "a width and a height: fix the entry (its image stays unlabeled).")
            continue
        images[ident] = image
    for number, ann in enumerate(data["annotations"]):
        image = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if image is None:
            problems.append(f"{path.name}: annotations[{number}] names no listed image "
                            "(image_id): fix its image_id or add the image to 'images'.")
            continue
        category = names.get(ann.get("category_id"))
        if category is None:
            image.problem = image.problem or (
                f"COCO annotation {ann.get('id', number)} of {image.file_name!r} has the "
                f"category id {ann.get('category_id')!r}, which is not in 'categories' or "
                "not one of task.labels: fix the category, or add it to task.labels.")
            continue
        image.annotations.append({**ann, "label": category})
    by_name: dict[str, CocoImage] = {}
    for image in images.values():
        name = unicodedata.normalize("NFC", image.file_name)
        if name in by_name:
            problems.append(f"{path.name}: {image.file_name!r} is listed twice in 'images': "
                            "merge the two entries; until then the image is unlabeled.")
            by_name[name].problem = f"{image.file_name!r} is listed twice in {path.name}."
            continue
        by_name[name] = image
    return by_name, problems


def _categories(entries: list[Any], labels: list[str], where: str
                ) -> tuple[dict[int, str], list[str]]:
    """{category id: name} for the categories named like one of `labels`; the others are
    reported (their annotations then mark their image as a problem)."""
    names: dict[int, str] = {}
    problems: list[str] = []
    for entry in entries:
        try:
            ident, name = int(entry["id"]), str(entry["name"])
        except (TypeError, KeyError, ValueError):
            problems.append(f"{where}: category {entry!r} needs an integer id and a name.")
            continue
        if name in labels:
            names[ident] = name
        else:
            problems.append(f"{where}: category {name!r} is not one of task.labels "
                            f"({', '.join(labels)}): images with it stay unlabeled; rename "
                            "the category or add it to task.labels.")
    return names, problems


def coco_segments(image: CocoImage, size: tuple[int, int]
                  ) -> tuple[np.ndarray, dict[int, str]]:
    """(segment ids uint16 `(H, W)`, {id: label}) of one listed image, at the image file's
    `size` (width, height): annotation k is id k. An object painted over entirely, or empty,
    keeps its class but no pixel; the kind's seed_target numbers only the ids present.
    AnnotationError naming the image and the fix."""
    from pycocotools import mask as coco_mask

    name = image.file_name
    if image.problem:
        raise AnnotationError(image.problem)
    width, height = size
    if (image.width, image.height) != (width, height):
        raise AnnotationError(
            f"COCO lists {name!r} as {image.width}x{image.height} but the image is "
            f"{width}x{height}: fix the width and height in 'images' (and its masks).")
    ids = np.zeros((height, width), dtype=np.uint16)
    classes: dict[int, str] = {}
    for ann in image.annotations:
        which = f"COCO annotation {ann.get('id', '?')} of {name!r}"
        if ann.get("iscrowd"):
            raise AnnotationError(
                f"{which} is a crowd region (iscrowd = 1): alpha's object masks have no "
                "'ignore' area for it; split it into objects or drop it from the file.")
        segmentation = ann.get("segmentation")
        if not segmentation:
            raise AnnotationError(f"{which} has no segmentation (a box alone is not a mask): "
                                  "give its polygon or RLE, or drop it.")
        try:
            if isinstance(segmentation, list):
                if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                           and all(isinstance(v, int | float) for v in p)
                           for p in segmentation):
                    raise ValueError("polygons must be lists of x, y numbers, 3 points or more")
                rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation, dict) and "counts" in segmentation:
                if list(segmentation.get("size", ())) != [height, width]:
                    raise ValueError(f"its RLE size {segmentation.get('size')} is not "
                                     f"[{height}, {width}]")
                rle = (coco_mask.frPyObjects(segmentation, height, width)
                       if isinstance(segmentation["counts"], list) else segmentation)
            else:
                raise ValueError("it is neither a polygon list nor an RLE")
            pixels = coco_mask.decode(rle).astype(bool)
        except (ValueError, TypeError, OverflowError) as error:
            raise AnnotationError(
                f"{which} has a malformed segmentation ({error}): fix it (polygons "
                "[[x1, y1, x2, y2, ...]] or RLE {size, counts}).") from None
        segment = len(classes) + 1
        ids[pixels] = segment  # the later annotation keeps the shared pixels
        classes[segment] = ann["label"]
    return ids, classes
