"""Annotations out: every task annotated or skipped since the last pull becomes a label
record (with its mask PNG for mask kinds), through the kind, which reads the results,
resolves several annotators and says what they changed of the pre-annotation.

The pull state (`{prefix}/labelstudio/pull_cursor.json`) makes it incremental; records are
upserted, so a repeated pull writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from alpha.errors import AnnotationError
from alpha.labelstudio.connection import (
    SIMULATOR_EMAIL,
    Connection,
    _chunks,
    _format_time,
    _ls_errors,
    _parse_time,
    log,
)
from alpha.records import (
    AnnotationTime,
    LabelRecord,
    attach_mask,
    now_iso,
    read_record,
    upsert_record,
)

EXPORT_CHUNK = 200  # ids per export request: Django refuses over 1000 query fields (HTTP 400)
# Annotations saved in the same moment as a pull may commit after it listed tasks; re-reading
# this much before the cursor catches them (upserts make the overlap free of duplicates).
CURSOR_OVERLAP = timedelta(seconds=60)


@dataclass(frozen=True)
class PullProblem:
    """An annotation that was not written, and why (the pull carries on without it)."""

    task_id: int
    image_id: str | None
    reason: str


@dataclass
class PullResult:
    """What a pull did. `new + updated + unchanged` records were seen; `skipped` counts the
    written ones (new or updated) whose task the annotator skipped."""

    project_id: int
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    retracted: int = 0
    problems: list[PullProblem] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def _annotation_time(record: LabelRecord) -> datetime:
    return _parse_time(record.annotation_updated_at or "1970-01-01T00:00:00Z")


def _prediction_result(task: dict) -> list | None:
    """The results of the newest prediction (pre-annotation) an exported task carries."""
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if not predictions:
        return None
    newest = max(predictions, key=lambda p: (str(p.get("created_at") or ""), p.get("id") or 0))
    result = newest.get("result")
    return result if isinstance(result, list) else None


def _image_size(data: dict) -> tuple[int, int] | None:
    """The image's (width, height) that push kept in the task's data, if it is there."""
    size = data.get("image_size")
    if (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and v > 0 for v in size)):
        return size[0], size[1]
    return None


def _user_id(annotation: dict) -> int | None:
    user = annotation.get("completed_by")
    user_id = user.get("id") if isinstance(user, dict) else user
    return int(user_id) if user_id is not None else None


def _annotation_timing(annotation: dict, users: dict[int, str]) -> AnnotationTime:
    """Who made an exported annotation, when, and in how many seconds (`lead_time`)."""
    user_id = _user_id(annotation)
    lead_time = annotation.get("lead_time")
    return AnnotationTime(
        annotator=users.get(user_id, str(user_id)) if user_id is not None else None,
        created_at=annotation.get("created_at"),
        lead_time=float(lead_time) if isinstance(lead_time, int | float) else None,
        cancelled=bool(annotation.get("was_cancelled")),
    )


class PullMixin(Connection):
    """Annotations out: the incremental pull and what it writes."""

    # ---- pull --------------------------------------------------------------------------
    def _cursor_key(self) -> str:
        return self.store.key("labelstudio", "pull_cursor.json")

    def _annotated_tasks(self, after: str | None) -> dict[int, str]:
        """task id -> updated_at of tasks with a finished or skipped annotation, changed after
        `after` (if given). Saving an annotation touches its task's `updated_at`, so this
        finds edits too."""
        found: dict[int, str] = {}
        for counter in ("total_annotations", "cancelled_annotations"):
            items = [{"filter": f"filter:tasks:{counter}", "operator": "greater",
                      "type": "Number", "value": 0}]
            if after:
                items.append({"filter": "filter:tasks:updated_at", "operator": "greater",
                              "type": "Datetime", "value": after})
            query = {"filters": {"conjunction": "and", "items": items}}
            found.update({int(t["id"]): t["updated_at"]
                          for t in self._list_tasks("id,updated_at", query)})
        return found

    def _export(self, task_ids: list[int]) -> Iterator[dict]:
        """The tasks with their annotations, and their predictions as full objects.

        Label Studio's export lists a task's predictions by id only, so each chunk's
        predictions come from the Data Manager (`selectedItems` = the chunk): pull compares
        the annotation with the pre-annotation the task carried. Chunks are requested one at
        a time: Label Studio answers several at once no sooner (three in flight took three
        times as long each, bench/README.md).
        """
        for chunk in _chunks(task_ids, EXPORT_CHUNK):
            query = {"selectedItems": {"all": False, "included": list(chunk)}}
            predictions = {int(t["id"]): t.get("predictions") or [] for t in self._list_tasks(
                "id,predictions", query, fields="all")}
            for task in self._request(
                "GET", f"api/projects/{self.project_id}/export",
                params={"exportType": "JSON", "ids[]": list(chunk)},
                request_options={"timeout_in_seconds": 300},
            ):
                yield {**task, "predictions": predictions.get(int(task["id"]), [])}

    def _record_for(self, task: dict, users: dict[int, str], simulator: int | None
                    ) -> tuple[LabelRecord, np.ndarray | None]:
        """The label record a task's annotations amount to, and its mask for mask kinds
        (AnnotationError if they don't fit).

        The kind reads the results: several finished annotations (overlap) become one target
        by its consensus rule (majority for choices, a per-pixel vote for masks), with the
        votes and agreement kept, and what the annotator changed of the task's
        pre-annotation; a task whose annotations were all cancelled (skipped by the
        annotator) is recorded as skipped so selection leaves it out.
        """
        data = task.get("data") or {}
        image_id = self._image_id_of(data)
        uri = data.get(self.kind.DATA_KEY)
        bucket_root = self.store.s3_uri("")
        if image_id is None or not isinstance(uri, str) or not uri.startswith(bucket_root):
            raise AnnotationError(
                f"Task {task['id']} has no image of s3://{self.store.bucket}/"
                f"{self.store.prefix}/images/ in its data: only tasks alpha pushed can be "
                "pulled; delete this task from the project."
            )
        annotations = task.get("annotations") or []
        if not annotations:
            raise AnnotationError(f"Task {task['id']} has no annotations any more.")

        def when(annotation: dict) -> tuple[str, int]:
            return annotation.get("updated_at") or "", int(annotation["id"])

        annotations = sorted(annotations, key=when)
        finished = [a for a in annotations if not a.get("was_cancelled")]
        reading = None
        if finished:
            reading = self.kind.read_annotations(
                [a.get("result") or [] for a in finished], self.labels,
                self.settings.task.options, predicted=_prediction_result(task),
                size=_image_size(data))
            chosen = finished[reading.index]
        else:
            chosen = annotations[-1]
        target = reading.target if reading is not None else None
        user_id = _user_id(chosen)
        record = LabelRecord(
            image_id=image_id,
            image_key=uri.removeprefix(bucket_root),
            status="labeled" if finished else "skipped",
            label=target.label if target is not None else None,
            segments=target.segments if target is not None else None,
            source="labelstudio",
            annotator=users.get(user_id, str(user_id)) if user_id is not None else None,
            simulated=user_id is not None and user_id == simulator,
            ls_project_id=self.project_id,
            ls_task_id=int(task["id"]),
            ls_annotation_id=int(chosen["id"]),
            # The newest change to any of the task's annotations: an edit of a losing vote
            # still changes the record's votes.
            annotation_updated_at=when(annotations[-1])[0] or None,
            votes=reading.votes if reading is not None else None,
            agreement=reading.agreement if reading is not None else None,
            changed=reading.changed if reading is not None else None,
            restored=bool(data.get("restored")),
            annotation_times=[_annotation_timing(a, users) for a in annotations],
        )
        return record, target.mask if target is not None else None

    @_ls_errors("pulling annotations")
    def pull(self, full: bool = False) -> PullResult:
        """Write a label record for every task annotated or skipped since the last pull.

        Records are upserted, so a repeated pull writes nothing; an annotation that does not
        fit the label config is reported in `problems`, not written, and read again on every
        pull until it is fixed. `full=True` reads every annotated task again (after a label
        config fix, or to check the bucket against Label Studio).

        The pull state (`{prefix}/labelstudio/pull_cursor.json`) holds the newest task change
        seen and the tasks seen in the minute before it: the next pull lists tasks changed
        after that minute began and reads only those it has not seen in that very state.
        """
        project_id = self.project_id
        state = self.store.get_json(self._cursor_key()) or {}
        if state.get("project_id") != project_id or full:
            state = {}
        cursor: str | None = state.get("updated_after")
        seen: dict[str, str] = state.get("seen", {})
        after = _format_time(_parse_time(cursor) - CURSOR_OVERLAP) if cursor else None
        listed = self._annotated_tasks(after)
        todo = sorted(tid for tid, updated in listed.items() if seen.get(str(tid)) != updated)
        result = PullResult(project_id=project_id)
        self._retract_emptied(project_id, result)
        if not todo:
            return result
        users = self._users()
        simulator = next((i for i, e in users.items() if e == SIMULATOR_EMAIL), None)
        candidates: dict[str, tuple[LabelRecord, np.ndarray | None]] = {}
        problem_ids: set[int] = set()
        for task in self._export(todo):
            try:
                record, mask = self._record_for(task, users, simulator)
            except AnnotationError as error:
                task_id = int(task["id"])
                problem_ids.add(task_id)
                result.problems.append(PullProblem(
                    task_id, self._image_id_of(task.get("data") or {}), str(error)))
                continue
            previous = candidates.get(record.image_id)
            if previous is None or _annotation_time(record) > _annotation_time(previous[0]):
                candidates[record.image_id] = (record, mask)
        self._write_records(candidates, result)
        self._save_pull_state(project_id, cursor, {**seen, **{str(t): u for t, u in
                                                             listed.items()}}, problem_ids)
        log.info("pulled project %d: %d new, %d updated, %d unchanged, %d problems", project_id,
                 result.new, result.updated, result.unchanged, len(result.problems))
        return result

    def _retract_emptied(self, project_id: int, result: PullResult) -> None:
        """Retract the label of every task whose annotations were all deleted since it was
        pulled: the record stays, with its history, but no longer counts as a label.

        A task without annotations drops out of the annotated-task listing the cursor reads,
        so these are found the other way round: tasks with no annotation whose image has a
        record pulled from that very task.
        """
        emptied = self.unannotated_tasks()
        with_records = self.store.list_label_ids() if emptied else set()
        for task_id, image_id in emptied.items():
            if image_id is None or image_id not in with_records:
                continue
            old = read_record(self.store, image_id)
            if (old is None or old.source != "labelstudio" or old.status == "retracted"
                    or (old.ls_project_id, old.ls_task_id) != (project_id, task_id)):
                continue
            new = old.model_copy(update={
                "status": "retracted", "label": None, "votes": None, "agreement": None,
                "recorded_at": now_iso(), "history": [],
            })
            if upsert_record(self.store, new, old):
                result.retracted += 1
                result.changed.append(image_id)
                log.info("task %d (%s): its annotations were deleted; label retracted",
                         task_id, image_id)

    def _save_pull_state(self, project_id: int, cursor: str | None, seen: dict[str, str],
                         problem_ids: set[int]) -> None:
        """Advance the cursor, but never past a problem, so problems are read again."""
        times = {task: _parse_time(updated) for task, updated in seen.items()}
        newest = max([*times.values(), *([_parse_time(cursor)] if cursor else [])])
        problems = [times[str(t)] for t in problem_ids if str(t) in times]
        if problems:
            newest = min(newest, min(problems))
        start = newest - CURSOR_OVERLAP
        keep = {task: seen[task] for task, when in times.items()
                if when > start and int(task) not in problem_ids}
        self.store.put_json(self._cursor_key(), {
            "project_id": project_id, "updated_after": _format_time(newest), "seen": keep})

    def _write_records(self, candidates: dict[str, tuple[LabelRecord, np.ndarray | None]],
                       result: PullResult) -> None:
        """Upsert the records in parallel (S3 latency bound), each mask PNG before its JSON;
        one listing saves the reads of records that do not exist yet, which is every record
        of a first pull."""
        existing = self.store.list_label_ids() if candidates else set()

        def upsert(item: tuple[LabelRecord, np.ndarray | None]) -> tuple[LabelRecord, bool, bool]:
            record, mask = item
            old = read_record(self.store, record.image_id) if record.image_id in existing else None
            if mask is not None:
                attach_mask(self.store, record, mask, old)
            if (old is not None and record.restored
                    and (old.status, old.label, old.mask) == (record.status, record.label,
                                                              record.mask)):
                # Put back by `alpha relabel`: the label is the one already recorded, made by
                # whoever made it then, not by the account that refilled the project.
                record.annotator, record.simulated = old.annotator, old.simulated
            return record, old is None, upsert_record(self.store, record, old)

        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(upsert, candidates.values()))
        for record, is_new, written in sorted(outcomes, key=lambda o: o[0].image_id):
            if not written:
                result.unchanged += 1
                continue
            if is_new:
                result.new += 1
            else:
                result.updated += 1
            result.skipped += record.status == "skipped"
            result.changed.append(record.image_id)
