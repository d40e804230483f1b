"""The annotators' queue: tasks in, exactly once per image.

Push imports the tasks of images that have none yet in bulk (one request per IMPORT_CHUNK
tasks, predictions included), waits out the import of a push that was killed, and removes
duplicate tasks; restore refills a re-created project from the label records. Predictions
arrive ready-made from the kind (`PushItem.result`): the queue passes them through.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from alpha.errors import AnnotationError
from alpha.kinds.base import Target
from alpha.labelstudio.connection import Connection, _chunks, _ls_errors, log
from alpha.records import LabelRecord, now_iso

IMPORT_CHUNK = 500
PREDICTION_CHUNK = 200  # tasks per Data Manager request for their predictions


@dataclass(frozen=True)
class PushItem:
    """One selected image to send to annotators, with its pre-annotation.

    `result` is the kind's Label Studio results (choices, brush regions...), passed through
    untouched; `score` is the model's confidence: lower means more uncertain, and Label
    Studio's uncertainty sampling serves the lowest score first.
    """

    image_id: str
    key: str
    result: list[dict]
    score: float
    images: dict[str, str] = field(default_factory=dict)
    """Bucket keys of the extra images the task shows, by task data key (the kind's
    task_images), already written."""
    size: tuple[int, int] | None = None
    """The image's own (width, height), kept in the task's data (`image_size`) so that an
    annotation with no region still says what it covers (an image with no object)."""


@dataclass
class PushResult:
    """image id -> task id for the tasks made now and for those already queued, so a round's
    push record names the task of every selected image, even on a repeated push."""

    project_id: int
    model_version: str
    created: dict[str, int] = field(default_factory=dict)
    already_present: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0


@dataclass
class QueueState:
    """The tasks nobody has annotated or skipped yet: how many, the oldest (id, when it was
    made), and per model version of their pre-annotation how many ("none" without one)."""

    depth: int
    by_model_version: dict[str, int]
    oldest_task_id: int | None = None
    oldest_created_at: str | None = None


UNANNOTATED = {"filters": {"conjunction": "and", "items": [
    {"filter": f"filter:tasks:{counter}", "operator": "equal", "type": "Number", "value": 0}
    for counter in ("total_annotations", "cancelled_annotations")]}}
"""The Data Manager query of tasks without a finished or skipped annotation."""


class QueueMixin(Connection):
    """Tasks in: push, restore, import once, duplicates, the unannotated queue."""

    @_ls_errors("pushing tasks")
    def push(self, items: Iterable[PushItem], model_version: str, round_id: str) -> PushResult:
        """Queue images for annotation, each pre-annotated with the model's guess.

        An image that already has a task in the project is left alone, so pushing the same
        selection twice (or again after a crash) creates nothing new.
        """
        items = list(items)
        ordered = sorted({item.image_id: item for item in reversed(items)}.values(),
                         key=lambda item: item.score)  # most useful first
        tasks = {
            item.image_id: {
                "data": {**self._task_images(item.key, item.images),
                         self.kind.DATA_KEY: self.store.s3_uri(item.key),
                         "image_id": item.image_id, "round": round_id,
                         **({"image_size": list(item.size)} if item.size else {})},
                "predictions": [{"model_version": model_version, "score": float(item.score),
                                 "result": item.result}],
            }
            for item in ordered
        }
        project_id, created, present, removed = self._import_once(tasks, f"push of {round_id}")
        result = PushResult(project_id=project_id, model_version=model_version,
                            created=created, already_present=present,
                            duplicates_removed=removed)
        if result.created:
            # Uncertainty sampling only ranks predictions of the project's model version.
            self._request("PATCH", f"api/projects/{project_id}/",
                          json={"model_version": model_version})
        log.info("pushed %d tasks to project %d (%d already there)", len(result.created),
                 project_id, len(result.already_present))
        return result

    @_ls_errors("refilling the project from the label records")
    def restore(self, records: Iterable[LabelRecord]) -> PushResult:
        """Put every labeled image back into the project as a task that carries its label.

        For a project re-created after Label Studio lost its database (or deleted by
        mistake): annotators see what is already labeled, selection and push never ask for
        it again, and the next pull recognises the labels as the ones already recorded.
        """
        from alpha.train import record_target

        def restorable(record: LabelRecord) -> Target | None:
            if record.status != "labeled":
                return None
            try:
                target = record_target(self.store, record)
            except AnnotationError as error:
                log.warning("not restoring %s: %s", record.image_id, error)
                return None
            return target if self.kind.target_problem(target, self.labels) is None else None

        ordered = sorted(records, key=lambda r: r.image_id)
        with ThreadPoolExecutor(max_workers=16) as pool:
            targets = list(pool.map(restorable, ordered))
        tasks = {
            r.image_id: {
                "data": {**self._task_images(r.image_key),
                         self.kind.DATA_KEY: self.store.s3_uri(r.image_key),
                         "image_id": r.image_id, "restored": True},
                "annotations": [{"result": self.kind.result_from_target(
                    target, self.labels, (r.mask.width, r.mask.height) if r.mask else (0, 0))}],
            }
            for r, target in zip(ordered, targets, strict=True) if target is not None
        }
        project_id, created, present, removed = self._import_once(tasks, "restore")
        log.info("restored %d labeled tasks to project %d (%d already there)", len(created),
                 project_id, len(present))
        return PushResult(project_id=project_id, model_version="restored", created=created,
                          already_present=present, duplicates_removed=removed)

    def _task_images(self, image_key: str, images: dict[str, str] | None = None
                     ) -> dict[str, str]:
        """`s3://` URIs of the extra images the label config shows. Label Studio refuses a
        task without every key its config names, so one the kind did not make (a restored
        task has no prediction) shows the task's own image."""
        keys = self.kind.task_images(self.settings.task.options)
        chosen = {name: (images or {}).get(name, image_key) for name in keys}
        return {name: self.store.s3_uri(key) for name, key in chosen.items()}

    def _intent_key(self) -> str:
        return self.store.key("labelstudio", "import_in_progress.json")

    def _import_once(
        self, tasks: dict[str, dict], what: str
    ) -> tuple[int, dict[str, int], dict[str, int], int]:
        """Import the tasks of images that have none yet, so that each image ends with
        exactly one task however often this runs or wherever a run is killed.

        A run killed during an import leaves the request to finish on the server, after the
        run has gone: the marker written before importing tells the next run to wait until
        the project's task count stops moving before it reads what exists. Duplicates that
        still appear (two runs at once) are removed afterwards, keeping the annotated or
        oldest task. Returns (project id, created, already present, duplicates removed).
        """
        project_id = self.ensure_project()
        if self.store.get_json(self._intent_key()) is not None:
            self._wait_until_quiet()
        removed, existing = self.remove_duplicate_tasks()
        present = {image_id: existing[image_id] for image_id in tasks if image_id in existing}
        todo = [(image_id, task) for image_id, task in tasks.items() if image_id not in existing]
        created: dict[str, int] = {}
        if todo:
            self.store.put_json(self._intent_key(), {"what": what, "tasks": len(todo),
                                                     "started_at": now_iso()})
            for chunk in _chunks(todo, IMPORT_CHUNK):
                response = self.client.projects.import_tasks(
                    id=project_id, request=[task for _, task in chunk], return_task_ids=True,
                    request_options={"timeout_in_seconds": 300},
                )
                task_ids = list(getattr(response, "task_ids", None) or [])
                if len(task_ids) != len(chunk):  # never seen; re-read rather than guess
                    ids = self.task_image_ids()
                    created.update({image_id: ids[image_id] for image_id, _ in chunk})
                else:  # Label Studio creates tasks in the order given
                    created.update({image_id: int(task_id) for (image_id, _), task_id
                                    in zip(chunk, task_ids, strict=True)})
            removed += self.remove_duplicate_tasks()[0]
            self.store.delete(self._intent_key())
        return project_id, created, present, removed

    def _task_count(self) -> int:
        data = self._request("GET", "api/tasks/", params={
            "project": self.project_id, "include": "id", "resolve_uri": False, "page_size": 1})
        return int(data.get("total", 0))

    def _wait_until_quiet(self, settle_s: float = 3.0, limit_s: float = 120.0) -> None:
        """Until the task count has not changed for `settle_s` (an import of a killed run is
        still being written), or `limit_s` passed."""
        deadline = time.monotonic() + limit_s
        count, since = self._task_count(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < settle_s:
            time.sleep(0.5)
            now = self._task_count()
            if now != count:
                count, since = now, time.monotonic()

    @_ls_errors("removing duplicate tasks")
    def remove_duplicate_tasks(self) -> tuple[int, dict[str, int]]:
        """Delete extra tasks of an image, keeping every annotated one (a person's work is
        never deleted), else the oldest. Returns how many were deleted and, from the same
        listing, image id -> task id of what is left (the oldest where several remain)."""
        by_image: dict[str, list[dict]] = {}
        for task in self._list_tasks("id,data,total_annotations,cancelled_annotations"):
            image_id = self._image_id_of(task.get("data") or {})
            if image_id is not None:
                by_image.setdefault(image_id, []).append(task)
        removed, kept = 0, {}
        for image_id, copies in by_image.items():
            annotated = [t for t in copies
                         if t.get("total_annotations") or t.get("cancelled_annotations")]
            keep = {t["id"] for t in annotated} or {min(t["id"] for t in copies)}
            kept[image_id] = int(min(keep))
            if len(copies) < 2:
                continue
            for task in copies:
                if task["id"] not in keep:
                    self._request("DELETE", f"api/tasks/{task['id']}/")
                    removed += 1
            log.warning("image %s had %d tasks; deleted %d", image_id, len(copies),
                        len(copies) - len(keep))
        return removed, kept

    @_ls_errors("listing the tasks nobody has annotated yet")
    def unannotated_tasks(self) -> dict[int, str | None]:
        """task id -> image id of every task with no annotation (finished or skipped), by id.

        Push imports the most uncertain first, so id order is the order people are served.
        """
        tasks = self._list_tasks("id,data", UNANNOTATED)
        return {int(t["id"]): self._image_id_of(t.get("data") or {})
                for t in sorted(tasks, key=lambda t: t["id"])}

    @_ls_errors("reading the predictions of the queued tasks")
    def queued_tasks(self) -> list[dict]:
        """The unannotated tasks (by id, the order they were queued) with their data and
        their predictions as full objects (id, model_version, score)."""
        ids = list(self.unannotated_tasks())
        found: dict[int, dict] = {}
        for chunk in _chunks(ids, PREDICTION_CHUNK):
            query = {"selectedItems": {"all": False, "included": list(chunk)}}
            found.update({int(t["id"]): t for t in self._list_tasks(
                "id,data,predictions", query, fields="all")})
        return [found[i] for i in ids if i in found]

    @_ls_errors("replacing the predictions of the queued tasks")
    def replace_predictions(self, predictions: dict[int, PushItem], model_version: str,
                            stale: dict[int, list[int]]) -> int:
        """Give each task (by id) the prediction `predictions[task]` of `model_version`,
        then delete its older predictions `stale[task]`, and make `model_version` the
        project's, so uncertainty sampling ranks the whole queue by one model's scores.

        New predictions go in first: a run stopped half-way leaves a task with two
        predictions, never none, and the next run deletes the stale one. Returns how many
        predictions were made.
        """
        project_id = self.project_id
        todo = [{"task": task_id, "model_version": model_version, "score": float(item.score),
                 "result": item.result} for task_id, item in predictions.items()]
        for chunk in _chunks(todo, IMPORT_CHUNK):
            self._request("POST", f"api/projects/{project_id}/import/predictions",
                          json=list(chunk), request_options={"timeout_in_seconds": 300})
        for ids in stale.values():
            for prediction_id in ids:
                self._request("DELETE", f"api/predictions/{prediction_id}/")
        if todo or stale:
            self._request("PATCH", f"api/projects/{project_id}/",
                          json={"model_version": model_version})
        return len(todo)

    @_ls_errors("reading the annotators' queue")
    def queue_state(self) -> QueueState:
        """The tasks waiting for an annotator: how many, the oldest, and how many carry a
        pre-annotation of each model version (`fields=all` fills that column; the
        predictions themselves are not read)."""
        tasks = list(self._list_tasks("id,created_at,predictions_model_versions", UNANNOTATED,
                                      fields="all"))
        versions = Counter(str(t.get("predictions_model_versions") or "none") for t in tasks)
        oldest = min(tasks, key=lambda t: (t.get("created_at") or "", t["id"]), default=None)
        return QueueState(
            depth=len(tasks), by_model_version=dict(sorted(versions.items())),
            oldest_task_id=int(oldest["id"]) if oldest else None,
            oldest_created_at=oldest.get("created_at") if oldest else None)

    @_ls_errors("saving an annotation")
    def create_annotation(self, task_id: int, result: list[dict], *, was_cancelled: bool = False,
                          completed_by: int | None = None) -> int:
        """Annotate one task through the API (the simulator's way in); returns its id."""
        extra: dict[str, Any] = {} if completed_by is None else {"completed_by": completed_by}
        annotation = self.client.annotations.create(
            id=task_id, result=result, was_cancelled=was_cancelled, **extra
        )
        return int(annotation.id)

