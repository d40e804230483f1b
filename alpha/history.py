"""A project's history, read back from the bucket: what the report, the round artifacts and
`alpha status` show.

Everything comes from records other steps already wrote, so this never talks to Label
Studio: the round summaries (`rounds/{round}/summary.json`, with the queue depth at the
round's end), each round's pull record (which images it wrote), the test evaluation the
demo's simulation adds (`evaluation.json`, optional), the model manifests
(`models/{version}/metrics.json`) and the label records. Old records that lack a field
(a summary without `queue`, a record without `annotation_times`) leave that point out.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from alpha.config import Settings
from alpha.errors import AnnotationError
from alpha.kinds import get_kind
from alpha.records import LabelRecord, read_all_records, read_mask
from alpha.rounds import read_round_record, round_ids, write_round_record
from alpha.store import Store

EVALUATION = "evaluation"
"""The round record a simulation writes with the model's metric on a held-out test split."""


@dataclass
class RoundPoint:
    """One finished round. `metric` is the model's validation value of the kind's primary
    metric (None when it was trained without a validation split); `test_metric` is there
    only where a simulation evaluated the model on a test split. `pulled_*` describe the
    labels this round's pull wrote, as their records are now."""

    round_id: str
    number: int
    finished_at: str | None
    labeled: int
    skipped: int
    retracted: int
    model_version: str
    trained: bool
    metric: float | None
    pushed: int
    selected: int
    pool_size: int | None
    strategy: str | None
    queue_depth: int | None
    pulled: int
    pulled_agreement: float | None
    pulled_overlapped: int
    pulled_changed: float | None
    project_url: str | None = None
    test_metric: float | None = None
    baseline_prefix: str | None = None  # the arm a simulation compared this one with


@dataclass
class ModelPoint:
    """A saved model version (its manifest): when, on how many labels, how good."""

    version: str
    created_at: str | None
    n_labels: int
    metric: float | None
    per_label: dict[str, float]


@dataclass
class AnnotatorWork:
    """One annotator's annotations: how many, skipped, and the seconds they spent per
    annotation (Label Studio's lead_time; empty for annotations made through the API)."""

    annotator: str
    annotations: int = 0
    skipped: int = 0
    lead_times: list[float] = field(default_factory=list)

    @property
    def labels_per_work_hour(self) -> float | None:
        """Annotations per hour of time spent on them, from the mean lead time."""
        if not self.lead_times or np.mean(self.lead_times) <= 0:
            return None
        return float(3600.0 / np.mean(self.lead_times))


@dataclass
class ProjectHistory:
    """What a report shows. `class_counts`: class name -> source ("seed" or "annotators")
    -> labeled images with that class (images whose mask has it, for mask kinds);
    `per_hour`: (hour start, annotator) -> annotations made in that clock hour (UTC)."""

    prefix: str
    kind: str
    primary_metric: str
    labels: list[str]
    rounds: list[RoundPoint]
    models: list[ModelPoint]
    status_counts: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    annotators: list[AnnotatorWork]
    per_hour: dict[tuple[datetime, str], int]
    project_url: str | None
    unfinished_round: str | None
    baseline_name: str | None = None
    baseline: list[RoundPoint] = field(default_factory=list)
    unreadable_masks: int = 0


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _round_number(round_id: str) -> int:
    """3 for `round-0003`; 0 for a folder someone named otherwise (still listed)."""
    digits = round_id.removeprefix("round-")
    return int(digits) if digits.isdigit() else 0


def _round_point(store: Store, round_id: str, summary: dict[str, Any],
                 records: dict[str, LabelRecord]) -> RoundPoint:
    labels = summary.get("labels") or {}
    model = summary.get("model") or {}
    metric_name = model.get("primary_metric") or "accuracy"
    metric = (model.get("metrics") or {}).get(metric_name)
    pull = read_round_record(store, round_id, "pull") or {}
    written = [records[i] for i in pull.get("changed", []) if i in records]
    labeled = [r for r in written if r.status == "labeled"]
    agreements = [r.agreement for r in labeled if r.agreement is not None]
    evaluation = read_round_record(store, round_id, EVALUATION) or {}
    push = summary.get("push") or {}
    selection = summary.get("selection") or {}
    queue = summary.get("queue") or {}
    return RoundPoint(
        round_id=round_id,
        number=_round_number(round_id),
        finished_at=summary.get("written_at"),
        labeled=int(labels.get("labeled", 0)),
        skipped=int(labels.get("skipped", 0)),
        retracted=int(labels.get("retracted", 0)),
        model_version=str(model.get("version", "?")),
        trained=bool(model.get("trained", False)),
        metric=float(metric) if isinstance(metric, int | float) else None,
        pushed=int(push.get("created", 0)),
        selected=int(selection.get("selected", 0)),
        pool_size=selection.get("pool_size"),
        strategy=selection.get("strategy"),
        queue_depth=queue.get("depth"),
        pulled=len(written),
        pulled_agreement=_mean(agreements),
        pulled_overlapped=len(agreements),
        pulled_changed=_mean([r.changed for r in labeled if r.changed is not None]),
        project_url=summary.get("project_url"),
        test_metric=evaluation.get("value"),
        baseline_prefix=evaluation.get("baseline_prefix"),
    )


def read_rounds(store: Store, records: dict[str, LabelRecord] | None = None
                ) -> tuple[list[RoundPoint], str | None]:
    """The finished rounds in order, and the id of an unfinished one (running or crashed:
    it has records but no summary yet), if any."""
    records = read_all_records(store) if records is None else records
    points, unfinished = [], None
    for round_id in round_ids(store):
        summary = read_round_record(store, round_id, "summary")
        if summary is None:
            unfinished = round_id
            continue
        points.append(_round_point(store, round_id, summary, records))
    return points, unfinished


def read_models(store: Store) -> list[ModelPoint]:
    """Every fully written model version (its metrics.json exists), oldest first."""
    versions = [v for v in store.list_subfolders("models") if v != "latest.json"]
    with ThreadPoolExecutor(max_workers=16) as pool:
        manifests = list(pool.map(
            lambda v: store.get_json(store.model_key(v, "metrics.json")), versions))
    models = []
    for version, manifest in zip(versions, manifests, strict=True):
        if manifest is None:
            continue
        metrics = manifest.get("metrics") or {}
        value = metrics.get(manifest.get("primary_metric") or "accuracy")
        models.append(ModelPoint(
            version=version, created_at=manifest.get("created_at"),
            n_labels=int(manifest.get("n_labels", 0)),
            metric=float(value) if isinstance(value, int | float) else None,
            per_label={str(k): float(v) for k, v in (metrics.get("per_label") or {}).items()
                       if isinstance(v, int | float)},
        ))
    return sorted(models, key=lambda m: (m.created_at or "", m.version))


def class_counts(store: Store, records: dict[str, LabelRecord], labels: list[str]
                 ) -> tuple[dict[str, dict[str, int]], int]:
    """class name -> {"seed": n, "annotators": n}: labeled images of each class (for mask
    kinds, images whose mask contains the class), in the order of `labels`; and how many
    masks could not be read (left out)."""
    counts = {name: {"seed": 0, "annotators": 0} for name in labels}
    labeled = [r for r in records.values() if r.status == "labeled"]

    def classes_of(record: LabelRecord) -> list[str] | None:
        if record.mask is None:
            return [record.label] if record.label is not None else []
        try:
            present = np.unique(read_mask(store, record))
        except (AnnotationError, ClientError):  # missing or changed PNG: left out
            return None
        return [labels[int(c)] for c in present if int(c) < len(labels)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        found = list(pool.map(classes_of, labeled))
    unreadable = 0
    for record, names in zip(labeled, found, strict=True):
        if names is None:
            unreadable += 1
            continue
        source = "seed" if record.source == "seed" else "annotators"
        for name in names:
            counts.setdefault(name, {"seed": 0, "annotators": 0})[source] += 1
    return counts, unreadable


def annotator_work(records: dict[str, LabelRecord]
                   ) -> tuple[list[AnnotatorWork], dict[tuple[datetime, str], int]]:
    """Per annotator: annotations, skips and lead times; and annotations per clock hour and
    annotator, from every annotation the label records keep the time of."""
    work: dict[str, AnnotatorWork] = {}
    per_hour: Counter[tuple[datetime, str]] = Counter()
    for record in records.values():
        for made in record.annotation_times:
            name = made.annotator or "unknown"
            entry = work.setdefault(name, AnnotatorWork(name))
            entry.annotations += 1
            entry.skipped += made.cancelled
            if made.lead_time is not None:
                entry.lead_times.append(made.lead_time)
            if made.created_at:
                when = datetime.fromisoformat(made.created_at.replace("Z", "+00:00"))
                per_hour[(when.replace(minute=0, second=0, microsecond=0), name)] += 1
    return sorted(work.values(), key=lambda w: w.annotator), dict(sorted(per_hour.items()))


def read_history(store: Store, settings: Settings,
                 records: dict[str, LabelRecord] | None = None) -> ProjectHistory:
    """Everything the report shows, for the project in `settings` (the bucket only);
    `records`: the label records already read (default: read them)."""
    records = read_all_records(store) if records is None else records
    rounds, unfinished = read_rounds(store, records)
    labels = list(settings.task.labels)
    counts, unreadable = class_counts(store, records, labels)
    annotators, per_hour = annotator_work(records)
    history = ProjectHistory(
        prefix=store.prefix, kind=settings.task.kind,
        primary_metric=get_kind(settings.task.kind).PRIMARY_METRIC, labels=labels,
        rounds=rounds, models=read_models(store),
        status_counts=dict(Counter(r.status for r in records.values())),
        class_counts=counts, annotators=annotators, per_hour=per_hour,
        project_url=rounds[-1].project_url if rounds else None,
        unfinished_round=unfinished, unreadable_masks=unreadable,
    )
    # The arm a simulation compared this one with (random selection on the same data), as
    # the newest evaluation record names it.
    baseline = next((p.baseline_prefix for p in reversed(rounds) if p.baseline_prefix), None)
    if baseline is not None:
        other = store.with_prefix(baseline)
        history.baseline_name = baseline
        history.baseline = read_rounds(other)[0]
    return history


def record_evaluation(store: Store, round_id: str, metric: str, value: float, n_images: int,
                      baseline_prefix: str | None = None) -> None:
    """Keep a finished round's test evaluation beside its summary (the simulation's: the
    model on a test split the loop never sees), naming the arm it is compared with."""
    write_round_record(store, round_id, EVALUATION, {
        "split": "test", "metric": metric, "value": float(value), "n_images": int(n_images),
        "baseline_prefix": baseline_prefix})


def rounds_table(history: ProjectHistory) -> list[dict[str, Any]]:
    """One row per finished round, for tables (the Prefect artifact, `alpha status`)."""
    def shown(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return [{
        "round": p.round_id, "finished": p.finished_at or "-", "labels": p.labeled,
        "model": p.model_version, f"validation {history.primary_metric}": shown(p.metric, ".3f"),
        "pushed": p.pushed, "queue": "-" if p.queue_depth is None else p.queue_depth,
        "agreement": shown(p.pulled_agreement, ".0%"),
        "changed": shown(p.pulled_changed, ".1%"),
    } for p in history.rounds]
