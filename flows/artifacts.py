"""What a round shows on the Prefect server besides its logs: the rounds table, the report
page left in the bucket, and a progress bar over the round's steps.

The content comes from alpha.history and alpha.report (plain functions of the bucket); this
module only hands it to Prefect. Nothing here reads settings' secrets: tables and text are
built from round summaries, label counts and model manifests.
"""

from __future__ import annotations

import re
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from alpha import loop
from alpha.history import read_history, rounds_table
from alpha.records import LabelRecord
from alpha.report import publish_report

ROUND_STEPS = ("pull", "train", "score-and-select", "push", "finish-round")


def artifact_key(what: str, prefix: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) per project prefix, so
    each project's newest artifact of one sort is found under one key."""
    return re.sub(r"[^a-z0-9-]+", "-", f"alpha-{what}-{prefix}".lower())[:60]


def publish_history(ctx: loop.RoundContext, records: dict[str, LabelRecord] | None = None
                    ) -> str:
    """Write the report page into the bucket and the table of every round so far as an
    artifact; return the report's s3:// URI. `records`: the round's label records (default:
    read them)."""
    history = read_history(ctx.store, ctx.settings, records)
    uri = publish_report(ctx.store, history)
    create_table_artifact(
        key=artifact_key("rounds", ctx.settings.s3.prefix),
        table=rounds_table(history),
        description=f"alpha: every round of {ctx.settings.s3.prefix} (report: {uri})",
    )
    return uri


class RoundProgress:
    """A progress artifact over ROUND_STEPS: 0 % at the start, each finished step adds its
    share, 100 % when the round is done."""

    def __init__(self, round_id: str) -> None:
        self.round_id = round_id
        self.done = 0
        self.artifact_id: UUID = create_progress_artifact(
            0.0, description=f"alpha {round_id}: starting")

    def finished(self, step: str) -> None:
        self.done += 1
        update_progress_artifact(self.artifact_id, 100.0 * self.done / len(ROUND_STEPS),
                                 description=f"alpha {self.round_id}: {step} done")


class StepProgress:
    """A progress artifact for one long step, fed `(done, total)`; updated only when it
    moved by `step_percent` or reached the end, so a big pool makes a few dozen calls to
    the server, not one per batch."""

    def __init__(self, description: str, step_percent: float = 5.0) -> None:
        self.description = description
        self.step_percent = step_percent
        self.shown = 0.0
        self.artifact_id: UUID | None = None  # made at the first call: a step that finds
        # its work done (a resumed round) leaves no bar stuck at 0 %

    def __call__(self, done: int, total: int) -> None:
        percent = 100.0 * done / total if total else 100.0
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(0.0, description=self.description)
        # abs: a total that grew (a training's refit adds its steps) moves the bar back
        if abs(percent - self.shown) >= self.step_percent or (percent >= 100.0 > self.shown):
            self.shown = percent
            update_progress_artifact(self.artifact_id, percent,
                                     description=f"{self.description}: {done} of {total}")
