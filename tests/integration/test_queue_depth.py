"""The annotators' queue at its target depth on the real stack: pushes stop at
loop.queue_depth, a pull tops the drained queue up from the latest model's candidates
without training, and after a retrain every queued task carries the new model's prediction
(the project's model version), so Label Studio serves the whole queue by one model."""

from __future__ import annotations

import pytest

from alpha.rounds import current_round_id
from alpha.simulate import simulate_annotations
from alpha.train import latest_key
from flows.pull import pull_and_maybe_train
from flows.round import active_learning_round

pytestmark = pytest.mark.integration

BATCH, DEPTH, LOW = 8, 12, 6


@pytest.fixture(scope="module")
def project(tmp_path_factory, first_digits_maker):
    """30 seed labels (3 per digit) and a pool of 60 real digits, with the pool's truth;
    retraining only by the round (retrain_after is out of reach)."""
    with first_digits_maker(
        tmp_path_factory.mktemp("queue"), "queue",
        f"batch_size = {BATCH}\nqueue_depth = {DEPTH}\nqueue_low = {LOW}\n"
        "retrain_after = 1000\n",
    ) as (config, ctx, truth):
        yield str(config), ctx, truth


def _queue(ctx) -> dict[int, dict]:
    """task id -> task with its predictions, of every unannotated task."""
    return {int(t["id"]): t for t in ctx.project.queued_tasks()}


def _latest_version(ctx) -> str:
    return ctx.store.get_json(latest_key(ctx.store))["version"]


def test_the_queue_is_refilled_to_its_depth_and_follows_the_newest_model(project):
    config, ctx, truth = project
    first = active_learning_round(config_file=config)
    v1 = first["model"]["version"]
    assert first["push"]["created"] == BATCH  # 8 < depth: the whole batch
    assert first["upkeep"]["refill"]["pushed"] == 0  # 8 >= the low-water mark
    assert len(_queue(ctx)) == BATCH

    # Annotators drain the queue below the low-water mark; a pull tops it up to the depth
    # from the round's candidates, without training.
    simulate_annotations(ctx.project, truth, random_state=1, limit=4)
    pulled = pull_and_maybe_train(config_file=config)
    assert pulled["pull"]["new"] == 4 and pulled["train_run"] is None
    assert pulled["refill"]["pushed"] == DEPTH - (BATCH - 4)
    queue = _queue(ctx)
    assert len(queue) == DEPTH
    assert _latest_version(ctx) == v1
    assert {p["model_version"] for t in queue.values() for p in t["predictions"]} == {v1}
    again = pull_and_maybe_train(config_file=config)  # full: nothing more
    assert again["refill"]["pushed"] == 0 and len(_queue(ctx)) == DEPTH

    # A round resumed after a crash, its selection already queued, trains on the new labels,
    # keeps its selection, re-predicts the whole queue with the new model and refills from
    # that model's candidates.
    simulate_annotations(ctx.project, truth, random_state=2, limit=8)
    assert len(_queue(ctx)) == DEPTH - 8
    ctx.store.delete(ctx.store.round_key("round-0001", "summary.json"))
    assert current_round_id(ctx.store) == "round-0001"
    resumed = active_learning_round(config_file=config)
    v2 = resumed["model"]["version"]
    assert resumed["round"] == "round-0001" and resumed["model"]["trained"] and v2 != v1
    assert resumed["push"]["created"] == 0
    assert resumed["upkeep"]["refresh"]["predicted"] == DEPTH - 8
    refill = resumed["upkeep"]["refill"]
    assert refill["pushed"] == 8 and refill["model_version"] == v2
    queue = _queue(ctx)
    assert len(queue) == DEPTH
    assert all([p["model_version"] for p in t["predictions"]] == [v2] for t in queue.values())
    images = list(ctx.project.task_image_ids())
    assert len(images) == len(set(images)) == 4 + 8 + DEPTH  # annotated + queued, once each

    # Label Studio serves the queue by the new model's scores: its next task is the one
    # with the lowest score (the most uncertain) among all queued tasks.
    project_id = ctx.project.project_id
    assert ctx.project._request("GET", f"api/projects/{project_id}/")["model_version"] == v2
    served = ctx.project._request("GET", f"api/projects/{project_id}/next")
    lowest = min(queue.values(), key=lambda t: t["predictions"][0]["score"])
    assert served["predictions"][0]["score"] == pytest.approx(lowest["predictions"][0]["score"])

    # The next round with a full queue pushes nothing past the depth.
    simulate_annotations(ctx.project, truth, random_state=3, limit=1)
    third = active_learning_round(config_file=config)
    assert third["push"]["created"] == 1 and third["upkeep"]["refill"]["pushed"] == 0
    assert len(_queue(ctx)) == DEPTH
