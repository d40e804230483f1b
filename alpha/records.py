"""Label records: what `labels/{image_id}.json` holds.

A record is the current label of one image plus where it came from (seed CSV or a Label
Studio annotation, with task and annotation ids) and its history, so a label pulled from
Label Studio survives the loss of Label Studio's database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from alpha.store import Store


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LabelRecord(BaseModel):
    """`status`: labeled; skipped by the annotator; or retracted (its annotations were
    deleted in Label Studio after a pull: kept, with its history, but no longer a label).
    `votes` and `agreement` describe the annotations of an overlapped task (see
    alpha.consensus); `restored` marks a label put back into a re-created project."""

    image_id: str
    image_key: str
    status: Literal["labeled", "skipped", "retracted"]
    label: str | None = None
    source: Literal["seed", "labelstudio"]
    annotator: str | None = None
    simulated: bool = False
    ls_project_id: int | None = None
    ls_task_id: int | None = None
    ls_annotation_id: int | None = None
    annotation_updated_at: str | None = None
    votes: dict[str, int] | None = None
    agreement: float | None = None
    restored: bool = False
    recorded_at: str = Field(default_factory=now_iso)
    history: list[dict] = Field(default_factory=list)

    def same_label_as(self, other: LabelRecord) -> bool:
        fields = ("status", "label", "ls_task_id", "ls_annotation_id", "annotation_updated_at",
                  "votes")
        return all(getattr(self, name) == getattr(other, name) for name in fields)


def write_record(store: Store, record: LabelRecord) -> None:
    store.put_json(store.label_key(record.image_id), record.model_dump(mode="json"))


def read_record(store: Store, image_id: str) -> LabelRecord | None:
    data = store.get_json(store.label_key(image_id))
    return LabelRecord.model_validate(data) if data is not None else None


def read_all_records(store: Store) -> dict[str, LabelRecord]:
    """Every label record of the project, by image id."""
    keys = [k for k in store.list_keys("labels/") if k.endswith(".json")]
    return {
        rec.image_id: rec
        for rec in (LabelRecord.model_validate(json.loads(b)) for b in store.get_many(keys))
    }


def upsert_record(store: Store, new: LabelRecord, old: LabelRecord | None) -> bool:
    """Write `new`, keeping `old` in its history; return False when nothing changed."""
    if old is not None:
        if old.same_label_as(new):
            return False
        snapshot = old.model_dump(mode="json", exclude={"history"})
        new.history = [*old.history, snapshot]
    write_record(store, new)
    return True
