"""Serve the round as a Prefect deployment on the cron schedule from the settings."""

from __future__ import annotations

from alpha.config import Settings
from flows.round import active_learning_round


def deployment_name(settings: Settings) -> str:
    """One deployment per project prefix, so several projects can be served side by side."""
    return f"alpha-{settings.s3.prefix}"


def serve_rounds(settings: Settings, config_file: str | None = None) -> None:
    """Register `active-learning-round/alpha-{prefix}` with its schedule; run it when due.

    Blocks until stopped; SIGTERM pauses the deployment's schedule (Prefect's behaviour).
    """
    active_learning_round.serve(
        name=deployment_name(settings),
        cron=settings.loop.schedule_cron,
        parameters={"config_file": config_file, "strategy": settings.loop.strategy},
        description=f"alpha active learning rounds for prefix {settings.s3.prefix!r}",
    )
