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
from alpha.queue_depth import (
    CANDIDATES,
    latest_candidates,
    ranked_candidates,
    room,
    write_candidates,
)
from alpha.records import LabelRecord, read_all_records
from alpha.rounds import read_round_record, write_round_record
from alpha.score import Keep, PoolScores, ScoreJob, score_job, score_pool
from alpha.store import Store
from alpha.strategies import (
    DEFAULT_CANDIDATES,
    NEEDS_GRADIENTS,
    NEEDS_SAMPLES,
    select_batch,
    strategy_measure,
    strategy_score,
)
from alpha.strategies.batch import RANDOM_DRAW
from alpha.train import LoadedModel, load_model, model_images, new_usable_labels, train_model


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


def pull_step(ctx: RoundContext, round_id: str | None) -> dict:
    """Bring finished annotations from Label Studio into `labels/`; a round's pull is
    recorded in its folder, a pull between rounds (`round_id` None) only in its result."""
    ctx.store.ensure_bucket()
    ctx.project.ensure_project()
    result = ctx.project.pull()
    summary = {
        "new": result.new, "updated": result.updated, "unchanged": result.unchanged,
        "skipped": result.skipped, "retracted": result.retracted,
        "problems": [f"task {p.task_id} ({p.image_id}): {p.reason}" for p in result.problems],
    }
    if round_id is not None:
        write_round_record(ctx.store, round_id, "pull", {**summary, "changed": result.changed})
    return summary


Records = dict[str, LabelRecord]
"""The project's label records by image id, read once per flow run and passed to each step
that needs them; a step given none reads them itself, so each stays re-runnable alone."""


def label_counts(ctx: RoundContext, records: Records | None = None) -> dict[str, Any]:
    """Labels by status, how far annotators agree where several annotated one image, and how
    much of the pre-annotations they changed (the work pre-filling did not save them)."""
    records = (read_all_records(ctx.store) if records is None else records).values()
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


def train_step(ctx: RoundContext, min_new: int | None = None,
               progress: Callable[[int, int], None] | None = None,
               records: Records | None = None) -> dict:
    """Train a new model, unless fewer than `min_new` (default loop.min_new_labels) usable
    labels arrived since the last one; `new_labels` says how many did. `progress(done,
    total)` follows the training steps."""
    records = read_all_records(ctx.store) if records is None else records
    try:
        latest = load_model(ctx.store)
    except DataError:  # no model yet
        latest = None
    threshold = ctx.settings.loop.min_new_labels if min_new is None else min_new
    metric = get_kind(ctx.settings.task.kind).PRIMARY_METRIC
    new = new_usable_labels(ctx.store, ctx.settings, records)
    if latest is not None and new < threshold:
        return {"version": latest.version, "metrics": latest.metrics["metrics"], "trained": False,
                "primary_metric": metric, "new_labels": new}
    info = train_model(ctx.store, ctx.settings, progress=progress, records=records)
    return {"version": info.version, "metrics": info.metrics, "trained": True,
            "primary_metric": metric, "new_labels": new}


LABELED_EMBEDDINGS = frozenset({"coreset", "typiclust"})
"""Strategies that place the pool relative to the labeled images' embeddings."""
WHOLE_POOL = frozenset({"coreset", "typiclust", "badge"})
"""Strategies that compare every pool image with every other: their scoring keeps every
row's embedding (or BADGE's gradients); the others keep a bounded candidate set."""

PoolScorer = Callable[[Store, LoadedModel, Settings, ScoreJob,
                       Callable[[int, int], None] | None], PoolScores]
"""How the pool gets scored: in this process (alpha.score.score_job, the default), or
mapped over a cluster's workers (flows.score)."""


def pool_job(ctx: RoundContext, strategy: str, records: Records, cold_start: bool = False,
             keep: Keep | None = None) -> ScoreJob:
    """What scoring the pool for `strategy` means: every image neither labeled nor queued,
    Monte-Carlo samples or BADGE's gradients where the strategy needs them, and what to keep
    of the scored rows (`keep`, default `selection_keep`)."""
    # A retracted label's image may be chosen again once its task is gone from the queue.
    exclude = {i for i, r in records.items() if r.status != "retracted"}
    exclude |= set(ctx.project.task_image_ids())
    return ScoreJob(
        exclude=frozenset(exclude),
        mc_samples=ctx.settings.loop.mc_samples if strategy in NEEDS_SAMPLES else 0,
        gradients=strategy in NEEDS_GRADIENTS,
        keep=keep or selection_keep(ctx.settings, strategy, cold_start))


def selection_keep(settings: Settings, strategy: str, cold_start: bool = False) -> Keep:
    """What a selection by `strategy` needs of the scored pool.

    Every row for the strategies that compare the whole pool (WHOLE_POOL) and at a cold
    start (select_batch turns to TypiClust). Otherwise a candidate set of fixed size: the
    `limit` most uncertain by the strategy's measure and by margin (which the balance guard
    and cluster-margin rank by), and for random the `limit` highest seeded draws. `limit`
    covers cluster-margin's candidates x k and the queue's ranked refills plus the batch.
    The one difference from a whole-pool selection: the balance guard walks the margin
    ranking only as far as the candidates go, so a class still short of its share there is
    topped up from the images it held back (as when the pool runs out), where the whole
    ranking might have found more of that class further down.
    """
    if strategy != "random" and (cold_start or strategy in WHOLE_POOL):
        return Keep()
    k = settings.loop.batch_size
    limit = max(DEFAULT_CANDIDATES * k, _candidates_limit(settings) + k)
    rank_by = {strategy_measure(strategy), "margin"}
    if strategy == "random":
        rank_by.add(RANDOM_DRAW)
    return Keep(tuple(sorted(rank_by)), limit)


def select_step(ctx: RoundContext, round_id: str, version: str, strategy: str,
                progress: Callable[[int, int], None] | None = None, *,
                records: Records | None = None, scorer: PoolScorer | None = None) -> dict:
    """Score the pool with the model and write the round's selection (reused on a re-run),
    and the rest of the pool ranked by the same scores (the queue's refills, see
    alpha.queue_depth).

    Only what the strategy needs is computed: Monte-Carlo samples for Bayesian measures,
    BADGE's gradient embeddings, and the labeled images' embeddings for the strategies that
    compare the pool with what is already labeled (core-set, TypiClust); only what it reads
    is kept (see `selection_keep`). The record holds ids, keys and scores only: push
    predicts the chosen images again for their pre-annotations. A resumed round whose
    selection an older model made keeps it, and only ranks the pool by `version` for the
    refills. `progress(done, total)` follows the scoring of the pool; `scorer` scores it
    (default: in this process); `records` are the round's label records (default: read).
    """
    scorer = scorer or score_job
    records = read_all_records(ctx.store) if records is None else records
    existing = read_round_record(ctx.store, round_id, "selection")
    if existing is not None:
        candidates = read_round_record(ctx.store, round_id, CANDIDATES)
        refills = ctx.settings.loop.queue_depth is not None  # else ranking is not worth a scoring
        if refills and (candidates or {}).get("model_version") != version:
            chosen = {item["image_id"] for item in existing["items"]}
            limit = _candidates_limit(ctx.settings) + len(chosen)
            keep = Keep((strategy_measure(strategy),), limit)
            pool = scorer(ctx.store, load_model(ctx.store, version), ctx.settings,
                          pool_job(ctx, strategy, records, keep=keep), None)
            scores = _uncertainty(strategy, pool)
            write_candidates(ctx.store, round_id, version, strategy, ranked_candidates(
                pool.image_ids, pool.keys, scores,
                [i for i, image_id in enumerate(pool.image_ids) if image_id in chosen],
                _candidates_limit(ctx.settings)))
        return {key: value for key, value in existing.items() if key != "items"}
    loop_settings = ctx.settings.loop
    loaded = load_model(ctx.store, version)
    labeled_ids = {image_id for image_id, r in records.items() if r.status == "labeled"}
    cold_start = len(labeled_ids) < len(loaded.labels)  # select_batch switches to TypiClust
    pool = scorer(ctx.store, loaded, ctx.settings,
                  pool_job(ctx, strategy, records, cold_start), progress)
    labeled_embeddings = None
    if (strategy in LABELED_EMBEDDINGS or cold_start) and labeled_ids:
        labeled_embeddings = score_pool(
            ctx.store, loaded, ctx.settings, include=labeled_ids
        ).embeddings
    indices = select_batch(
        strategy, loop_settings.batch_size, pool.scores, labeled_embeddings,
        n_labeled=len(labeled_ids), random_state=loop_settings.random_state,
    )
    scores = _uncertainty(strategy, pool)
    items = [
        {"image_id": pool.image_ids[i], "key": pool.keys[i], "uncertainty": float(scores[i]),
         "confidence": float(pool.scores.confidence[i])}
        for i in indices
    ]
    summary = {"strategy": strategy, "measure": strategy_measure(strategy),
               "model_version": version, "pool_size": pool.n_scored,
               "selected": len(items), "unreadable": pool.skipped}
    # The refills first: a selection on record means the round's scoring is complete.
    write_candidates(ctx.store, round_id, version, strategy, ranked_candidates(
        pool.image_ids, pool.keys, scores, list(indices), _candidates_limit(ctx.settings)))
    write_round_record(ctx.store, round_id, "selection", {**summary, "items": items})
    return summary


def _uncertainty(strategy: str, pool: PoolScores) -> np.ndarray:
    return strategy_score(strategy, pool.scores) if len(pool.image_ids) else np.empty(0)


def _candidates_limit(settings: Settings) -> int:
    """Enough ranked images to keep the queue filled until the next model is ready: its
    depth plus the labels that start a retrain, twice over, since annotators go on draining
    the queue while that model trains (with 2 x the depth alone, bench/queue_day.py ran dry
    each time a training was slow)."""
    loop_settings = settings.loop
    return 2 * (max(loop_settings.batch_size, loop_settings.queue_depth or 0)
                + loop_settings.retrain_threshold)


PRE_ANNOTATE_BATCH = 64
"""Images fetched, predicted and written per batch of pre-annotations: one batch's images
in memory at a time, and a progress bar that moves during a big push."""


def pre_annotations(ctx: RoundContext, version: str, items: list[dict],
                    progress: Callable[[int, int], None] | None = None
                    ) -> tuple[list[PushItem], list[str]]:
    """The selected images predicted again by the model that chose them, as the kind's
    pre-annotations at each image's own size; and the problems of images that could not be
    read any more (deleted or changed since scoring). `progress(done, total)` is called
    after each batch of PRE_ANNOTATE_BATCH images."""
    loaded = load_model(ctx.store, version)
    kind = get_kind(loaded.kind)
    pushed: list[PushItem] = []
    problems: list[str] = []
    for start in range(0, len(items), PRE_ANNOTATE_BATCH):
        batch = items[start : start + PRE_ANNOTATE_BATCH]
        decoded = model_images(ctx.store, loaded, [item["key"] for item in batch])
        made = kind.pre_annotate(loaded.model, loaded.temperature, decoded.images,
                                 decoded.sizes, loaded.labels,
                                 ctx.settings.task.options) if decoded.readable else []
        sizes = decoded.sizes or [None] * len(made)
        for i, pre, size in zip(decoded.readable, made, sizes, strict=True):
            image_id = batch[i]["image_id"]
            images = {name: ctx.store.task_image_key(name, image_id) for name in pre.images}
            for name, key in images.items():  # before the task that shows it
                ctx.store.put_bytes(key, pre.images[name], "image/png")
            pushed.append(PushItem(image_id, batch[i]["key"], pre.result, pre.score, images,
                                   size))
        problems += decoded.problems
        if progress is not None:
            progress(start + len(batch), len(items))
    return pushed, problems


def push_step(ctx: RoundContext, round_id: str,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Send the round's selection to Label Studio; images already there are not added again.
    `progress(done, total)` follows the tasks prepared, batch by batch, and reaches the
    total once they are in Label Studio."""
    selection = read_round_record(ctx.store, round_id, "selection")
    if selection is None:
        return {"created": 0, "already_present": 0}
    queued = ctx.project.task_image_ids()
    todo = [item for item in selection["items"] if item["image_id"] not in queued]
    space = room(ctx.settings.loop.queue_depth, len(ctx.project.unannotated_tasks()))
    if space is not None:
        todo = todo[:space]  # the most useful first; the rest waits for room
    items, problems = pre_annotations(ctx, selection["model_version"], todo,
                                      _before_the_end(progress))
    result = ctx.project.push(items, model_version=selection["model_version"], round_id=round_id)
    if progress is not None:
        progress(len(todo), len(todo))
    result.already_present.update({item["image_id"]: queued[item["image_id"]]
                                   for item in selection["items"] if item["image_id"] in queued})
    record = {"created": result.created, "already_present": sorted(result.already_present),
              "duplicates_removed": result.duplicates_removed, "problems": problems}
    write_round_record(ctx.store, round_id, "push", record)
    return {"created": len(result.created), "already_present": len(result.already_present),
            "duplicates_removed": result.duplicates_removed, "unreadable": len(problems)}


def _before_the_end(progress: Callable[[int, int], None] | None
                    ) -> Callable[[int, int], None] | None:
    """`progress` without its last call, which the caller makes once the work after the
    counted part (the import into Label Studio) is done too."""
    if progress is None:
        return None

    def call(done: int, total: int) -> None:
        if done < total:
            progress(done, total)

    return call


def refill_step(ctx: RoundContext, records: Records | None = None) -> dict:
    """Top the queue up to loop.queue_depth from the latest model's ranked candidates, once
    annotators drained it below loop.queue_low; nothing is trained or scored. `records`:
    the label records already read (default: read them)."""
    depth = ctx.settings.loop.queue_depth
    if depth is None:
        return {"pushed": 0, "reason": "no loop.queue_depth"}
    queued = len(ctx.project.unannotated_tasks())
    if queued >= ctx.settings.loop.refill_below:
        return {"pushed": 0, "queued": queued, "reason": "above the low-water mark"}
    found = latest_candidates(ctx.store)
    if found is None:
        return {"pushed": 0, "queued": queued, "reason": "no candidates of the latest model"}
    round_id, candidates = found
    records = read_all_records(ctx.store) if records is None else records
    taken = {i for i, r in records.items() if r.status != "retracted"}
    taken |= set(ctx.project.task_image_ids())
    space = room(depth, queued) or 0
    todo = [item for item in candidates["items"] if item["image_id"] not in taken][:space]
    version = candidates["model_version"]
    items, problems = pre_annotations(ctx, version, todo)
    result = ctx.project.push(items, model_version=version, round_id=round_id)
    return {"pushed": len(result.created), "queued": queued + len(result.created),
            "model_version": version, "from_round": round_id, "unreadable": len(problems)}


def refresh_step(ctx: RoundContext, version: str,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Give every queued (unannotated) task the prediction and score of model `version`,
    replacing older ones, so the queue is ordered by the model annotators' work will train
    next; a task that already has one of `version` is left alone (safe to re-run).
    `progress(done, total)` follows the predictions made."""
    tasks = ctx.project.queued_tasks()
    stale: dict[int, list[int]] = {}
    todo: dict[int, dict] = {}
    for task in tasks:
        predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
        old = [int(p["id"]) for p in predictions if p.get("model_version") != version]
        if old:
            stale[int(task["id"])] = old
        image_id = ctx.project._image_id_of(task.get("data") or {})
        uri = (task.get("data") or {}).get(ctx.project.kind.DATA_KEY)
        has_current = any(p.get("model_version") == version for p in predictions)
        if image_id and isinstance(uri, str) and not has_current:
            todo[int(task["id"])] = {"image_id": image_id,
                                     "key": uri.removeprefix(ctx.store.s3_uri(""))}
    items, problems = pre_annotations(ctx, version, list(todo.values()), progress)
    by_image = {item.image_id: item for item in items}
    predictions = {task_id: by_image[item["image_id"]] for task_id, item in todo.items()
                   if item["image_id"] in by_image}
    # An image that cannot be read any more keeps its old prediction rather than none.
    stale = {task_id: ids for task_id, ids in stale.items()
             if task_id in predictions or task_id not in todo}
    made = ctx.project.replace_predictions(predictions, version, stale)
    return {"queued": len(tasks), "predicted": made,
            "stale_removed": sum(map(len, stale.values())), "unreadable": len(problems)}


def queue_state(ctx: RoundContext) -> dict[str, Any]:
    """The annotators' queue now: tasks nobody has annotated or skipped yet, the oldest, and
    how many per model version (the round summary keeps it, so the report can show the
    queue depth over time)."""
    return asdict(ctx.project.queue_state())


def finish_round(ctx: RoundContext, round_id: str, summary: dict) -> None:
    write_round_record(ctx.store, round_id, "summary", summary)
