"""Copy a folder of images, and optionally a CSV of known labels, into the bucket.

The known labels become the seed set; every other image is the unlabeled pool. A bad image or
a bad CSV row is reported by name and skipped: one broken file never stops the rest. Re-running
is safe: keys are stable, an image already uploaded with the same size is not sent again, and
a seed label never overwrites a label that came from Label Studio.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from alpha.config import Settings
from alpha.errors import AlphaError, ImageError
from alpha.images import check_image_bytes
from alpha.records import LabelRecord, read_record, upsert_record
from alpha.store import IMAGE_SUFFIXES, Store, image_id_from_key, validate_relative_key

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


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
    """`filename,label` rows (a header row is optional) -> {filename: label}, problems."""
    known, problems = {}, []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise AlphaError(f"Cannot read label CSV {path}: {error}. Fix the path or file.") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["filename", "label"]:
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            problems.append(f"{path.name} row {number}: expected 'filename,label', got {row!r}")
        elif row[1].strip() not in labels:
            problems.append(
                f"{path.name} row {number}: label {row[1].strip()!r} for {row[0]!r} is not one "
                f"of the task labels {labels}"
            )
        else:
            known[row[0].strip()] = row[1].strip()
    return known, problems


def _upload_one(store: Store, folder: Path, name: str, existing: dict[str, int]) -> str | None:
    """Upload one image; return a problem message instead of raising for a bad file."""
    try:
        key = store.image_key(validate_relative_key(name))
    except ValueError as error:
        return str(error)
    path = folder / name
    try:
        data = path.read_bytes()
        check_image_bytes(data, name)
    except ImageError as error:
        return str(error)
    except OSError as error:
        return f"Image {name!r} cannot be read ({error.strerror}): fix or remove it."
    if existing.get(key) == len(data):
        return "present"
    store.put_bytes(key, data, CONTENT_TYPES[path.suffix.lower()])
    return None


def ingest_folder(
    store: Store, settings: Settings, folder: Path, labels_csv: Path | None = None
) -> IngestReport:
    """Upload every readable image, then the seed label records for the ones that made it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AlphaError(f"Image folder {folder} does not exist: give a folder of PNG/JPEG files.")
    store.ensure_bucket()
    report = IngestReport()
    names = find_images(folder)
    existing = dict(store.list_objects("images/"))
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda n: _upload_one(store, folder, n, existing), names))
    ingested = set()
    for name, outcome in zip(names, outcomes, strict=True):
        if outcome is None:
            report.uploaded += 1
        elif outcome == "present":
            report.already_present += 1
        else:
            report.problems.append(outcome)
            continue
        ingested.add(name)

    if labels_csv is not None:
        known, problems = read_label_csv(Path(labels_csv), settings.task.labels)
        report.problems.extend(problems)
        for name, label in known.items():
            if name not in ingested:
                report.problems.append(
                    f"{Path(labels_csv).name}: {name!r} is not an ingested image in {folder}"
                )
                continue
            image_id = image_id_from_key(name)
            old = read_record(store, image_id)
            if old is not None and old.source != "seed":
                continue  # a person's label from Label Studio wins over the seed CSV
            record = LabelRecord(image_id=image_id, image_key=store.image_key(name),
                                 status="labeled", label=label, source="seed")
            if upsert_record(store, record, old):
                report.seed_labels += 1
    return report
