"""Train a model on the labels in the bucket and save it under `models/{version}/`.

The model folder is written in an order that makes a half-written model invisible: weights,
then the label snapshot, then `metrics.json` (the manifest), and only then `latest.json`,
which is what every later step reads. A crash part-way leaves `latest.json` on the previous
good model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from botocore.exceptions import ClientError
from torch import nn

from alpha.config import Settings
from alpha.errors import AnnotationError, DataError
from alpha.images import decode_batch, image_size
from alpha.kinds import get_kind
from alpha.kinds.base import Kind, Target
from alpha.kinds.training import reporting_steps
from alpha.records import LabelRecord, read_all_records, read_mask
from alpha.store import Store, missing_image


@dataclass
class ModelInfo:
    """What a training run produced, and what it left out and why."""

    version: str
    metrics: dict[str, Any]
    n_labels: int
    skipped: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A saved model ready to predict, with the settings it was trained under."""

    model: nn.Module
    temperature: float
    labels: list[str]
    version: str
    metrics: dict[str, Any]
    train_settings: dict[str, Any]
    kind: str


def latest_key(store: Store) -> str:
    return store.key("models", "latest.json")


def fetch_images(store: Store, keys: Sequence[str]) -> tuple[list[bytes | None], list[str]]:
    """Fetch in parallel; a key deleted since it was listed becomes None plus a message."""
    blobs = store.get_many(keys)
    missing = [missing_image(key) for key, blob in zip(keys, blobs, strict=True)
               if blob is None]
    return blobs, missing


def record_target(store: Store, record: LabelRecord) -> Target:
    """The kind-owned target a record stores (its mask read from the PNG beside it)."""
    mask = read_mask(store, record) if record.mask is not None else None
    return Target(label=record.label, mask=mask, segments=record.segments)


@dataclass
class Decoded:
    """Images fetched and decoded for a model: `images` `(m, C, H, W)` are the keys at
    indices `readable`; `problems` says why the others could not be read; `sizes` are the
    readable images' own (width, height), when asked for."""

    images: np.ndarray
    readable: list[int]
    problems: list[str]
    sizes: list[tuple[int, int]] | None = None


def fetch_decoded(store: Store, keys: Sequence[str], size: tuple[int, int], channels: int,
                  *, with_sizes: bool = False) -> Decoded:
    """Fetch `keys` in parallel and decode what can be decoded at `size` (width, height);
    a missing or unreadable image is a problem, never an exception."""
    blobs, problems = fetch_images(store, keys)
    present = [i for i, blob in enumerate(blobs) if blob is not None]
    images, good, errors = decode_batch(
        [blobs[i] for i in present], [keys[i] for i in present], size, channels)
    readable = [present[i] for i in good]
    sizes = [image_size(blobs[i]) for i in readable] if with_sizes else None  # type: ignore[arg-type]
    return Decoded(images, readable, problems + errors, sizes)


def _usable(
    store: Store, kind: Kind, records: dict[str, LabelRecord], labels: list[str]
) -> tuple[list[tuple[LabelRecord, Target]], dict[str, str]]:
    """Records the model can learn from with their targets, and why every other record was
    left out (a mask that cannot be read is left out too, not fatal)."""
    labeled = [records[i] for i in sorted(records) if records[i].status == "labeled"]
    ignored = {i: f"status is {r.status!r}" for i, r in sorted(records.items())
               if r.status != "labeled"}

    def target(record: LabelRecord) -> Target | str:
        try:
            return record_target(store, record)
        except (AnnotationError, ClientError) as error:
            return f"its mask cannot be read ({error})"

    with ThreadPoolExecutor(max_workers=16) as pool:
        targets = list(pool.map(target, labeled))
    usable: list[tuple[LabelRecord, Target]] = []
    for record, found in zip(labeled, targets, strict=True):
        problem = found if isinstance(found, str) else kind.target_problem(found, labels)
        if problem is not None:
            ignored[record.image_id] = problem
        else:
            usable.append((record, found))
    return usable, dict(sorted(ignored.items()))


def label_snapshot(record: LabelRecord) -> str | None:
    """What a model saw of a label: its name, or its mask's digest (a changed mask is new)."""
    return record.label if record.mask is None else record.mask.sha256


def new_usable_labels(store: Store, settings: Settings,
                      records: dict[str, LabelRecord] | None = None) -> int:
    """Usable labels the latest model has not learned from: new images, and labels changed
    since it was trained. Labels it could not use (an unknown class, an unreadable mask) and
    those whose image it could not read when it was trained are not counted, so they do not
    look new on every round; all of them count before the first model. `records`: the
    label records already read this round (default: read them)."""
    kind = get_kind(settings.task.kind)
    records = read_all_records(store) if records is None else records
    usable, _ = _usable(store, kind, records, settings.task.labels)
    latest = store.get_json(latest_key(store)) or {}
    version = latest.get("version")
    if not version:
        return len(usable)
    seen = store.get_json(store.model_key(version, "labels_seen.json")) or {}
    manifest = store.get_json(store.model_key(version, "metrics.json")) or {}
    unreadable = manifest.get("unreadable") or {}
    return sum(1 for record, _ in usable
               if label_snapshot(record) not in (seen.get(record.image_id),
                                                 unreadable.get(record.image_id)))


def default_version(n_labels: int, now: datetime | None = None) -> str:
    """Sortable by time, and says at a glance how many labels the model saw."""
    return f"m{(now or datetime.now(UTC)):%Y%m%dT%H%M%S}-n{n_labels}"


def _check_version(version: str) -> str:
    if not version or "/" in version or version in (".", "..") or version == "latest.json":
        raise ValueError(
            f"invalid model version {version!r}: use a plain name without '/' (or omit it)"
        )
    return version


def train_model(store: Store, settings: Settings, version: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                records: dict[str, LabelRecord] | None = None) -> ModelInfo:
    """Train on every usable label in the bucket (`records`: the label records already read
    this round; default: read them) and publish the model as the latest; `progress(done,
    total)` follows the optimiser steps (see `reporting_steps`)."""
    kind = get_kind(settings.task.kind)
    labels = settings.task.labels
    records = read_all_records(store) if records is None else records
    usable, ignored = _usable(store, kind, records, labels)
    if not usable:
        raise DataError(
            "No usable labels in the bucket: label some images (seed labels or Label Studio) "
            f"with one of {', '.join(labels)} before training."
        )
    size = settings.train.input_size
    decoded = fetch_decoded(store, [record.image_key for record, _ in usable], size,
                            settings.train.channels)
    images, skipped = decoded.images, decoded.problems
    kept = [usable[i] for i in decoded.readable]
    seen = [record for record, _ in kept]
    readable = set(decoded.readable)
    unreadable = {record.image_id: label_snapshot(record)
                  for i, (record, _) in enumerate(usable) if i not in readable}
    targets = kind.training_targets([target for _, target in kept], labels, size)
    with reporting_steps(progress):
        trained = kind.train(images, targets, labels, settings.train, settings.task.options)

    n_labels = len(seen)
    version = _check_version(version or default_version(n_labels))
    metrics = dict(trained.metrics)
    metrics["per_label"] = {labels[c]: acc for c, acc in metrics.get("per_class", {}).items()}
    manifest = {
        "version": version,
        "kind": settings.task.kind,
        "primary_metric": kind.PRIMARY_METRIC,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_labels": n_labels,
        "labels": list(labels),
        "temperature": trained.temperature,
        "metrics": metrics,
        "skipped": skipped,
        "unreadable": unreadable,
        "ignored": ignored,
        "train_settings": settings.train.model_dump(mode="json"),
    }
    checkpoint = kind.save_checkpoint(trained, labels, settings.train)
    store.put_bytes(store.model_key(version, "model.pt"), checkpoint)
    store.put_json(
        store.model_key(version, "labels_seen.json"),
        {r.image_id: label_snapshot(r) for r in seen},
    )
    store.put_json(store.model_key(version, "metrics.json"), manifest)
    store.put_json(latest_key(store), {"version": version})
    return ModelInfo(
        version=version, metrics=metrics, n_labels=n_labels, skipped=skipped, ignored=ignored
    )


def load_model(store: Store, version: str | None = None) -> LoadedModel:
    """The model `version`, or the latest published one."""
    if version is None:
        latest = store.get_json(latest_key(store))
        if not latest or not latest.get("version"):
            raise DataError("No model trained yet: run a round (`alpha round`).")
        version = str(latest["version"])
    manifest = store.get_json(store.model_key(_check_version(version), "metrics.json"))
    if manifest is None:
        raise DataError(
            f"Model {version!r} does not exist or was not fully written (no metrics.json): "
            "pick another version or train again."
        )
    kind = get_kind(manifest.get("kind", "classification"))
    model, temperature, labels, train_settings = kind.load_checkpoint(
        store.get_bytes(store.model_key(version, "model.pt"))
    )
    return LoadedModel(
        model=model,
        temperature=temperature,
        labels=labels,
        version=version,
        metrics=manifest,
        train_settings=train_settings,
        kind=kind.NAME,
    )


def model_images(store: Store, loaded: LoadedModel, keys: Sequence[str]) -> Decoded:
    """The images `keys` at the model's input size, with their own (width, height) (for
    pre-annotations at full size)."""
    return fetch_decoded(store, keys, get_kind(loaded.kind).input_size(loaded.train_settings),
                         int(loaded.train_settings.get("channels", 1)), with_sizes=True)
