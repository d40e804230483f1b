"""Copy a folder of images, and optionally known labels (a CSV, or mask PNGs), into the bucket.

The known labels become the seed set; every other image is the unlabeled pool. For
classification they come from a CSV (`filename,label`); for a mask kind from a folder of mask
PNGs mirroring the image folder (images/a/b.jpg <-> masks/a/b.png), or, for instance and
panoptic, from a COCO instances JSON (alpha.coco). A bad image, a bad CSV row or a bad mask is
reported by name and skipped: one broken file never stops the rest. Re-running is safe: keys
are stable, an image already uploaded with the same bytes is not sent again, one with other
bytes under the same name is refused rather than swapped under its labels, an unchanged seed
mask is not written again, and a seed label never overwrites a label that came from Label
Studio.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alpha.coco import CocoImage, coco_segments, read_coco
from alpha.config import Settings
from alpha.errors import AlphaError, AnnotationError, ConfigError, ImageError
from alpha.images import CONTENT_TYPES, check_image_bytes
from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.masks import decode_mask_png
from alpha.records import LabelRecord, read_record, upsert_record
from alpha.store import IMAGE_SUFFIXES, Store


@dataclass
class IngestReport:
    uploaded: int = 0
    already_present: int = 0
    seed_labels: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"ingested {self.uploaded} new images ({self.already_present} already in the "
            f"bucket), {self.seed_labels} seed labels, {len(self.problems)} problems"
        )


def find_images(folder: Path) -> list[str]:
    """Image files under `folder`, as sorted relative POSIX paths."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


def read_label_csv(path: Path, labels: list[str]) -> tuple[dict[str, str], list[str]]:
    """`filename,label` rows (a header row is optional) -> {filename: label}, problems.

    A row that cannot be trusted is reported by line and left out, never guessed: wrong
    column count, an empty cell, a label not in task.labels, or a second row giving the same
    file another label (both rows are dropped: which one is right is for a person to say).
    The file itself must be UTF-8 CSV (a BOM, as spreadsheet programs write, is fine); one
    that cannot be parsed at all raises AlphaError before anything is uploaded.
    """
    rows = _csv_rows(path)
    problems: list[str] = []
    if not rows:
        return {}, [f"{path.name} is empty: add 'filename,label' rows, or leave out --labels."]
    if [cell.strip().lower() for cell in rows[0][1][:2]] == ["filename", "label"]:
        rows = rows[1:]
    known: dict[str, str] = {}
    conflicting: set[str] = set()
    for line, row in rows:
        cells = [cell.strip() for cell in row]
        while len(cells) > 2 and not cells[-1]:
            cells.pop()  # spreadsheet programs add empty trailing columns
        where = f"{path.name} line {line}"
        if len(cells) != 2:
            hint = ("separate the columns with a comma" if len(cells) == 1
                    and any(sep in cells[0] for sep in ";\t")
                    else "fix the row (quote a file name that contains a comma)")
            problems.append(f"{where}: expected 2 columns 'filename,label', got {len(cells)}: "
                            f"{row!r}; {hint}.")
            continue
        name, label = _csv_name(cells[0]), cells[1]
        if not name or not label:
            problems.append(f"{where}: empty {'file name' if not name else 'label'} in "
                            f"{row!r}; fill it in or delete the row.")
        elif label not in labels:
            problems.append(f"{where}: label {label!r} for {name!r} is not one of the task "
                            f"labels {labels}; fix the row or add the label to task.labels.")
        elif known.get(name, label) != label:
            conflicting.add(name)
            problems.append(f"{where}: {name!r} is labeled {label!r} here but {known[name]!r} "
                            "on an earlier line; keep one row per image.")
        else:
            known[name] = label
    return {n: lab for n, lab in known.items() if n not in conflicting}, problems


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row; AlphaError naming what to fix."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                return [(reader.line_num, row) for row in reader
                        if any(cell.strip() for cell in row)]
            except csv.Error as error:
                raise AlphaError(f"Label CSV {path} line {reader.line_num} cannot be parsed "
                                 f"({error}): fix that line.") from None
    except UnicodeDecodeError:
        raise AlphaError(f"Label CSV {path} is not UTF-8 text: save it as UTF-8 CSV.") from None
    except OSError as error:
        raise AlphaError(f"Cannot read label CSV {path} ({error.strerror or error}): fix the "
                         "path.") from None


def _csv_name(cell: str) -> str:
    """A file name as written in a CSV, in the form image keys use: Windows separators and a
    leading './' are common in hand-made CSVs and mean the same file."""
    name = unicodedata.normalize("NFC", cell.replace("\\", "/"))
    while name.startswith("./"):
        name = name[2:]
    return name


def _plan(store: Store, names: list[str], existing: dict[str, dict]) -> tuple[dict[str, str],
                                                                                list[str]]:
    """name -> key for the images that can be uploaded; a problem for each that cannot.

    Two files must never share a key (one would overwrite the other) or an image id (they
    would share one label record). Within a folder that happens only to names that differ in
    Unicode form alone (NFC and NFD), or by a clash of the id's 40-bit hash, rare but real in
    millions of images; against the bucket, to an image already there under another name.
    Every name of a clash is refused, so nothing ambiguous gets in.
    """
    problems: list[str] = []
    by_key: dict[str, list[str]] = {}
    for name in names:
        try:
            by_key.setdefault(store.image_key(name), []).append(name)
        except ValueError as error:
            problems.append(f"{error}.")
    planned: dict[str, str] = {}
    for key, group in by_key.items():
        if len(group) > 1:
            problems += [f"Image {ascii(name)} has the same name as {_others(group, name)} in "
                         f"another Unicode form, so both would be the S3 key {key!r}: rename "
                         "one of them." for name in group]
        else:
            planned[group[0]] = key
    stored = {unicodedata.normalize("NFC", key): key for key in existing}
    ids: dict[str, list[str]] = {}
    for key in existing:
        if key.lower().endswith(IMAGE_SUFFIXES):
            ids.setdefault(store.image_id_for(key), []).append(key)
    for key in planned.values():
        ids.setdefault(store.image_id_for(key), []).append(key)
    for name, key in list(planned.items()):
        twin = stored.get(key)
        clash = [k for k in ids[store.image_id_for(key)] if k != key]
        if key not in existing and twin is not None:
            problems.append(f"Image {name!r} is already in the bucket as {twin!r}, the same name "
                            "in another Unicode form: rename the file, or delete that object.")
        elif clash:
            problems.append(f"Image {name!r} would get the image id {store.image_id_for(key)!r}, "
                            f"which {clash[0]!r} has already: rename the file.")
        else:
            continue
        del planned[name]
    return planned, problems


def _others(group: list[str], name: str) -> str:
    """The other names of a clash, escaped: names that differ in Unicode form alone look the
    same when printed as they are."""
    return ", ".join(ascii(other) for other in group if other != name)


def _upload_one(store: Store, folder: Path, name: str, key: str, existing: dict[str, dict],
                sizes: dict[str, tuple[int, int]] | None = None) -> str | None:
    """Upload one image; return "present", or a problem message instead of raising. Its
    (width, height) goes into `sizes` when given."""
    try:
        data = (folder / name).read_bytes()
        image_format, size = check_image_bytes(data, name)
    except ImageError as error:
        return str(error)
    except OSError as error:
        return f"Image {name!r} cannot be read ({error.strerror}): fix or remove it."
    if sizes is not None:
        sizes[name] = size
    entry = existing.get(key)
    if entry is not None:
        if _same_bytes(store, entry, data):
            return "present"
        return (f"Image {name!r} differs from the image already in the bucket as {key!r}, and "
                "a changed image would keep the old one's labels: rename the new file, or "
                "delete the old object first to replace it.")
    store.put_bytes(key, data, CONTENT_TYPES[image_format])
    return None


def _same_bytes(store: Store, entry: dict, data: bytes) -> bool:
    """Whether a stored object holds `data`: by size and MD5 (the ETag of a plain upload),
    or by download when the ETag is not an MD5 (multipart uploads, some encryption)."""
    if entry.get("Size") != len(data):
        return False
    etag = str(entry.get("ETag") or "").strip('"')
    if len(etag) == 32 and "-" not in etag:
        return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    return store.get_bytes(entry["Key"]) == data


def ingest_folder(
    store: Store, settings: Settings, folder: Path, labels_csv: Path | None = None,
    masks: Path | None = None, progress: Callable[[int, int], None] | None = None,
    coco: Path | None = None,
) -> IngestReport:
    """Upload every readable image, then the seed label records for the ones that made it.

    The label CSV is read first, so a file that cannot be parsed stops the ingest before any
    upload; its bad rows, like bad images, are reported and skipped. `masks` (mask kinds
    only) is a folder of mask PNGs, one per labeled image at the same relative path (see
    `_pair_masks`); images without one are the pool. `coco` (instance and panoptic) is a
    COCO instances JSON instead (alpha.coco). `progress(done, total)` is
    called as each image is checked and uploaded (from the upload threads), for a bar.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AlphaError(f"Image folder {folder} does not exist: give a folder of PNG/JPEG files.")
    mask_kind = settings.task.kind != "classification"
    if masks is not None and not mask_kind:
        raise ConfigError(
            f"Masks ({masks}) label every pixel, but task.kind is 'classification', which "
            "labels whole images: set task.kind = \"semantic\", or give the labels as a CSV "
            "(--labels) instead of --masks."
        )
    if labels_csv is not None and mask_kind:
        raise ConfigError(
            f"A label CSV ({labels_csv}) gives one class per image, but task.kind is "
            f"{settings.task.kind!r}, which labels pixels: give the seed labels as mask PNGs "
            "(--masks) instead of --labels."
        )
    if coco is not None and (masks is not None or labels_csv is not None):
        raise ConfigError(f"Give the seed labels one way: a COCO file ({coco}) or "
                          f"{'masks' if masks is not None else 'a label CSV'}, not both.")
    if coco is not None and not hasattr(get_kind(settings.task.kind), "seed_target"):
        raise ConfigError(
            f"A COCO file ({coco}) holds object masks, but task.kind is "
            f"{settings.task.kind!r}: set task.kind = \"instance\" or \"panoptic\", or give "
            "class masks (--masks).")
    known: dict[str, str] = {}
    coco_images: dict[str, CocoImage] = {}
    report = IngestReport()
    if labels_csv is not None:
        known, problems = read_label_csv(Path(labels_csv), settings.task.labels)
        report.problems.extend(problems)
    names = find_images(folder)
    mask_files: dict[str, str] = {}
    if masks is not None:
        names, mask_files, problems = _pair_masks(folder, Path(masks), names)
        report.problems.extend(problems)
    if coco is not None:
        coco_images, problems = read_coco(Path(coco), settings.task.labels)
        report.problems.extend(problems)
        mask_files, problems = _pair_coco(Path(coco), coco_images, names)
        report.problems.extend(problems)
    store.ensure_bucket()
    existing = {entry["Key"]: entry for entry in store.list_entries("images/")}
    planned, problems = _plan(store, names, existing)
    report.problems.extend(problems)
    sizes: dict[str, tuple[int, int]] = {}
    done = itertools.count(1)
    lock = threading.Lock()

    def upload(item: tuple[str, str]) -> str | None:
        outcome = _upload_one(store, folder, *item, existing, sizes)
        if progress is not None:
            with lock:
                progress(next(done), len(planned))
        return outcome

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(upload, planned.items()))
    ingested: dict[str, str] = {}  # NFC name -> key
    for (name, key), outcome in zip(planned.items(), outcomes, strict=True):
        if outcome is None:
            report.uploaded += 1
        elif outcome == "present":
            report.already_present += 1
        else:
            report.problems.append(outcome)
            continue
        ingested[unicodedata.normalize("NFC", name)] = key
    if known:
        _write_seed_labels(store, known, ingested, names, Path(labels_csv or ""), folder, report)
    if mask_files:
        read_target = (_coco_reader(settings, coco_images) if coco is not None
                       else _mask_folder_reader(settings, Path(masks or ""), report))
        _write_seed_masks(store, mask_files, ingested, sizes, read_target, report)
    return report


def _write_seed_labels(store: Store, known: dict[str, str], ingested: dict[str, str],
                       names: list[str], csv_path: Path, folder: Path, report: IngestReport
                       ) -> None:
    """A seed record for each CSV row whose image is in the bucket now; a problem that says
    why for the others. A person's label from Label Studio always wins over the seed CSV."""
    found = {unicodedata.normalize("NFC", n) for n in names}
    by_case = {}
    for name in found:
        by_case.setdefault(name.casefold(), []).append(name)
    for name, label in known.items():
        key = ingested.get(name)
        if key is None:
            if name in found:
                report.problems.append(
                    f"{csv_path.name}: {name!r} was not ingested (see the problem reported for "
                    "it), so its label is not recorded: fix the image and ingest again.")
            else:
                similar = by_case.get(name.casefold(), [])
                hint = f" (did you mean {similar[0]!r}?)" if len(similar) == 1 else ""
                report.problems.append(
                    f"{csv_path.name}: {name!r} is not an image in {folder}{hint}: fix the "
                    "name (a path relative to that folder) or add the image.")
            continue
        image_id = store.image_id_for(key)
        old = read_record(store, image_id)
        if old is not None and old.source != "seed":
            continue  # a person's label from Label Studio wins over the seed CSV
        record = LabelRecord(image_id=image_id, image_key=key, status="labeled", label=label,
                             source="seed")
        if upsert_record(store, record, old):
            report.seed_labels += 1


# ---- seed masks (mask kinds) ----------------------------------------------------------------
def _pair_masks(folder: Path, masks: Path, names: list[str]
                ) -> tuple[list[str], dict[str, str], list[str]]:
    """(image names, {image name: mask name}, problems): each image is paired with the mask
    at its relative path with a .png suffix. A mask whose path matches no image, or two
    images that would share one mask (a/b.jpg and a/b.png), is reported and not used. Mask
    files inside the image folder (`--masks images/masks`) are not taken for images."""
    if not masks.is_dir():
        raise AlphaError(f"Mask folder {masks} does not exist: give a folder of mask PNGs "
                         "named like the images (images/a/b.jpg <-> masks/a/b.png).")
    if masks.resolve() == folder.resolve():
        raise AlphaError(f"The mask folder is the image folder ({folder}): keep the masks in a "
                         "folder of their own, with the same relative paths as the images.")
    mask_names = find_images(masks)
    if masks.resolve().is_relative_to(folder.resolve()):  # images/ and images/masks/
        below = masks.resolve().relative_to(folder.resolve()).as_posix() + "/"
        names = [name for name in names if not name.startswith(below)]
    elif folder.resolve().is_relative_to(masks.resolve()):  # data/ and data/images/
        below = folder.resolve().relative_to(masks.resolve()).as_posix() + "/"
        mask_names = [name for name in mask_names if not name.startswith(below)]
    problems: list[str] = []
    by_stem: dict[str, list[str]] = {}
    for name in mask_names:
        stem = unicodedata.normalize("NFC", name).rsplit(".", 1)[0]
        by_stem.setdefault(stem, []).append(name)
    images_by_stem: dict[str, list[str]] = {}
    for name in names:
        stem = unicodedata.normalize("NFC", name).rsplit(".", 1)[0]
        images_by_stem.setdefault(stem, []).append(name)
    by_case: dict[str, list[str]] = {}
    for stem in images_by_stem:
        by_case.setdefault(stem.casefold(), []).append(stem)
    paired: dict[str, str] = {}
    for stem, group in sorted(by_stem.items()):
        images = images_by_stem.get(stem, [])
        if len(group) > 1:
            problems.append(f"Masks {', '.join(map(repr, group))} in {masks} are all for the "
                            f"image {stem!r}: keep one (a PNG); until then the image is "
                            "ingested unlabeled.")
        elif not images:
            similar = by_case.get(stem.casefold(), [])
            hint = (f" (did you mean {images_by_stem[similar[0]][0]!r}?)"
                    if len(similar) == 1 else "")
            problems.append(f"Mask {group[0]!r} in {masks} has no image {stem}.png/.jpg in "
                            f"{folder}{hint}: name it like its image (images/a/b.jpg <-> "
                            "masks/a/b.png) or add the image.")
        elif len(images) > 1:
            problems.append(f"Mask {group[0]!r} could be for any of the images "
                            f"{', '.join(map(repr, images))}: rename all but one of them, so "
                            "that each mask names one image; they are ingested unlabeled.")
        else:
            paired[images[0]] = group[0]
    return names, paired, problems


def read_mask_file(path: Path, name: str, image_size: tuple[int, int]) -> np.ndarray:
    """The 2-D mask PNG at `path` as it is (class indices or segment ids); AnnotationError
    naming `name` and what to do when it is not a single-channel PNG of `image_size`
    (width, height). The size is read from the header first: a bomb is never decoded."""
    from PIL import Image

    try:
        with Image.open(path) as header:
            width, height = header.size
    except Exception as error:  # Pillow raises many types for hostile input
        raise AnnotationError(f"Mask {name!r} cannot be read ({type(error).__name__}: "
                              f"{error}): save it as a single-channel PNG of class "
                              "indices.") from None
    if (width, height) != tuple(image_size):
        raise AnnotationError(
            f"Mask {name!r} is {width}x{height} pixels but its image is "
            f"{image_size[0]}x{image_size[1]}: a mask must be at its image's own size (resize "
            "it with nearest-neighbour, never smoothly: that blends class indices).")
    try:
        return decode_mask_png(path.read_bytes(), name)
    except OSError as error:
        raise AnnotationError(f"Mask {name!r} cannot be read ({error.strerror or error}): "
                              "fix or remove it.") from None


def read_seed_mask(path: Path, name: str, image_size: tuple[int, int], labels: list[str],
                   ignore_index: int = 255) -> np.ndarray:
    """The class mask at `path` as stored: uint8 `(H, W)` class indices, `ignore_index` (and
    255) as 255 (unlabelled). AnnotationError naming `name` and what to do when it is not a
    single-channel PNG of `image_size` (width, height) holding class indices of `labels`."""
    mask = read_mask_file(path, name, image_size)
    unlabelled = (mask == ignore_index) | (mask == 255)
    bad = np.unique(mask[~unlabelled & (mask >= len(labels))])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise AnnotationError(
            f"Mask {name!r} holds class {'index' if bad.size == 1 else 'indices'} {shown}, "
            f"but task.labels has {len(labels)} classes (0..{len(labels) - 1}; "
            f"{ignore_index} = unlabelled): fix the mask, or add the missing classes to "
            "task.labels (in index order).")
    if unlabelled.all():
        raise AnnotationError(f"Mask {name!r} has no labeled pixel (all are {ignore_index}, "
                              "unlabelled): label some pixels, or delete the mask to leave "
                              "its image in the pool.")
    return np.where(unlabelled, 255, mask).astype(np.uint8)


SEGMENT_CLASSES = "classes.csv"
"""Beside segment-id masks (instance, panoptic), in the mask folder or the folder above it
(alpha.datasets.write_instance_folder's layout): `filename,id,label` rows naming the class
of each id of each mask (filename: the mask's path under the mask folder)."""


def read_segment_classes(path: Path, labels: list[str]
                         ) -> tuple[dict[str, dict[int, str]], list[str]]:
    """({mask name: {segment id: label}}, problems) from a classes CSV (header optional).
    A row that is malformed, names an unknown label, or gives an id a second class is
    reported and skipped; a missing file gives no classes (each mask then says so)."""
    out: dict[str, dict[int, str]] = {}
    problems: list[str] = []
    if not path.is_file():
        return out, problems
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (number == 1 and [c.strip() for c in row] == ["filename", "id",
                                                                        "label"]):
                continue
            where = f"{path.name} row {number}"
            if len(row) != 3 or not row[1].strip().isdigit() or int(row[1]) == 0:
                problems.append(f"{where} is {','.join(row)!r}, not `mask file,id,label` with "
                                "a positive integer id: fix the row.")
                continue
            name, ident, label = row[0].strip(), int(row[1]), row[2].strip()
            if label not in labels:
                problems.append(f"{where} gives id {ident} of {name!r} the class {label!r}, "
                                "which is not one of task.labels: fix the row or add the "
                                "class to task.labels.")
                continue
            known = out.setdefault(name, {})
            if known.get(ident, label) != label:
                problems.append(f"{where} gives id {ident} of {name!r} a second class "
                                f"({known[ident]!r}, then {label!r}): keep one row per id.")
                continue
            known[ident] = label
    return out, problems


def _mask_folder_reader(settings: Settings, masks: Path, report: IngestReport
                        ) -> Callable[[str, str, tuple[int, int]], Target]:
    """Read a seed target from the mask folder: class indices (semantic), or segment ids
    named by classes.csv (kinds with `seed_target`, whose masks hold segment ids)."""
    labels = settings.task.labels
    ignore_index = int(getattr(settings.task.options, "ignore_index", 255))
    seed_target = getattr(get_kind(settings.task.kind), "seed_target", None)
    classes: dict[str, dict[int, str]] = {}
    if seed_target is not None:
        found = [p for p in (masks / SEGMENT_CLASSES, masks.parent / SEGMENT_CLASSES)
                 if p.is_file()]
        classes, problems = read_segment_classes(found[0], labels) if found else ({}, [])
        report.problems.extend(problems)

    def read(image_name: str, mask_name: str, size: tuple[int, int]) -> Target:
        if seed_target is None:
            return Target(mask=read_seed_mask(masks / mask_name, mask_name, size, labels,
                                              ignore_index))
        return seed_target(read_mask_file(masks / mask_name, mask_name, size),
                           classes.get(mask_name), labels, settings.task.options, mask_name)
    return read


def _coco_reader(settings: Settings, images: dict[str, CocoImage]
                 ) -> Callable[[str, str, tuple[int, int]], Target]:
    """Read a seed target from a COCO file's entry (`mask_name`: its NFC file name)."""
    seed_target = get_kind(settings.task.kind).seed_target

    def read(image_name: str, mask_name: str, size: tuple[int, int]) -> Target:
        ids, classes = coco_segments(images[mask_name], size)
        return seed_target(ids, classes, settings.task.labels, settings.task.options,
                           images[mask_name].file_name)
    return read


def _pair_coco(coco: Path, images: dict[str, CocoImage], names: list[str]
               ) -> tuple[dict[str, str], list[str]]:
    """({image name: COCO file name}, problems): a COCO file_name is the image's path under
    the image folder, or its bare name where that names one image (COCO files often keep
    only the name)."""
    by_path = {unicodedata.normalize("NFC", n): n for n in names}
    by_base: dict[str, list[str]] = {}
    for name in by_path:
        by_base.setdefault(name.rsplit("/", 1)[-1], []).append(by_path[name])
    paired: dict[str, str] = {}
    problems: list[str] = []
    for file_name in images:
        found = [by_path[file_name]] if file_name in by_path else by_base.get(file_name, [])
        if len(found) == 1:
            paired[found[0]] = file_name
        elif found:
            problems.append(f"{coco.name}: {file_name!r} could be any of "
                            f"{', '.join(map(repr, found))}: give its path under the image "
                            "folder as file_name; they are ingested unlabeled.")
        else:
            problems.append(f"{coco.name}: {file_name!r} is not an image of the folder: fix "
                            "its file_name (a path under the image folder) or add the image.")
    return paired, problems


def _write_seed_masks(store: Store, paired: dict[str, str], ingested: dict[str, str],
                      sizes: dict[str, tuple[int, int]],
                      read_target: Callable[[str, str, tuple[int, int]], Target],
                      report: IngestReport) -> None:
    """A seed record with its mask PNG for each paired image (image name -> mask name) that
    is in the bucket now, its target from `read_target(image name, mask name, size)`; a
    problem naming the mask for the others (the image stays, unlabeled). A person's label
    from Label Studio always wins over a seed mask; an unchanged one is not written again."""

    def write_one(image_name: str, mask_name: str) -> str | bool:
        key = ingested.get(unicodedata.normalize("NFC", image_name))
        if key is None:
            return (f"Mask {mask_name!r}: its image {image_name!r} was not ingested (see the "
                    "problem reported for it), so the mask is not recorded: fix the image "
                    "and ingest again.")
        try:
            target = read_target(image_name, mask_name, sizes[image_name])
        except AnnotationError as error:
            return f"{error} {image_name!r} is ingested unlabeled."
        image_id = store.image_id_for(key)
        old = read_record(store, image_id)
        if old is not None and old.source != "seed":
            return False  # a person's label from Label Studio wins over the seed mask
        record = LabelRecord(image_id=image_id, image_key=key, status="labeled",
                             source="seed", segments=target.segments)
        return upsert_record(store, record, old, mask=target.mask)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda item: write_one(*item), paired.items()))
    for outcome in outcomes:
        if isinstance(outcome, str):
            report.problems.append(outcome)
        elif outcome:
            report.seed_labels += 1
