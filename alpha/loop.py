"""The steps of one active learning round, as plain functions the flows call.

Each step reads what it needs from S3 or Label Studio and writes its result back to the
round's folder before returning, so any step can be re-run, and a crashed round resumes
under the same id (see alpha.rounds). Flows add retries, logging and artifacts on top.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alpha.config import Settings, load_settings
from alpha.errors import DataError
from alpha.kinds import get_kind
from alpha.labelstudio import LabelStudioProject, PushItem
from alpha.records import read_all_records
from alpha.rounds import read_round_record, write_round_record
from alpha.score import score_pool
from alpha.store import Store
from alpha.strategies import (
    NEEDS_GRADIENTS,
    NEEDS_SAMPLES,
    select_batch,
    strategy_measure,
    strategy_score,
)
from alpha.train import load_model, model_images, train_model


@dataclass
class RoundContext:
    """What every step needs: validated settings, the bucket and the Label Studio project."""

    settings: Settings
    store: Store
    project: LabelStudioProject


def open_context(config_file: str | Path | None = None, **overrides) -> RoundContext:
    settings = load_settings(config_file, **overrides)
    store = Store.from_settings(settings)
    return RoundContext(settings, store, LabelStudioProject(settings, store))


def pull_step(ctx: RoundContext, round_id: str) -> dict:
    """Bring finished annotations from Label Studio into `labels/`."""
    ctx.store.ensure_bucket()
    ctx.project.ensure_project()
    result = ctx.project.pull()
    summary = {
        "new": result.new, "updated": result.updated, "unchanged": result.unchanged,
        "skipped": result.skipped, "retracted": result.retracted,
        "problems": [f"task {p.task_id} ({p.image_id}): {p.reason}" for p in result.problems],
    }
    write_round_record(ctx.store, round_id, "pull", {**summary, "changed": result.changed})
    return summary


def label_counts(ctx: RoundContext) -> dict[str, Any]:
    """Labels by status, how far annotators agree where several annotated one image, and how
    much of the pre-annotations they changed (the work pre-filling did not save them)."""
    records = read_all_records(ctx.store).values()
    labeled = [r for r in records if r.status == "labeled"]
    overlapped = [r.agreement for r in labeled if r.agreement is not None]
    changed = [r.changed for r in labeled if r.changed is not None]
    return {
        "labeled": len(labeled),
        "skipped": sum(r.status == "skipped" for r in records),
        "retracted": sum(r.status == "retracted" for r in records),
        "overlapped": len(overlapped),
        "mean_agreement": float(np.mean(overlapped)) if overlapped else None,
        "compared": len(changed),
        "mean_changed": float(np.mean(changed)) if changed else None,
    }


def train_step(ctx: RoundContext) -> dict:
    """Train a new model, unless too few labels arrived since the last one (loop.min_new_labels)."""
    labeled = label_counts(ctx)["labeled"]
    try:
        latest = load_model(ctx.store)
    except DataError:  # no model yet
        latest = None
    threshold = ctx.settings.loop.min_new_labels
    metric = get_kind(ctx.settings.task.kind).PRIMARY_METRIC
    if latest is not None and labeled - latest.metrics["n_labels"] < threshold:
        return {"version": latest.version, "metrics": latest.metrics["metrics"], "trained": False,
                "primary_metric": metric}
    info = train_model(ctx.store, ctx.settings)
    return {"version": info.version, "metrics": info.metrics, "trained": True,
            "primary_metric": metric}


LABELED_EMBEDDINGS = frozenset({"coreset", "typiclust"})
"""Strategies that place the pool relative to the labeled images' embeddings."""


def select_step(ctx: RoundContext, round_id: str, version: str, strategy: str,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """Score the pool with the model and write the round's selection (reused on a re-run).

    Only what the strategy needs is computed: Monte-Carlo samples for Bayesian measures,
    BADGE's gradient embeddings, and the labeled images' embeddings for the strategies that
    compare the pool with what is already labeled (core-set, TypiClust). The record holds
    ids, keys and scores only: push predicts the chosen images again for their
    pre-annotations. `progress(done, total)` follows the scoring of the pool.
    """
    existing = read_round_record(ctx.store, round_id, "selection")
    if existing is not None:
        return {key: value for key, value in existing.items() if key != "items"}
    loop_settings = ctx.settings.loop
    loaded = load_model(ctx.store, version)
    records = read_all_records(ctx.store)
    labeled_ids = {image_id for image_id, r in records.items() if r.status == "labeled"}
    mc_samples = loop_settings.mc_samples if strategy in NEEDS_SAMPLES else 0
    # A retracted label's image may be chosen again once its task is gone from the queue.
    exclude = {i for i, r in records.items() if r.status != "retracted"}
    exclude |= set(ctx.project.task_image_ids())
    pool = score_pool(ctx.store, loaded, ctx.settings, exclude=exclude, mc_samples=mc_samples,
                      gradients=strategy in NEEDS_GRADIENTS, progress=progress)
    labeled_embeddings = None
    cold_start = len(labeled_ids) < len(loaded.labels)  # select_batch switches to TypiClust
    if (strategy in LABELED_EMBEDDINGS or cold_start) and labeled_ids:
        labeled_embeddings = score_pool(
            ctx.store, loaded, ctx.settings, include=labeled_ids
        ).embeddings
    indices = select_batch(
        strategy, loop_settings.batch_size, pool.scores, labeled_embeddings,
        n_labeled=len(labeled_ids), random_state=loop_settings.random_state,
    )
    scores = strategy_score(strategy, pool.scores) if len(pool.image_ids) else np.empty(0)
    items = [
        {"image_id": pool.image_ids[i], "key": pool.keys[i], "uncertainty": float(scores[i]),
         "confidence": float(pool.scores.confidence[i])}
        for i in indices
    ]
    summary = {"strategy": strategy, "measure": strategy_measure(strategy),
               "model_version": version, "pool_size": len(pool.image_ids),
               "selected": len(items), "unreadable": pool.skipped}
    write_round_record(ctx.store, round_id, "selection", {**summary, "items": items})
    return summary


def pre_annotations(ctx: RoundContext, version: str, items: list[dict]
                    ) -> tuple[list[PushItem], list[str]]:
    """The selected images predicted again by the model that chose them, as the kind's
    pre-annotations at each image's own size; and the problems of images that could not be
    read any more (deleted or changed since scoring)."""
    loaded = load_model(ctx.store, version)
    kind = get_kind(loaded.kind)
    decoded = model_images(ctx.store, loaded, [item["key"] for item in items])
    made = kind.pre_annotate(loaded.model, loaded.temperature, decoded.images, decoded.sizes,
                             loaded.labels, ctx.settings.task.options) if decoded.readable else []
    pushed = [PushItem(items[i]["image_id"], items[i]["key"], pre.result, pre.score)
              for i, pre in zip(decoded.readable, made, strict=True)]
    return pushed, decoded.problems


def push_step(ctx: RoundContext, round_id: str) -> dict:
    """Send the round's selection to Label Studio; images already there are not added again."""
    selection = read_round_record(ctx.store, round_id, "selection")
    if selection is None:
        return {"created": 0, "already_present": 0}
    queued = ctx.project.task_image_ids()
    todo = [item for item in selection["items"] if item["image_id"] not in queued]
    items, problems = pre_annotations(ctx, selection["model_version"], todo)
    result = ctx.project.push(items, model_version=selection["model_version"], round_id=round_id)
    result.already_present.update({item["image_id"]: queued[item["image_id"]]
                                   for item in selection["items"] if item["image_id"] in queued})
    record = {"created": result.created, "already_present": sorted(result.already_present),
              "duplicates_removed": result.duplicates_removed, "problems": problems}
    write_round_record(ctx.store, round_id, "push", record)
    return {"created": len(result.created), "already_present": len(result.already_present),
            "duplicates_removed": result.duplicates_removed, "unreadable": len(problems)}


def queue_state(ctx: RoundContext) -> dict[str, Any]:
    """The annotators' queue now: tasks nobody has annotated or skipped yet, the oldest, and
    how many per model version (the round summary keeps it, so the report can show the
    queue depth over time)."""
    return asdict(ctx.project.queue_state())


def finish_round(ctx: RoundContext, round_id: str, summary: dict) -> None:
    write_round_record(ctx.store, round_id, "summary", summary)
