"""The steps of one active learning round, as plain functions the flows call.

Each step reads what it needs from S3 or Label Studio and writes its result back to the
round's folder before returning, so any step can be re-run, and a crashed round resumes
under the same id (see alpha.rounds). Flows add retries, logging and artifacts on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alpha.config import Settings, load_settings
from alpha.errors import DataError
from alpha.labelstudio import LabelStudioProject, PushItem
from alpha.records import read_all_records
from alpha.rounds import read_round_record, write_round_record
from alpha.score import score_pool
from alpha.select import select
from alpha.store import Store
from alpha.train import load_model, train_model


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
        "skipped": result.skipped,
        "problems": [f"task {p.task_id} ({p.image_id}): {p.reason}" for p in result.problems],
    }
    write_round_record(ctx.store, round_id, "pull", {**summary, "changed": result.changed})
    return summary


def label_counts(ctx: RoundContext) -> dict[str, int]:
    records = read_all_records(ctx.store).values()
    return {
        "labeled": sum(r.status == "labeled" for r in records),
        "skipped": sum(r.status == "skipped" for r in records),
    }


def train_step(ctx: RoundContext) -> dict:
    """Train a new model, unless too few labels arrived since the last one (loop.min_new_labels)."""
    labeled = label_counts(ctx)["labeled"]
    try:
        latest = load_model(ctx.store)
    except DataError:  # no model yet
        latest = None
    threshold = ctx.settings.loop.min_new_labels
    if latest is not None and labeled - latest.metrics["n_labels"] < threshold:
        return {"version": latest.version, "metrics": latest.metrics["metrics"], "trained": False}
    info = train_model(ctx.store, ctx.settings)
    return {"version": info.version, "metrics": info.metrics, "trained": True}


def excluded_image_ids(ctx: RoundContext) -> set[str]:
    """Labeled, skipped and already-queued images: never selected again."""
    records = read_all_records(ctx.store)
    return set(records) | set(ctx.project.task_image_ids())


def select_step(ctx: RoundContext, round_id: str, version: str, strategy: str) -> dict:
    """Score the pool with the model and write the round's selection (reused on a re-run)."""
    existing = read_round_record(ctx.store, round_id, "selection")
    if existing is not None:
        return {key: value for key, value in existing.items() if key != "items"}
    loaded = load_model(ctx.store, version)
    pool = score_pool(ctx.store, loaded, ctx.settings, exclude=excluded_image_ids(ctx))
    indices, scores = select(
        strategy, pool.image_ids, pool.probs, ctx.settings.loop.batch_size,
        exclude=(), random_state=ctx.settings.loop.random_state,
    )
    items = [
        {
            "image_id": pool.image_ids[i],
            "key": pool.keys[i],
            "uncertainty": float(scores[i]),
            "confidence": float(np.max(pool.probs[i])),
            "probs": [float(p) for p in pool.probs[i]],
        }
        for i in indices
    ]
    summary = {"strategy": strategy, "model_version": version, "pool_size": len(pool.image_ids),
               "selected": len(items), "unreadable": pool.skipped}
    write_round_record(ctx.store, round_id, "selection", {**summary, "items": items})
    return summary


def push_step(ctx: RoundContext, round_id: str) -> dict:
    """Send the round's selection to Label Studio; images already there are not added again."""
    selection = read_round_record(ctx.store, round_id, "selection")
    if selection is None:
        return {"created": 0, "already_present": 0}
    items = [
        PushItem(item["image_id"], item["key"], np.asarray(item["probs"]), item["confidence"])
        for item in selection["items"]
    ]
    result = ctx.project.push(items, model_version=selection["model_version"], round_id=round_id)
    record = {"created": result.created, "already_present": sorted(result.already_present)}
    write_round_record(ctx.store, round_id, "push", record)
    return {"created": len(result.created), "already_present": len(result.already_present)}


def finish_round(ctx: RoundContext, round_id: str, summary: dict) -> None:
    write_round_record(ctx.store, round_id, "summary", summary)
