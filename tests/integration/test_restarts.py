"""A round survives its services restarting in the middle of it: S3 while the model trains,
Label Studio while the selection is pushed. The retried steps wait for them and the round
completes with every selected image queued once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from alpha.ingest import ingest_folder
from alpha.loop import open_context
from alpha.rounds import current_round_id
from flows.round import active_learning_round
from infra import stack

pytestmark = pytest.mark.integration

BATCH = 10


@pytest.fixture(scope="module")
def small_project(tmp_path_factory):
    """30 seed labels (3 per digit) and a pool of 60 real digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path_factory.mktemp("restarts")
    images = folder / "images"
    images.mkdir()
    seed = [int(np.flatnonzero(digits.target == c)[k]) for c in range(10) for k in range(3)]
    pool = [i for i in range(200) if i not in seed][:60]
    for i in seed + pool:
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"d-{i:04d}.png")
    (folder / "seed.csv").write_text("".join(f"d-{i:04d}.png,{digits.target[i]}\n"
                                             for i in seed))
    prefix = f"test-restart-{uuid.uuid4().hex[:8]}"
    config = folder / "alpha.toml"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n[labelstudio]\nproject_title = "alpha test {prefix}"\n'
        '[task]\nlabels = ["0","1","2","3","4","5","6","7","8","9"]\n'
        "[train]\nimage_size = 8\nmin_steps = 60\n"
        f"[loop]\nbatch_size = {BATCH}\n"
    )
    ctx = open_context(config)
    ingest_folder(ctx.store, ctx.settings, images, folder / "seed.csv")
    yield config, ctx
    found = ctx.project._find_project()
    if found is not None:
        ctx.project.client.projects.delete(id=found["id"])


def _restart_when(service_name: str, ready: Callable[[], bool], down_s: float,
                  log: list[str]) -> threading.Thread:
    """In the background: once `ready()`, stop the service, wait `down_s`, start it again."""
    service = stack.SERVICES[service_name]
    paths = stack.stack_paths()

    def run() -> None:
        deadline = time.monotonic() + 300
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        stack.stop_service(service, paths, log.append)
        log.append(f"{service_name} stopped")
        time.sleep(down_s)
        stack.start_service(service, paths, stack.ensure_credentials(paths), log.append)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_round_completes_when_s3_and_label_studio_restart_during_it(small_project):
    config, ctx = small_project
    round_id = current_round_id(ctx.store)
    log: list[str] = []

    def exists(name: str) -> Callable[[], bool]:
        key = ctx.store.round_key(round_id, f"{name}.json")
        return lambda: _quietly(lambda: ctx.store.exists(key))

    # S3 goes down as soon as the pull is recorded, i.e. while training reads the images;
    # Label Studio as soon as the selection is recorded, i.e. while it is pushed.
    s3 = _restart_when("s3", exists("pull"), down_s=5, log=log)
    labelstudio = _restart_when("labelstudio", exists("selection"), down_s=3, log=log)
    state = active_learning_round(config_file=str(config), return_state=True)
    s3.join(timeout=300)
    labelstudio.join(timeout=300)

    assert "s3 stopped" in log and "labelstudio stopped" in log, log
    assert stack.is_healthy(stack.SERVICES["s3"]) and stack.is_healthy(
        stack.SERVICES["labelstudio"])
    assert state.is_completed(), state
    summary = state.result()
    assert summary["round"] == round_id and summary["push"]["created"] == BATCH
    tasks = list(ctx.project._list_tasks("id,data"))
    images = {ctx.project._image_id_of(t["data"]) for t in tasks}
    assert len(tasks) == len(images) == BATCH  # every selected image queued once
    assert ctx.store.exists(ctx.store.round_key(round_id, "summary.json"))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    attempts = {run.name: run.run_count for run in runs}
    assert max(attempts.values()) >= 2, attempts  # a step really failed and was retried


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # the service is between stop and start
        return False
