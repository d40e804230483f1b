"""The whole loop on the real stack: a round as a flow run on the Prefect server, rounds
closed by the simulated annotator, and the round served on a cron schedule."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from alpha.errors import ConfigError
from alpha.records import read_all_records
from alpha.rounds import round_ids
from alpha.simulate import simulate_annotations
from alpha.strategies import DEFAULT_STRATEGY
from flows.round import active_learning_round

pytestmark = pytest.mark.integration

SEED_PER_CLASS = 10
POOL = 200
BATCH = 20


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory, digits_project_maker):
    """A fresh project: 60 seed labels and a pool of 200 real digits, with their truth."""
    config, ctx, truth = digits_project_maker(
        tmp_path_factory.mktemp("digits"), SEED_PER_CLASS, POOL, BATCH,
        'schedule_cron = "17 3 * * *"\n')
    return config, ctx, truth


def test_round_completes_on_the_prefect_server_and_publishes_an_artifact(digits_project):
    config, ctx, _ = digits_project
    state = active_learning_round(config_file=str(config), return_state=True)
    assert state.is_completed(), state
    summary = state.result()

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.state.type.value == "COMPLETED"
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    report = "\n".join(a.data for a in artifacts if a.type == "markdown")
    assert f"labels so far: **{10 * SEED_PER_CLASS}**" in report
    assert f"tasks pushed: **{BATCH}**" in report
    assert summary["project_url"] in report

    assert summary["labels"]["labeled"] == 10 * SEED_PER_CLASS
    assert summary["selection"]["strategy"] == DEFAULT_STRATEGY  # what the benchmark chose
    assert summary["model"]["metrics"]["accuracy"] > 0.3
    assert summary["push"]["created"] == BATCH
    assert len(ctx.project.task_image_ids()) == BATCH
    assert round_ids(ctx.store) == ["round-0001"]
    assert ctx.store.exists(ctx.store.round_key("round-0001", "summary.json"))


def test_rounds_closed_by_the_simulated_annotator_add_the_batch_size_each(digits_project):
    """Two more rounds with strategies that need more than probabilities: BALD scores the
    pool with Monte-Carlo dropout, core-set compares it with the labeled images' embeddings."""
    config, ctx, truth = digits_project
    labeled = len([r for r in read_all_records(ctx.store).values() if r.status == "labeled"])
    for strategy in ("bald", "coreset"):
        simulate_annotations(ctx.project, truth, error_rate=0.0, random_state=1)
        queued = set(ctx.project.task_image_ids())
        summary = active_learning_round(config_file=str(config), strategy=strategy)
        assert summary["selection"]["strategy"] == strategy
        selection = ctx.store.get_json(ctx.store.round_key(summary["round"], "selection.json"))
        picked = [item["image_id"] for item in selection["items"]]
        assert len(picked) == len(set(picked)) == BATCH and not set(picked) & queued
        assert all(item["uncertainty"] >= 0.0 and 0.0 < item["confidence"] <= 1.0
                   and "probs" not in item for item in selection["items"])  # ids, keys, scores
        assert summary["pull"]["new"] == BATCH
        assert summary["labels"]["labeled"] == labeled + BATCH
        labeled += BATCH
        assert summary["push"]["created"] == BATCH
    tasks = ctx.project.task_image_ids()
    assert len(tasks) == len(set(tasks)) == len(round_ids(ctx.store)) * BATCH
    pulled = [r for r in read_all_records(ctx.store).values() if r.source == "labelstudio"]
    assert len(pulled) == 2 * BATCH
    assert all(r.simulated and r.label == truth[r.image_id] for r in pulled)
    # Each pulled label says whether the annotator changed the pre-annotation's choice.
    assert all(r.changed in (0.0, 1.0) for r in pulled)
    model_was_wrong = [r for r in pulled if r.changed == 1.0]
    assert summary["labels"]["compared"] == len(pulled)
    assert summary["labels"]["mean_changed"] == pytest.approx(len(model_was_wrong) / len(pulled))


def test_an_unknown_strategy_fails_before_training(digits_project):
    config, ctx, _ = digits_project
    models = list(ctx.store.list_keys("models/"))
    state = active_learning_round(config_file=str(config), strategy="psychic", return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="Unknown selection strategy 'psychic'"):
        state.result()
    assert list(ctx.store.list_keys("models/")) == models


def test_serve_registers_a_deployment_on_the_cron_schedule(digits_project):
    config, ctx, _ = digits_project
    alpha_cli = Path(sys.executable).parent / "alpha"
    process = subprocess.Popen([str(alpha_cli), "serve", "--config", str(config)],
                               env=os.environ.copy(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    name = f"active-learning-round/alpha-{ctx.settings.s3.prefix}"
    try:
        deadline = time.monotonic() + 90
        deployment = None
        with get_client(sync_client=True) as client:
            while deployment is None and time.monotonic() < deadline:
                assert process.poll() is None, process.stdout.read()
                try:
                    deployment = client.read_deployment_by_name(name)
                except Exception:
                    time.sleep(1)
        assert deployment is not None, f"{name} never appeared"
        crons = [s.schedule.cron for s in deployment.schedules]
        assert crons == ["17 3 * * *"]
        assert deployment.parameters["config_file"] == str(config)
        assert not any("secret" in str(v).lower() for v in deployment.parameters.values())
    finally:
        process.terminate()
        process.wait(timeout=30)
