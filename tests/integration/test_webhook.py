"""Label Studio's webhook on the real stack: an annotation made through the API reaches the
stack's receiver, which starts the project's pull deployment within seconds; a request
without the secret is refused and starts nothing."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.states import Cancelled

from alpha.errors import AlphaError
from alpha.kinds.base import Target
from flows.names import deployment_name, webhook_target
from flows.pull import pull_and_maybe_train
from infra import stack

pytestmark = pytest.mark.integration

ARRIVAL_S = 15


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pull_deployment(settings):
    """The module's `pull-labels` deployment, registered (not served: its runs stay
    scheduled, which is all the receiver does), deleted with its runs afterwards."""
    if not settings.labelstudio.webhook_url:
        _skip_or_fail("labelstudio.webhook_url is unset: run `alpha stack up` (it writes it)")
    if not stack.is_healthy(stack.SERVICES["webhook"]):
        _skip_or_fail("the webhook receiver is not running: run `alpha stack up`")
    deployment_id = pull_and_maybe_train.to_deployment(
        name=deployment_name(settings), parameters={"config_file": None}).apply()
    yield deployment_id
    with get_client(sync_client=True) as client:
        for run in _runs(deployment_id):
            client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)


def _runs(deployment_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id])))


def _wait_for_runs(deployment_id, count: int, limit_s: float = ARRIVAL_S) -> float:
    started = time.monotonic()
    while len(_runs(deployment_id)) < count:
        assert time.monotonic() - started < limit_s, f"no pull run within {limit_s} s"
        time.sleep(0.25)
    return time.monotonic() - started


def test_an_annotation_starts_the_pull_within_seconds(settings, project, images, push_items,
                                                      pull_deployment):
    result = project.push(push_items(images[:3]), model_version="m-webhook", round_id="r1")
    try:
        hook = project.ensure_webhook(webhook_target(settings))
    except AlphaError as error:
        if "reserved network address" in str(error):
            _skip_or_fail("Label Studio runs without the stack's webhook allowance (started "
                          "by an older stack): restart it with `alpha stack down && alpha "
                          "stack up`")
        raise
    assert project.ensure_webhook(webhook_target(settings)) == hook  # registered once
    hooks = project._request("GET", "api/webhooks/", params={"project": project.project_id})
    assert [h["id"] for h in hooks if h["project"] == project.project_id] == [hook]
    (ours,) = [h for h in hooks if h["id"] == hook]
    assert set(ours["actions"]) == {"ANNOTATION_CREATED", "ANNOTATION_UPDATED",
                                    "ANNOTATIONS_DELETED"}

    first, second, third = sorted(result.created.values())
    choice = project.kind.result_from_target(Target(label=settings.task.labels[0]),
                                             settings.task.labels, (0, 0))
    project.create_annotation(first, choice)
    delay = _wait_for_runs(pull_deployment, 1)
    print(f"annotation -> pull run in {delay:.2f} s")

    time.sleep(5.5)  # past the receiver's debounce window
    project.create_annotation(second, choice)
    time.sleep(3)  # the receiver answers within a second
    (due,) = _runs(pull_deployment)  # coalesced (flows.pending): the due pull reads both
    # Once that run is no longer due (here: cancelled; served, it would have run), the next
    # annotation starts a pull of its own.
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(due.id, Cancelled(), force=True)
    project.create_annotation(third, choice)
    _wait_for_runs(pull_deployment, 2)


def test_a_request_without_the_secret_is_refused_and_starts_nothing(settings,
                                                                    pull_deployment):
    before = len(_runs(pull_deployment))
    target = webhook_target(settings)
    assert httpx.post(target, json={"action": "ANNOTATION_CREATED"}).status_code == 403
    assert httpx.post(target, headers={"X-Alpha-Webhook-Secret": "guess"},
                      json={"action": "ANNOTATION_CREATED"}).status_code == 403
    time.sleep(2)
    assert len(_runs(pull_deployment)) == before
