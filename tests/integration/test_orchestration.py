"""Orchestration on the real stack: one round at a time per project (Prefect global
concurrency limits), the deployments one `alpha serve` registers, and the pull that starts
train-and-select once enough labels arrived."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.deployments import run_deployment

from alpha.rounds import round_ids
from alpha.simulate import simulate_annotations
from flows.locks import lock_name, project_lock
from flows.names import PULL_FLOW, ROUND_FLOW, TRAIN_FLOW, full_name

pytestmark = pytest.mark.integration

BATCH = 8
PULL_EVERY_S = 600


@pytest.fixture(scope="module")
def project(tmp_path_factory, first_digits_maker):
    """30 seed labels (3 per digit) and a pool of 60 real digits, with the pool's truth."""
    with first_digits_maker(
        tmp_path_factory.mktemp("orchestration"), "orch",
        f"batch_size = {BATCH}\nmin_new_labels = 1\npull_interval_s = {PULL_EVERY_S}\n"
        'schedule_cron = "17 3 * * *"\n',
    ) as made:
        yield made


def _alpha(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`alpha ...` in its own process, as a user (or cron) starts it."""
    return subprocess.Popen([sys.executable, "-m", "alpha.cli", *args],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_rounds_started_at_once_run_one_after_the_other(project):
    """Two `alpha round` processes at the same moment: each gets its own round id, the second
    starts its pull only after the first wrote its summary, the second trains nothing (no new
    labels: one model in all) and queues the next batch, not the same one again."""
    config, ctx, _ = project
    runs = [_alpha("round", "--config", str(config)) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs

    assert round_ids(ctx.store) == ["round-0001", "round-0002"]
    first, second = (ctx.store.get_json(ctx.store.round_key(r, "summary.json"))
                     for r in ("round-0001", "round-0002"))
    second_pull = ctx.store.get_json(ctx.store.round_key("round-0002", "pull.json"))
    assert second_pull["written_at"] >= first["written_at"]  # strictly one after the other
    assert [first["model"]["trained"], second["model"]["trained"]] == [True, False]
    models = {key.split("/")[-2] for key in ctx.store.list_keys("models/")
              if key.endswith("metrics.json")}
    assert models == {first["model"]["version"]} == {second["model"]["version"]}
    tasks = list(ctx.project._list_tasks("id,data"))
    queued = [ctx.project._image_id_of(t["data"]) for t in tasks]
    assert len(queued) == len(set(queued)) == 2 * BATCH
    assert first["push"]["created"] == second["push"]["created"] == BATCH


def test_a_round_that_cannot_get_the_lock_in_time_is_refused_and_changes_nothing(project):
    config, ctx, _ = project
    before = sorted(ctx.store.list_keys("rounds/"))
    with project_lock(ctx.settings, "round", wait_s=0):  # another run is in the middle
        run = _alpha("round", "--config", str(config), env={"ALPHA_LOOP__LOCK_WAIT_S": "3"})
        output = run.communicate(timeout=300)[0]
    assert run.returncode != 0
    assert "Another run of project" in output and lock_name(ctx.settings, "round") in output
    assert sorted(ctx.store.list_keys("rounds/")) == before
    with get_client(sync_client=True) as client:  # released: a slot is free again
        limit = client.read_global_concurrency_limit_by_name(lock_name(ctx.settings, "round"))
    assert limit.limit == 1 and limit.active and limit.active_slots == 0



@pytest.fixture(scope="module")
def served(project):
    """`alpha serve` in its own process (its runner polling every 2 s, not 10), once its
    three deployments are readable on the server; stopped afterwards."""
    config, ctx, _ = project
    process = _alpha("serve", "--config", str(config),
                     env={"PREFECT_RUNNER_POLL_FREQUENCY": "2"})
    names = {flow: full_name(flow, ctx.settings) for flow in (ROUND_FLOW, PULL_FLOW, TRAIN_FLOW)}
    found: dict = {}
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while len(found) < len(names) and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()
            for flow, name in names.items():
                try:
                    found[flow] = client.read_deployment_by_name(name)
                except Exception:
                    time.sleep(1)
    assert len(found) == len(names), f"never registered: {set(names) - set(found)}"
    yield process, found
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=60)


def _finished(flow_run_id, limit_s: float = 300):
    deadline = time.monotonic() + limit_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish within {limit_s} s")


def _runs_of(deployment) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment.id])))


def test_serve_registers_the_round_the_pull_and_train_and_select(project, served):
    config, _, _ = project
    _, deployments = served
    round_, pull, train = (deployments[f] for f in (ROUND_FLOW, PULL_FLOW, TRAIN_FLOW))
    assert [s.schedule.cron for s in round_.schedules] == ["17 3 * * *"]
    assert [s.schedule.interval for s in pull.schedules] == [timedelta(seconds=PULL_EVERY_S)]
    assert train.schedules == []  # started by the pull only
    assert pull.parameters == {"config_file": str(config)}
    assert train.parameters["config_file"] == round_.parameters["config_file"] == str(config)


def test_the_pull_starts_train_and_select_once_enough_labels_arrived(project, served):
    """BATCH annotations (loop.retrain_after defaults to the batch size): the pull brings
    them in and starts one train-and-select run, which trains on them and queues the next
    batch; a second pull, with nothing new, starts nothing."""
    _, ctx, truth = project
    _, deployments = served
    before = {k for k in ctx.store.list_keys("models/") if k.endswith("metrics.json")}
    rounds = round_ids(ctx.store)
    queued = len(ctx.project.task_image_ids())
    report = simulate_annotations(ctx.project, truth, random_state=2, limit=BATCH)
    assert report.annotated == BATCH

    pull = _finished(run_deployment(full_name(PULL_FLOW, ctx.settings), timeout=0).id)
    assert pull.state.is_completed(), pull.state
    deadline = time.monotonic() + 300
    while not (train_runs := _runs_of(deployments[TRAIN_FLOW])) and time.monotonic() < deadline:
        time.sleep(1)
    assert len(train_runs) == 1
    train = _finished(train_runs[0].id)
    assert train.state.is_completed(), train.state

    after = {k for k in ctx.store.list_keys("models/") if k.endswith("metrics.json")}
    (new_model,) = after - before
    assert ctx.store.get_json(new_model)["n_labels"] == 30 + BATCH
    (new_round,) = set(round_ids(ctx.store)) - set(rounds)
    summary = ctx.store.get_json(ctx.store.round_key(new_round, "summary.json"))
    assert summary["model"]["trained"] and summary["model"]["new_labels"] == BATCH
    assert summary["push"]["created"] == BATCH
    assert len(ctx.project.task_image_ids()) == queued + BATCH

    again = _finished(run_deployment(full_name(PULL_FLOW, ctx.settings), timeout=0).id)
    assert again.state.is_completed(), again.state
    time.sleep(3)  # a train run it started would show at once (created before it returns)
    assert len(_runs_of(deployments[TRAIN_FLOW])) == 1


def test_stopping_serve_leaves_the_schedules_active(project, served):
    _, ctx, _ = project
    process, deployments = served
    process.terminate()
    process.wait(timeout=60)
    with get_client(sync_client=True) as client:
        for flow in (ROUND_FLOW, PULL_FLOW):
            deployment = client.read_deployment_by_name(full_name(flow, ctx.settings))
            assert not deployment.paused, flow
            assert all(s.active for s in deployment.schedules), flow
