"""Serve the project's three deployments from one process (`alpha serve`).

- `active-learning-round/alpha-{prefix}`: the full round on loop.schedule_cron;
- `pull-labels/alpha-{prefix}`: the pull every loop.pull_interval_s (and on the webhook),
  which starts the next one when loop.retrain_after new labels wait;
- `train-and-select/alpha-{prefix}`: no schedule, started by the pull.

Stopping `serve` leaves the schedules active (Prefect pauses them on SIGTERM by default):
the schedule is the project's, not this process's, and the runs it creates wait until a
server process picks them up again.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from alpha.config import Settings
from flows.names import deployment_name
from flows.pull import pull_and_maybe_train
from flows.round import active_learning_round, train_and_select


def project_deployments(settings: Settings, config_file: str | None = None
                        ) -> list[RunnerDeployment]:
    """The three deployments, parameterised by the config file path (never secrets)."""
    name = deployment_name(settings)
    where = f"prefix {settings.s3.prefix!r}"
    round_parameters = {"config_file": config_file, "strategy": settings.loop.strategy}
    return [
        active_learning_round.to_deployment(
            name=name, cron=settings.loop.schedule_cron, parameters=round_parameters,
            description=f"alpha active learning rounds for {where}"),
        pull_and_maybe_train.to_deployment(
            name=name, interval=timedelta(seconds=settings.loop.pull_interval_s),
            parameters={"config_file": config_file},
            description=f"alpha: pull finished annotations for {where}; start training "
                        f"after {settings.loop.retrain_threshold} new labels"),
        train_and_select.to_deployment(
            name=name, parameters=round_parameters,
            description=f"alpha: train, select and push for {where} (started by the pull)"),
    ]


def serve_rounds(settings: Settings, config_file: str | None = None) -> None:
    """Register the deployments with their schedules and run them when due, looking for due
    runs every loop.runner_poll_s; blocks until stopped, and leaves the schedules active
    when it is."""
    serve(*project_deployments(settings, config_file), pause_on_shutdown=False,
          query_seconds=settings.loop.runner_poll_s)
