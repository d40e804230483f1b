"""Whether a deployment already has a run under way that will do what a new one would, so
that a burst of webhooks, or pulls during a training, start one more run, not one each.

Each run `alpha serve` executes is a new Python process that imports torch and Prefect
(about 450 MB). A burst of annotations a few seconds apart started a pull every 5 s (the
receiver's debounce), and every pull that saw a new label count while a model trained
started another train run; all of them waited for the one before (the project locks), and
on two busy cores 18 piled up in bench/queue_day.py faster than they finished. A
deployment concurrency limit would say the same in Prefect's own terms, but Prefect 3.9.1
leaked its slot (the deployment stayed "full" with no run left, and every later run was
cancelled), so alpha asks the server which runs are under way instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

STALE_AFTER = timedelta(minutes=15)
"""A run due longer ago than this no longer counts: one stranded in Pending or Running by a
killed `serve` must not hold the deployment back for ever."""
DUE_WITHIN = timedelta(seconds=5)
"""Scheduled runs count only when due this soon: the pull's schedule creates future runs."""


def runs_under_way(deployment: str, *, running: bool) -> list[str]:
    """Ids of the runs of `deployment` (`flow/deployment`) that are due and not started
    yet (Scheduled, Late, Pending) and, with `running`, of those running; ObjectNotFound
    when it does not exist. A running pull may have read Label Studio already, so the
    receiver asks only for the runs yet to start; a running train-and-select counts the
    labels again under the round lock, or the next pull after it starts another."""
    types = [StateType.SCHEDULED, StateType.PENDING] + ([StateType.RUNNING] if running else [])
    now = datetime.now(UTC)
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)),
                expected_start_time=FlowRunFilterExpectedStartTime(
                    after_=now - STALE_AFTER, before_=now + DUE_WITHIN),
            ),
            limit=10,
        )
    return [str(run.id) for run in runs]
