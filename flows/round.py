"""The round flows: `active_learning_round` (pull -> train -> score/select -> push, on the
schedule) and `train_and_select` (the same without the pull, started by the pull flow
(flows.pull) once loop.retrain_after new labels arrived).

Thin on purpose: each task calls one step of alpha.loop and adds retries where a network is
involved. Parameters carry only the config file path and the strategy, never secrets: each
task loads the settings itself from the file and the environment. The label records are
read once per run, after the pull, and handed to the steps that need them (training, the
selection, the refill, the counts and the report; `quote`d, so Prefect does not walk them);
a step run on its own reads them itself. The pool is scored in the flow's process, or on
Dask when the settings name a cluster (flows.score).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from alpha import loop
from alpha.config import load_settings
from alpha.errors import AlphaError, ConfigError
from alpha.progress import bar, both
from alpha.records import read_all_records
from alpha.rounds import current_round_id
from alpha.store import Store
from alpha.strategies import STRATEGIES
from flows.artifacts import RoundProgress, StepProgress, artifact_key, publish_history
from flows.locks import project_lock
from flows.names import ROUND_FLOW, TRAIN_FLOW, webhook_target
from flows.retries import NETWORK_RETRIES
from flows.score import dask_scorer

# Tasks handed the label records compute no cache key: hashing every record would cost
# more than the step saves, and their results are not persisted anyway.
WITH_RECORDS = {**NETWORK_RETRIES, "cache_policy": NO_CACHE}


@task(name="begin-round", **NETWORK_RETRIES)
def begin_round(config_file: str | None) -> str:
    """The round's id: the unfinished round if the last one crashed, else the next one."""
    return current_round_id(loop.open_context(config_file).store)


@task(name="pull", **NETWORK_RETRIES)
def pull_labels(config_file: str | None, round_id: str | None) -> dict:
    """Under the project's pull lock: two pulls at once would both move the cursor."""
    ctx = loop.open_context(config_file)
    with project_lock(ctx.settings, "pull"):
        pulled = loop.pull_step(ctx, round_id)
        if ctx.settings.labelstudio.webhook_url:  # annotations then start the next pull
            try:
                ctx.project.ensure_webhook(webhook_target(ctx.settings))
            except AlphaError as error:  # the scheduled pull works without it
                get_run_logger().warning("webhook not registered (the scheduled pull still "
                                         "runs): %s", error)
        return pulled


@task(name="read-labels", **WITH_RECORDS)
def read_labels(config_file: str | None) -> loop.Records:
    """The project's label records, once for the whole run."""
    return read_all_records(Store.from_settings(load_settings(config_file)))


# Each long step reports to a Prefect progress artifact, and to a terminal bar when the flow
# runs under a CLI command that opened them (alpha.progress); served, only the artifact.
@task(name="train", **WITH_RECORDS)
def train(config_file: str | None, min_new: int | None = None,
          records: loop.Records | None = None) -> dict:
    return loop.train_step(loop.open_context(config_file), min_new, progress=both(
        StepProgress("alpha: training steps"), bar("train: optimiser steps")), records=records)


@task(name="score-and-select", **WITH_RECORDS)
def score_and_select(config_file: str | None, round_id: str, version: str, strategy: str,
                     records: loop.Records | None = None) -> dict:
    ctx = loop.open_context(config_file)
    return loop.select_step(ctx, round_id, version, strategy,
                            progress=both(StepProgress(f"alpha {round_id}: scoring the pool"),
                                          bar("score: pool images")),
                            records=records, scorer=dask_scorer(config_file, ctx.settings))


@task(name="push", **NETWORK_RETRIES)
def push(config_file: str | None, round_id: str) -> dict:
    return loop.push_step(loop.open_context(config_file), round_id,
                          progress=both(StepProgress(f"alpha {round_id}: pushing tasks"),
                                        bar("push: tasks")))


@task(name="refresh-queue", **NETWORK_RETRIES)
def refresh_queue(config_file: str | None, version: str) -> dict:
    return loop.refresh_step(loop.open_context(config_file), version,
                             progress=bar("queue: new predictions"))


@task(name="refill-queue", **WITH_RECORDS)
def refill_queue(config_file: str | None, records: loop.Records | None = None) -> dict:
    return loop.refill_step(loop.open_context(config_file), records)


@task(name="finish-round", **WITH_RECORDS)
def finish(config_file: str | None, round_id: str, steps: dict,
           records: loop.Records | None = None) -> dict:
    """Count the labels and the queue, write the round's summary (last, so it marks the
    round done) and publish the report: the page in the bucket, the rounds table and this
    round's summary. The labels are those the round read after its pull."""
    ctx = loop.open_context(config_file)
    summary = {"round": round_id, "labels": loop.label_counts(ctx, records), **steps,
               "queue": loop.queue_state(ctx), "project_url": ctx.project.project_url()}
    loop.finish_round(ctx, round_id, summary)
    report_uri = publish_history(ctx, records)
    create_markdown_artifact(
        key=artifact_key("round", ctx.settings.s3.prefix),
        markdown=_report(ctx, summary, report_uri),
        description=f"alpha {round_id}",
    )
    return summary


def _agreement(labels: dict) -> str:
    if not labels["overlapped"]:
        return "no image has more than one annotation"
    return (f"**{labels['mean_agreement']:.0%}** on average over the {labels['overlapped']} "
            "images annotated more than once (majority label kept)")


def _changed(labels: dict) -> str:
    if labels.get("mean_changed") is None:
        return "no label compared with a pre-annotation yet"
    return (f"**{labels['mean_changed']:.1%}** of the pre-annotations on average, over the "
            f"{labels['compared']} labels pulled from pre-filled tasks")


def _value(value: float | None) -> str:
    """A metric for the report; a model trained without a validation split has none."""
    return f"**{value:.3f}**" if value is not None else "not measured (no validation split)"


def _report(ctx: loop.RoundContext, summary: dict, report_uri: str) -> str:
    metrics = summary["model"]["metrics"]
    metric = summary["model"].get("primary_metric") or "accuracy"
    per_label = metrics.get("per_label") or {}
    names = [n for n in ctx.settings.task.labels if n in per_label]  # the task's class order
    names += [n for n in per_label if n not in names]  # a class renamed since training
    rows = "\n".join(f"| {name} | {_value(per_label[name])} |" for name in names)
    return (
        f"# alpha round {summary['round']}\n\n"
        f"- labels so far: **{summary['labels']['labeled']}** "
        f"(skipped by annotators: {summary['labels']['skipped']}, retracted: "
        f"{summary['labels']['retracted']})\n"
        f"- annotator agreement: {_agreement(summary['labels'])}\n"
        f"- what annotators changed: {_changed(summary['labels'])}\n"
        f"- pulled this round: {summary['pull']}\n"
        f"- model `{summary['model']['version']}` "
        f"(trained this round: {summary['model']['trained']}): validation {metric} "
        f"{_value(metrics.get(metric))}\n"
        f"- selection: {summary['selection']['selected']} of {summary['selection']['pool_size']}"
        f" unlabeled images by `{summary['selection']['strategy']}`\n"
        f"- tasks pushed: **{summary['push']['created']}** "
        f"(already in Label Studio: {summary['push']['already_present']})\n"
        f"- tasks waiting in the queue: **{summary['queue']['depth']}**\n"
        f"- classes: {', '.join(ctx.settings.task.labels)}\n"
        f"- Label Studio project: [{ctx.settings.project_title}]({summary['project_url']})\n"
        f"- report with plots: `{report_uri}` (the same page locally: `alpha report`)\n\n"
        + (f"| class | validation {metric} |\n|---|---|\n{rows}\n" if rows else "")
    )


def _checked_strategy(settings, strategy: str | None) -> str:
    strategy = strategy or settings.loop.strategy
    if strategy not in STRATEGIES:  # before training, not after
        raise ConfigError(
            f"Unknown selection strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}."
        )
    return strategy


@flow(name=ROUND_FLOW, log_prints=True)
def active_learning_round(config_file: str | None = None, strategy: str | None = None) -> dict:
    """One round of the loop; a crashed round is resumed under the same id.

    Every step that talks to S3 or Label Studio is a task with retries, so a service that
    restarts during a round delays it rather than failing it; settings are read here, before
    anything runs, because a bad setting will not fix itself on retry. The project's round
    lock (flows.locks) makes a second round started meanwhile wait for this one.
    """
    logger = get_run_logger()
    settings = load_settings(config_file)
    strategy = _checked_strategy(settings, strategy)
    with project_lock(settings, "round"):  # one round id, one training at a time
        round_id = begin_round(config_file)
        logger.info("round %s for prefix %r", round_id, settings.s3.prefix)
        progress = RoundProgress(round_id)

        pulled = pull_labels(config_file, round_id)
        progress.finished("pull")
        records = read_labels(config_file)
        model = train(config_file, records=quote(records))
        progress.finished("train")
        summary = _select_push_finish(config_file, round_id, strategy, pulled, model, progress,
                                      records)
    logger.info("round %s done: %s labels, pushed %s", round_id,
                summary["labels"]["labeled"], summary["push"]["created"])
    return summary


@flow(name=TRAIN_FLOW, log_prints=True)
def train_and_select(config_file: str | None = None, strategy: str | None = None) -> dict:
    """Train on the labels the pull brought in, then select and push a batch: a round
    without its pull, started when loop.retrain_after new labels arrived.

    The new labels are counted again under the round lock, so a run that waited for another
    (which trained on those labels) trains nothing and starts no round.
    """
    logger = get_run_logger()
    settings = load_settings(config_file)
    strategy = _checked_strategy(settings, strategy)
    with project_lock(settings, "round"):
        records = read_labels(config_file)
        model = train(config_file, settings.loop.retrain_threshold, quote(records))
        if not model["trained"]:
            logger.info("%d new labels since model %s, fewer than %d: nothing to train",
                        model["new_labels"], model["version"], settings.loop.retrain_threshold)
            return {"model": model}
        round_id = begin_round(config_file)
        logger.info("round %s for prefix %r (model %s)", round_id, settings.s3.prefix,
                    model["version"])
        pulled = {"by": "the pull-labels flow, before this run"}
        progress = RoundProgress(round_id)
        progress.finished("pull")
        progress.finished("train")
        return _select_push_finish(config_file, round_id, strategy, pulled, model, progress,
                                   records)


def _select_push_finish(config_file: str | None, round_id: str, strategy: str, pulled: dict,
                        model: dict, progress: RoundProgress, records: loop.Records) -> dict:
    selection = score_and_select(config_file, round_id, model["version"], strategy,
                                 quote(records))
    progress.finished("score-and-select")
    with project_lock(load_settings(config_file), "queue"):  # shared with the pull's refill
        pushed = push(config_file, round_id)
        progress.finished("push")
        upkeep = {"refresh": refresh_queue(config_file, model["version"]) if model["trained"]
                  else None, "refill": refill_queue(config_file, quote(records))}
    summary = finish(config_file, round_id, {"pull": pulled, "model": model,
                                             "selection": selection, "push": pushed,
                                             "upkeep": upkeep}, quote(records))
    progress.finished("finish-round")
    return summary
