"""Orchestration on the real stack: one round at a time per project (Prefect global
concurrency limits), the deployments one `alpha serve` registers, and the pull that starts
train-and-select once enough labels arrived."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from PIL import Image
from prefect.client.orchestration import get_client

from alpha.ingest import ingest_folder
from alpha.loop import open_context
from alpha.rounds import round_ids
from alpha.store import image_id_from_key
from flows.locks import lock_name, project_lock

pytestmark = pytest.mark.integration

BATCH = 8


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """30 seed labels (3 per digit) and a pool of 60 real digits, with the pool's truth."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path_factory.mktemp("orchestration")
    images = folder / "images"
    images.mkdir()
    seed = [int(np.flatnonzero(digits.target == c)[k]) for c in range(10) for k in range(3)]
    pool = [i for i in range(200) if i not in seed][:60]
    truth = {}
    for i in seed + pool:
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"d-{i:04d}.png")
        truth[image_id_from_key(f"d-{i:04d}.png")] = str(digits.target[i])
    (folder / "seed.csv").write_text("".join(f"d-{i:04d}.png,{digits.target[i]}\n"
                                             for i in seed))
    prefix = f"test-orch-{uuid.uuid4().hex[:8]}"
    config = folder / "alpha.toml"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n[labelstudio]\nproject_title = "alpha test {prefix}"\n'
        '[task]\nlabels = ["0","1","2","3","4","5","6","7","8","9"]\n'
        "[train]\nimage_size = 8\nmin_steps = 60\nepochs = 5\n"
        f"[loop]\nbatch_size = {BATCH}\nmin_new_labels = 1\n"
    )
    ctx = open_context(config)
    ingest_folder(ctx.store, ctx.settings, images, folder / "seed.csv")
    yield config, ctx, truth
    found = ctx.project._find_project()
    if found is not None:
        ctx.project.client.projects.delete(id=found["id"])


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

