"""Copy a folder of images, and optionally a CSV of known labels, into the bucket.

The known labels become the seed set; every other image is the unlabeled pool. A bad image or
a bad CSV row is reported by name and skipped: one broken file never stops the rest. Re-running
is safe: keys are stable, an image already uploaded with the same bytes is not sent again, one
with other bytes under the same name is refused rather than swapped under its labels, and a
seed label never overwrites a label that came from Label Studio.
"""

from __future__ import annotations

import csv
import hashlib
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from alpha.config import Settings
from alpha.errors import AlphaError, ImageError
from alpha.images import CONTENT_TYPES, check_image_bytes
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


def _upload_one(store: Store, folder: Path, name: str, key: str, existing: dict[str, dict]
                ) -> str | None:
    """Upload one image; return "present", or a problem message instead of raising."""
    try:
        data = (folder / name).read_bytes()
        image_format, _ = check_image_bytes(data, name)
    except ImageError as error:
        return str(error)
    except OSError as error:
        return f"Image {name!r} cannot be read ({error.strerror}): fix or remove it."
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
    store: Store, settings: Settings, folder: Path, labels_csv: Path | None = None
) -> IngestReport:
    """Upload every readable image, then the seed label records for the ones that made it.

    The label CSV is read first, so a file that cannot be parsed stops the ingest before any
    upload; its bad rows, like bad images, are reported and skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AlphaError(f"Image folder {folder} does not exist: give a folder of PNG/JPEG files.")
    known: dict[str, str] = {}
    report = IngestReport()
    if labels_csv is not None:
        known, problems = read_label_csv(Path(labels_csv), settings.task.labels)
        report.problems.extend(problems)
    store.ensure_bucket()
    names = find_images(folder)
    existing = {entry["Key"]: entry for entry in store.list_entries("images/")}
    planned, problems = _plan(store, names, existing)
    report.problems.extend(problems)
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(
            lambda item: _upload_one(store, folder, *item, existing), planned.items()))
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
