"""Label records: what `labels/{image_id}.json` holds (and the mask PNG beside it).

A record is the current label of one image plus where it came from (seed CSV or a Label
Studio annotation, with task and annotation ids) and its history, so a label pulled from
Label Studio survives the loss of Label Studio's database.

The target is the kind's (alpha.kinds.base.Target): a label name for classification, a mask
for segmentation. A mask is written as `labels/{image_id}.png` before the JSON that names
it, with its SHA-256 in the record, so a record never points at a mask that is not there and
an unchanged mask is not written again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from alpha.errors import AnnotationError
from alpha.masks import decode_mask_png, encode_mask_png
from alpha.store import Store


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class MaskRef(BaseModel):
    """Where a record's mask PNG is (its bucket key, like `image_key`), and its digest."""

    key: str
    sha256: str
    width: int
    height: int


class AnnotationTime(BaseModel):
    """When one annotation of a record's task was made, by whom, and how long its annotator
    worked on it (Label Studio's `lead_time`, seconds; None for annotations made through the
    API). Kept for every annotation of the task, skips included, so the report can count
    each annotator's throughput."""

    annotator: str | None = None
    created_at: str | None = None
    lead_time: float | None = None
    cancelled: bool = False


class LabelRecord(BaseModel):
    """`status`: labeled; skipped by the annotator; or retracted (its annotations were
    deleted in Label Studio after a pull: kept, with its history, but no longer a label).
    `votes` and `agreement` describe the annotations of an overlapped task (see
    alpha.consensus); `restored` marks a label put back into a re-created project.
    `label` is a choice kind's target; `mask` (+ `segments` for instance kinds) a mask
    kind's. `changed` is the fraction of the task's pre-annotation the annotator changed.
    `annotation_times` says when each annotation was made and how long it took (empty in
    records pulled before it was kept); it is not part of the label, so a change to it
    alone rewrites nothing."""

    image_id: str
    image_key: str
    status: Literal["labeled", "skipped", "retracted"]
    label: str | None = None
    mask: MaskRef | None = None
    segments: list[dict[str, Any]] | None = None
    source: Literal["seed", "labelstudio"]
    annotator: str | None = None
    simulated: bool = False
    ls_project_id: int | None = None
    ls_task_id: int | None = None
    ls_annotation_id: int | None = None
    annotation_updated_at: str | None = None
    votes: dict[str, int] | None = None
    agreement: float | None = None
    changed: float | None = None
    restored: bool = False
    annotation_times: list[AnnotationTime] = Field(default_factory=list)
    recorded_at: str = Field(default_factory=now_iso)
    history: list[dict] = Field(default_factory=list)

    def same_label_as(self, other: LabelRecord) -> bool:
        fields = ("status", "label", "mask", "segments", "ls_task_id", "ls_annotation_id",
                  "annotation_updated_at", "votes")
        return all(getattr(self, name) == getattr(other, name) for name in fields)


def write_record(store: Store, record: LabelRecord) -> None:
    store.put_json(store.label_key(record.image_id), record.model_dump(mode="json"))


def read_record(store: Store, image_id: str) -> LabelRecord | None:
    data = store.get_json(store.label_key(image_id))
    return LabelRecord.model_validate(data) if data is not None else None


def read_all_records(store: Store) -> dict[str, LabelRecord]:
    """Every label record of the project, by image id."""
    keys = [k for k in store.list_keys("labels/") if k.endswith(".json")]
    return {  # a record deleted since the listing is left out
        rec.image_id: rec
        for rec in (LabelRecord.model_validate(json.loads(b)) for b in store.get_many(keys)
                    if b is not None)
    }


def attach_mask(store: Store, record: LabelRecord, mask: np.ndarray,
                old: LabelRecord | None = None) -> None:
    """Give `record` its mask: written to `labels/{image_id}.png` first, unless `old`
    already points at a PNG with the same digest (an unchanged mask is not rewritten)."""
    data = encode_mask_png(mask)
    digest = hashlib.sha256(data).hexdigest()
    key = store.mask_key(record.image_id)
    if old is None or old.mask is None or old.mask.sha256 != digest:
        store.put_bytes(key, data, content_type="image/png")
    height, width = mask.shape
    record.mask = MaskRef(key=key, sha256=digest, width=int(width), height=int(height))


def read_mask(store: Store, record: LabelRecord) -> np.ndarray:
    """The record's mask `(H, W)`; AnnotationError when the PNG is missing or not the one the
    record names (changed by hand since), so a stale mask never trains a model."""
    if record.mask is None:
        raise AnnotationError(f"The label of {record.image_id} has no mask.")
    data = store.get_bytes(record.mask.key)
    if hashlib.sha256(data).hexdigest() != record.mask.sha256:
        raise AnnotationError(
            f"The mask {record.mask.key} is not the one its label record names (its digest "
            "differs): it was changed outside alpha. Pull again or restore the mask."
        )
    mask = decode_mask_png(data, record.mask.key)
    if mask.shape != (record.mask.height, record.mask.width):
        raise AnnotationError(f"The mask {record.mask.key} has the wrong size {mask.shape}.")
    return mask


def upsert_record(store: Store, new: LabelRecord, old: LabelRecord | None,
                  mask: np.ndarray | None = None) -> bool:
    """Write `new` (with `mask`, its PNG first), keeping `old` in its history; return False
    when nothing changed."""
    if mask is not None:
        attach_mask(store, new, mask, old)
    if old is not None:
        if old.same_label_as(new):
            return False
        snapshot = old.model_dump(mode="json", exclude={"history"})
        new.history = [*old.history, snapshot]
    write_record(store, new)
    return True
