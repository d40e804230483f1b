"""Label Studio as alpha's work queue: one project per prefix, tasks in, annotations out.

S3 stays the source of truth. Label Studio only holds what people are working on, so every
operation here is safe to repeat or to kill at any point: the project and its storage are
found by title and bucket before anything is created, push skips images that already have a
task (asked of Label Studio itself), waits out the import of a push that was killed and
removes duplicate tasks (`_import_once`), and pull turns annotations into label records with
`records.upsert_record`, which writes nothing when a label did not change.

Speed matters once a project holds thousands of tasks: tasks are created in bulk imports (one
request per 500 tasks, predictions included), listed through the Data Manager API with only
the fields we read (`include=id,data`, no URI resolution), and annotations are read with the
export endpoint, only for tasks changed since the last pull.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np
from botocore.exceptions import ClientError
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from alpha.config import Settings
from alpha.errors import AnnotationError, ConfigError, ServiceRefused, ServiceUnavailable
from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.records import LabelRecord, attach_mask, now_iso, read_record, upsert_record
from alpha.store import IMAGE_SUFFIXES, Store

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

IMPORT_CHUNK = 500
EXPORT_CHUNK = 200  # ids per export request: Django refuses over 1000 query fields (HTTP 400)
PAGE_SIZE = 1000
PRESIGN_TTL_MIN = 15
CORS_MAX_AGE_S = 3600
# Annotations saved in the same moment as a pull may commit after it listed tasks; re-reading
# this much before the cursor catches them (upserts make the overlap free of duplicates).
CURSOR_OVERLAP = timedelta(seconds=60)
SAMPLING = "Uncertainty sampling"
# The Label Studio user the simulated annotator works as; pull marks its annotations simulated.
SIMULATOR_EMAIL = "simulator@alpha.local"
SIMULATOR_USERNAME = "alpha-simulator"


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


@dataclass
class PushResult:
    """image id -> task id for the tasks made now and for those already queued, so a round's
    push record names the task of every selected image, even on a repeated push."""

    project_id: int
    model_version: str
    created: dict[str, int] = field(default_factory=dict)
    already_present: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0


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


def _ls_errors(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn SDK and network failures into ServiceUnavailable that says what to fix."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            project: LabelStudioProject = args[0]  # type: ignore[assignment]
            try:
                return method(*args, **kwargs)
            except ApiError as error:
                raise project._api_error(error, action) from None
            except httpx.TimeoutException:
                raise ServiceUnavailable(
                    f"Label Studio at {project.url} did not answer in time while {action}: "
                    "check that it is running and not overloaded."
                ) from None
            except httpx.TransportError:
                raise ServiceUnavailable(
                    f"Label Studio at {project.url} is unreachable: start it (`alpha stack up`) "
                    "or fix labelstudio.url."
                ) from None

        return wrapper

    return decorate


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _format_time(value: datetime) -> str:
    """UTC with microseconds: the only form Label Studio's Datetime filters accept."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LabelStudioProject:
    """The Label Studio project that holds one alpha project's annotation queue."""

    def __init__(self, settings: Settings, store: Store, client: LabelStudio | None = None):
        self.settings = settings
        self.store = store
        self.kind = get_kind(settings.task.kind)
        self.labels = list(settings.task.labels)
        self.url = settings.labelstudio.url.rstrip("/")
        self.title = settings.project_title
        try:
            self.client = client or LabelStudio(
                base_url=self.url, api_key=settings.labelstudio.api_key.get_secret_value()
            )
        except ApiError as error:  # the SDK refuses an expired JWT token as it starts
            raise self._api_error(error, "starting the Label Studio client") from None
        self._http = self.client._client_wrapper.httpx_client
        self._project_id: int | None = None

    # ---- errors ------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        """Remove every secret we hold from a message that quotes a server's answer."""
        secrets = (
            self.settings.labelstudio.api_key.get_secret_value(),
            self.settings.s3.access_key_id.get_secret_value(),
            self.settings.s3.secret_access_key.get_secret_value(),
        )
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _api_error(self, error: ApiError, action: str) -> ServiceUnavailable:
        code = error.status_code
        if code in (401, 403) and not isinstance(error.body, dict):
            # Label Studio answers JSON; an HTML or XML refusal is another server (S3, a proxy)
            return ServiceRefused(
                f"{self.url} refused the request ({code}) while {action}, and its answer is not "
                "Label Studio's: check that labelstudio.url is the Label Studio server."
            )
        if code in (401, 403):
            # Label Studio's reason ("Invalid token.", "API key has expired...") tells which
            # token to get; scrubbed all the same, in case a server echoes what it was sent.
            reason = self._scrub(str(error.body.get("detail") or ""))[:200]
            return ServiceRefused(
                f"Label Studio at {self.url} refused the API token ({code}) while {action}"
                f"{f' ({reason})' if reason else ''}: check labelstudio.api_key."
            )
        body = error.body
        detail = body
        if isinstance(body, dict):
            detail = body.get("validation_errors") or body.get("detail") or body
        detail = self._scrub(str(detail))[:500]
        if code is not None and code >= 500:
            return ServiceUnavailable(
                f"Label Studio at {self.url} failed while {action} (HTTP {code}): {detail}. "
                "See the Label Studio log and retry."
            )
        return ServiceRefused(
            f"Label Studio at {self.url} refused {action} (HTTP {code}): {detail}"
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """A raw API call through the SDK's client (its auth, retries and base URL)."""
        response = self._http.request(path, method=method, **kwargs)
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise ApiError(status_code=response.status_code, headers={}, body=body)
        return response.json() if response.content else None

    # ---- the project -------------------------------------------------------------------
    @property
    def project_id(self) -> int:
        if self._project_id is None:
            self.ensure_project()
        assert self._project_id is not None
        return self._project_id

    def _find_project(self) -> dict | None:
        """The project titled `self.title` (the oldest one if people made copies)."""
        found: list[dict] = []
        page = 1
        while True:
            data = self._request(
                "GET", "api/projects/",
                params={"title": self.title, "page": page, "page_size": 100},
            )
            found += [p for p in data["results"] if p.get("title") == self.title]
            if not data.get("next"):
                break
            page += 1
        if not found:
            return None
        chosen = min(found, key=lambda p: p["id"])
        if len(found) > 1:
            log.warning("%d Label Studio projects are titled %r; using the oldest (id %d)",
                        len(found), self.title, chosen["id"])
        return self._request("GET", f"api/projects/{chosen['id']}/")

    @_ls_errors("setting up the project")
    def ensure_project(self) -> int:
        """Create or reuse the project, its label config, sampling, storage and bucket CORS.

        Safe to call any number of times: each part is compared with what is there and
        changed only when it differs.
        """
        config = self.kind.label_config(self.labels)
        project = self._find_project()
        if project is None:
            created = self.client.projects.create(
                title=self.title,
                label_config=config,
                description=f"alpha active learning queue for s3://{self.store.bucket}/"
                f"{self.store.prefix}/images/",
                sampling=SAMPLING,
            )
            project = {"id": created.id, "label_config": config, "sampling": SAMPLING}
            log.info("created Label Studio project %d %r", created.id, self.title)
            # The SDK retries a create that failed on the server (Label Studio on SQLite
            # answers 500 "database is locked" under concurrent writes) even when the first
            # attempt made the project: keep the oldest, drop the empty copy just made.
            oldest = self._find_project()
            if oldest is not None and int(oldest["id"]) != created.id:
                self.client.projects.delete(id=created.id)
                log.warning("dropped duplicate project %d: %r exists as project %d",
                            created.id, self.title, oldest["id"])
                project = oldest
        project_id = int(project["id"])
        changes: dict[str, Any] = {}
        if project.get("label_config") != config:
            changes["label_config"] = config
        if project.get("sampling") != SAMPLING:
            changes["sampling"] = SAMPLING
        if changes:
            try:
                self._request("PATCH", f"api/projects/{project_id}/", json=changes)
            except ApiError as error:
                if "label_config" in changes and error.status_code == 400:
                    raise ConfigError(
                        f"Label Studio refused the new labels {self.labels} for project "
                        f"{project_id}: {self._scrub(str(error.body))[:400]}. Labels that "
                        "existing annotations use cannot be removed: restore them in "
                        "task.labels, or fix those annotations first."
                    ) from None
                raise
            log.info("updated Label Studio project %d: %s", project_id, ", ".join(changes))
        self._project_id = project_id
        self._ensure_storage(project_id)
        self._ensure_cors()
        return project_id

    def _ensure_storage(self, project_id: int) -> int | None:
        """Connect the bucket so Label Studio can presign the tasks' `s3://` image URLs.

        Label Studio checks at creation that the prefix holds at least one object, so with no
        images yet this waits (returns None) and the next call (push always makes one) adds it.
        """
        prefix = self.store.key("images")
        wanted = {"bucket": self.store.bucket, "prefix": prefix, "presign": True,
                  "presign_ttl": PRESIGN_TTL_MIN}
        storages = self.client.import_storage.s3.list(project=project_id)
        ours = [s for s in storages if s.bucket == self.store.bucket]
        if ours:
            storage = min(ours, key=lambda s: s.id)
            differs = {k: v for k, v in wanted.items() if getattr(storage, k, None) != v}
            if differs:
                self.client.import_storage.s3.update(id=storage.id, project=project_id, **differs)
            return storage.id
        if next(self.store.list_keys("images/"), None) is None:
            log.info("no images under s3://%s/%s/ yet: storage connection waits for them",
                     self.store.bucket, prefix)
            return None
        s3 = self.settings.s3
        created = self.client.import_storage.s3.create(
            project=project_id,
            title="alpha images",
            description="Images alpha sends to annotators (tasks are imported by alpha).",
            regex_filter=r".*\.(" + "|".join(s.lstrip(".") for s in IMAGE_SUFFIXES) + ")$",
            use_blob_urls=True,
            recursive_scan=True,
            aws_access_key_id=s3.access_key_id.get_secret_value(),
            aws_secret_access_key=s3.secret_access_key.get_secret_value(),
            region_name=s3.region,
            **wanted,
        )
        log.info("connected s3://%s/%s/ to Label Studio project %d", self.store.bucket,
                 prefix, project_id)
        return created.id

    def _ensure_cors(self) -> None:
        """Let annotators' browsers fetch presigned images from the bucket.

        The labeling page downloads each image with a script request, which a browser only
        allows when the bucket answers with CORS headers for Label Studio's origin.
        """
        origins = sorted({_origin(self.url), *(
            [_origin(self.settings.labelstudio.public_url)]
            if self.settings.labelstudio.public_url else []
        )})
        client = self.store.client
        try:
            try:
                rules = client.get_bucket_cors(Bucket=self.store.bucket)["CORSRules"]
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "NoSuchCORSConfiguration":
                    raise
                rules = []

            def allowed(origin: str) -> bool:
                return any(
                    (origin in r.get("AllowedOrigins", []) or "*" in r.get("AllowedOrigins", []))
                    and {"GET", "HEAD"} <= set(r.get("AllowedMethods", []))
                    for r in rules
                )

            missing = [o for o in origins if not allowed(o)]
            if not missing:
                return
            rules = [*rules, {"AllowedOrigins": missing, "AllowedMethods": ["GET", "HEAD"],
                              "AllowedHeaders": ["*"], "MaxAgeSeconds": CORS_MAX_AGE_S}]
            client.put_bucket_cors(Bucket=self.store.bucket,
                                   CORSConfiguration={"CORSRules": rules})
            log.info("bucket %s: allowed GET/HEAD from %s", self.store.bucket, ", ".join(missing))
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise ServiceUnavailable(
                f"S3 at {self.store.endpoint} refused the bucket CORS rule ({code}) that lets "
                "annotators' browsers load images: give the S3 key s3:PutBucketCors, or add a "
                f"rule allowing GET from {', '.join(origins)} yourself."
            ) from None

    def project_url(self) -> str:
        """Where people open the queue."""
        base = (self.settings.labelstudio.public_url or self.url).rstrip("/")
        return f"{base}/projects/{self.project_id}/data"

    # ---- tasks -------------------------------------------------------------------------
    def _list_tasks(self, include: str, query: dict | None = None) -> Iterator[dict]:
        """Tasks through the Data Manager API, with only the `include`d fields.

        `fields=all` would serialize annotations and predictions of every task, and
        `resolve_uri` would presign every image: both are many times slower.
        """
        params: dict[str, Any] = {"project": self.project_id, "include": include,
                                  "resolve_uri": False, "page_size": PAGE_SIZE}
        if query:
            params["query"] = json.dumps(query)
        page, seen = 1, 0
        while True:
            data = self._request("GET", "api/tasks/", params={**params, "page": page},
                                 request_options={"timeout_in_seconds": 300})
            tasks = data.get("tasks", [])
            yield from tasks
            seen += len(tasks)
            if not tasks or seen >= data.get("total", 0):
                return
            page += 1

    def _image_id_of(self, data: dict) -> str | None:
        if data.get("image_id"):
            return str(data["image_id"])
        uri = data.get(self.kind.DATA_KEY)
        own = self.store.s3_uri(self.store.key("images")) + "/"
        if isinstance(uri, str) and uri.startswith(own):
            return self.store.image_id_for(uri.removeprefix(self.store.s3_uri("")))
        return None

    @_ls_errors("listing the project's tasks")
    def task_image_ids(self) -> dict[str, int]:
        """image_id -> task id for every task: what is already queued, straight from LS."""
        found: dict[str, int] = {}
        for task in self._list_tasks("id,data"):
            image_id = self._image_id_of(task.get("data") or {})
            if image_id is not None and image_id not in found:
                found[image_id] = int(task["id"])
        return found

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
                "data": {self.kind.DATA_KEY: self.store.s3_uri(item.key),
                         "image_id": item.image_id, "round": round_id},
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
                "data": {self.kind.DATA_KEY: self.store.s3_uri(r.image_key),
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
        items = [{"filter": f"filter:tasks:{counter}", "operator": "equal", "type": "Number",
                  "value": 0} for counter in ("total_annotations", "cancelled_annotations")]
        query = {"filters": {"conjunction": "and", "items": items}}
        tasks = self._list_tasks("id,data", query)
        return {int(t["id"]): self._image_id_of(t.get("data") or {})
                for t in sorted(tasks, key=lambda t: t["id"])}

    @_ls_errors("saving an annotation")
    def create_annotation(self, task_id: int, result: list[dict], *, was_cancelled: bool = False,
                          completed_by: int | None = None) -> int:
        """Annotate one task through the API (the simulator's way in); returns its id."""
        extra: dict[str, Any] = {} if completed_by is None else {"completed_by": completed_by}
        annotation = self.client.annotations.create(
            id=task_id, result=result, was_cancelled=was_cancelled, **extra
        )
        return int(annotation.id)

    # ---- users -------------------------------------------------------------------------
    def _users(self) -> dict[int, str]:
        data = self._request("GET", "api/users/")
        users = data.get("results", data) if isinstance(data, dict) else data
        return {int(u["id"]): u.get("email") or u.get("username") or str(u["id"]) for u in users}

    @_ls_errors("setting up the simulated annotator's user")
    def simulator_user_id(self) -> int:
        """The Label Studio user simulated annotations are made as (created once).

        A distinct user is the marker that survives in Label Studio: every annotation keeps
        its `completed_by`, the UI shows who made it, and pull reads it back as simulated.
        """
        for user_id, email in self._users().items():
            if email == SIMULATOR_EMAIL:
                return user_id
        created = self._request("POST", "api/users/", json={
            "email": SIMULATOR_EMAIL, "username": SIMULATOR_USERNAME,
            "first_name": "Simulated", "last_name": "annotator (alpha)",
        })
        return int(created["id"])

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
        for chunk in _chunks(task_ids, EXPORT_CHUNK):
            yield from self._request(
                "GET", f"api/projects/{self.project_id}/export",
                params={"exportType": "JSON", "ids[]": list(chunk)},
                request_options={"timeout_in_seconds": 300},
            )

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
                self.settings.task.options, predicted=_prediction_result(task))
            chosen = finished[reading.index]
        else:
            chosen = annotations[-1]
        target = reading.target if reading is not None else None
        user = chosen.get("completed_by")
        user_id = user.get("id") if isinstance(user, dict) else user
        record = LabelRecord(
            image_id=image_id,
            image_key=uri.removeprefix(bucket_root),
            status="labeled" if finished else "skipped",
            label=target.label if target is not None else None,
            segments=target.segments if target is not None else None,
            source="labelstudio",
            annotator=users.get(int(user_id), str(user_id)) if user_id is not None else None,
            simulated=user_id is not None and int(user_id) == simulator,
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
