"""One run at a time where another would only wait: the webhook starts no pull while one
is due and not started, and the pull starts no train-and-select while one is under way."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import flows.pull
import infra.webhook
from flows.pull import start_training


@pytest.fixture
def started(monkeypatch) -> list[str]:
    """Deployments run_deployment was asked to start (none really is)."""
    calls: list[str] = []

    def run_deployment(name: str, **_) -> SimpleNamespace:
        calls.append(name)
        return SimpleNamespace(id=f"new-run-of-{name}")

    monkeypatch.setattr(flows.pull, "run_deployment", run_deployment)
    monkeypatch.setattr("prefect.deployments.run_deployment", run_deployment)
    return calls


def _under_way(monkeypatch, ids: list[str], asked: list[bool]) -> None:
    def runs_under_way(deployment: str, *, running: bool) -> list[str]:
        asked.append(running)
        return ids

    monkeypatch.setattr(flows.pull, "runs_under_way", runs_under_way)
    monkeypatch.setattr("flows.pending.runs_under_way", runs_under_way)


def test_no_second_train_run_while_one_is_under_way(monkeypatch, settings, started):
    asked: list[bool] = []
    _under_way(monkeypatch, ["running-run"], asked)
    assert start_training(settings, None, 12, "m1") == ("running-run", True)
    assert started == [] and asked == [True]  # a running one counts: it counts again

    _under_way(monkeypatch, [], asked)
    run_id, under_way = start_training(settings, None, 12, "m1")
    assert not under_way and started == ["train-and-select/alpha-proj"] and run_id


def test_the_webhook_starts_no_pull_while_one_is_due(monkeypatch, started):
    asked: list[bool] = []
    _under_way(monkeypatch, ["due-run"], asked)
    assert infra.webhook.start_pull("alpha-proj") is None and started == []
    assert asked == [False]  # a running pull may have read Label Studio already

    _under_way(monkeypatch, [], asked)
    assert infra.webhook.start_pull("alpha-proj") == "new-run-of-pull-labels/alpha-proj"
