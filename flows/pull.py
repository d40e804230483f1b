"""The `pull-labels` flow: bring finished annotations in between rounds, and start
train-and-select once loop.retrain_after new usable labels are waiting.

It runs often (loop.pull_interval_s) and when Label Studio's webhook says an annotation
changed, so it holds only the pull lock: labels keep coming in while a round trains. The
train run it starts is keyed by the model and the label count it saw, so pulls that see the
same labels start it once; the run itself counts again under the round lock.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from alpha import loop
from alpha.config import Settings, load_settings
from alpha.train import latest_key, new_usable_labels
from flows.locks import ProjectBusy, project_lock
from flows.names import PULL_FLOW, TRAIN_FLOW, deployment_name, full_name
from flows.pending import runs_under_way
from flows.retries import NETWORK_RETRIES
from flows.round import pull_labels, refill_queue

REFILL_WAIT_S = 5.0
RETRY_AFTER_S = 3600


@task(name="count-new-labels", **NETWORK_RETRIES)
def count_new_labels(config_file: str | None) -> tuple[int, str | None]:
    """Usable labels the latest model has not seen, and that model's version."""
    ctx = loop.open_context(config_file)
    latest = ctx.store.get_json(latest_key(ctx.store)) or {}
    return new_usable_labels(ctx.store, ctx.settings), latest.get("version")


def start_training(settings: Settings, config_file: str | None, new: int,
                   version: str | None) -> tuple[str | None, bool]:
    """Start the project's train-and-select deployment without waiting for it: (the id of
    its flow run, or None when it is not deployed (`alpha serve` is not running); whether
    that run was already under way, due or running, in which case none is started)."""
    name = full_name(TRAIN_FLOW, settings)
    try:
        under_way = runs_under_way(name, running=True)  # it, or the pull after it, trains
        if under_way:
            return under_way[0], True
        run = run_deployment(
            name, parameters={"config_file": config_file, "strategy": settings.loop.strategy},
            timeout=0, as_subflow=False,
            # One run per label state, and again an hour later if that one failed; a
            # second run at the hour's turn waits for the lock and trains nothing.
            idempotency_key=f"{deployment_name(settings)}:{version}:{new}:"
                            f"{int(time.time() // RETRY_AFTER_S)}",
        )
    except ObjectNotFound:
        return None, False
    return str(run.id), False


@flow(name=PULL_FLOW, log_prints=True)
def pull_and_maybe_train(config_file: str | None = None) -> dict:
    """Pull; when enough new labels wait, start train-and-select; top the queue up when
    annotators drained it below loop.queue_low."""
    logger = get_run_logger()
    settings = load_settings(config_file)
    pulled = pull_labels(config_file, None)
    new, version = count_new_labels(config_file)
    threshold = settings.loop.retrain_threshold
    result = {"pull": pulled, "new_labels": new, "threshold": threshold, "train_run": None}
    if new >= threshold:
        result["train_run"], under_way = start_training(settings, config_file, new, version)
        if result["train_run"] is None:
            logger.warning("%d new labels wait for training, but train-and-select is not "
                           "deployed: run `alpha serve`, or `alpha round`.", new)
        elif under_way:
            logger.info("%d new labels (>= %d): train-and-select run %s is under way; it, "
                        "or the pull after it, trains on them", new, threshold,
                        result["train_run"])
        else:
            logger.info("%d new labels (>= %d): started train-and-select run %s", new,
                        threshold, result["train_run"])
    result["refill"] = _refill_unless_busy(settings, config_file)
    return result


def _refill_unless_busy(settings: Settings, config_file: str | None) -> dict:
    """Top the queue up under the queue lock, also while a round trains; when a round's
    push or refresh holds the lock, that round refills at its end."""
    try:
        with project_lock(settings, "queue", wait_s=REFILL_WAIT_S):
            return refill_queue(config_file)
    except ProjectBusy:
        return {"pushed": 0, "reason": "a round is pushing; it refills the queue at its end"}
