"""The `active_learning_round` Prefect flow: pull -> train -> score/select -> push.

Thin on purpose: each task calls one step of alpha.loop and adds retries where a network is
involved. Parameters carry only the config file path and the strategy, never secrets: each
task loads the settings itself from the file and the environment.
"""

from __future__ import annotations

import re

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from alpha import loop
from alpha.errors import ConfigError
from alpha.rounds import current_round_id
from alpha.strategies import STRATEGIES

NETWORK_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 10, 30]}


@task(name="pull", **NETWORK_RETRIES)
def pull_labels(config_file: str | None, round_id: str) -> dict:
    return loop.pull_step(loop.open_context(config_file), round_id)


@task(name="train")
def train(config_file: str | None) -> dict:
    return loop.train_step(loop.open_context(config_file))


@task(name="score-and-select", **NETWORK_RETRIES)
def score_and_select(config_file: str | None, round_id: str, version: str, strategy: str) -> dict:
    return loop.select_step(loop.open_context(config_file), round_id, version, strategy)


@task(name="push", **NETWORK_RETRIES)
def push(config_file: str | None, round_id: str) -> dict:
    return loop.push_step(loop.open_context(config_file), round_id)


def _report(ctx: loop.RoundContext, summary: dict) -> str:
    metrics = summary["model"]["metrics"]
    per_class = metrics.get("per_class", {})
    rows = "\n".join(f"| {name} | {acc:.3f} |" for name, acc in per_class.items())
    return (
        f"# alpha round {summary['round']}\n\n"
        f"- labels so far: **{summary['labels']['labeled']}** "
        f"(skipped by annotators: {summary['labels']['skipped']})\n"
        f"- pulled this round: {summary['pull']}\n"
        f"- model `{summary['model']['version']}` "
        f"(trained this round: {summary['model']['trained']}): validation accuracy "
        f"**{metrics.get('accuracy', float('nan')):.3f}**\n"
        f"- selection: {summary['selection']['selected']} of {summary['selection']['pool_size']}"
        f" unlabeled images by `{summary['selection']['strategy']}`\n"
        f"- tasks pushed: **{summary['push']['created']}** "
        f"(already in Label Studio: {summary['push']['already_present']})\n"
        f"- Label Studio project: [{ctx.settings.project_title}]({summary['project_url']})\n\n"
        + (f"| class | validation accuracy |\n|---|---|\n{rows}\n" if rows else "")
    )


@flow(name="active-learning-round", log_prints=True)
def active_learning_round(config_file: str | None = None, strategy: str | None = None) -> dict:
    """One round of the loop; a crashed round is resumed under the same id."""
    logger = get_run_logger()
    ctx = loop.open_context(config_file)
    strategy = strategy or ctx.settings.loop.strategy
    if strategy not in STRATEGIES:  # before training, not after
        raise ConfigError(
            f"Unknown selection strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}."
        )
    round_id = current_round_id(ctx.store)
    logger.info("round %s for prefix %r", round_id, ctx.settings.s3.prefix)

    pulled = pull_labels(config_file, round_id)
    model = train(config_file)
    selection = score_and_select(config_file, round_id, model["version"], strategy)
    pushed = push(config_file, round_id)

    summary = {
        "round": round_id,
        "labels": loop.label_counts(ctx),
        "pull": pulled,
        "model": model,
        "selection": selection,
        "push": pushed,
        "project_url": ctx.project.project_url(),
    }
    loop.finish_round(ctx, round_id, summary)
    create_markdown_artifact(
        key=re.sub(r"[^a-z0-9-]+", "-", f"alpha-round-{ctx.settings.s3.prefix}".lower())[:60],
        markdown=_report(ctx, summary),
        description=f"alpha {round_id}",
    )
    logger.info("round %s done: %s labels, pushed %s", round_id,
                summary["labels"]["labeled"], pushed["created"])
    return summary
