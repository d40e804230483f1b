"""Orchestration delay: from the Nth new label to the new model's tasks at the head of the
annotators' queue, with training time beside it, on the running local stack.

`alpha serve` runs in its own process for a fresh project (real digits, 30 seed labels);
one round queues the first batch. Then, each cycle, the SIMULATED annotator answers
loop.retrain_after tasks, one at a time as a person would, and the clock starts at the last
answer. The path under test is the real one: Label Studio's webhook (or, without it, the
scheduled pull) starts `pull-labels`, which starts `train-and-select`, which trains,
re-predicts the queue and pushes; the clock stops when Label Studio's `next` task (what an
annotator opening the queue is served) carries the new model's prediction. Training time
is the `train` task's run time in that flow run, read from Prefect.

    ALPHA_HOME=... python bench/orchestration.py --cycles 3 --batch 10

The project (S3 prefix, Label Studio project, deployments) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from alpha.config import LoopSettings, point_prefect_at
from alpha.ingest import ingest_folder
from alpha.loop import RoundContext, open_context
from alpha.simulate import simulate_annotations
from alpha.store import image_id_from_key
from alpha.train import latest_key


def make_project(folder: Path, batch: int, pull_every_s: int, min_steps: int,
                 pool_size: int = 300, loop_extra: str = "") -> tuple[Path, dict[str, str]]:
    """A config and images: 30 seed labels (3 per digit) and a pool of `pool_size` digits;
    the queue's target is two batches unless `loop_extra` (more [loop] lines) says so."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = folder / "images"
    images.mkdir()
    seed = [int(np.flatnonzero(digits.target == c)[k]) for c in range(10) for k in range(3)]
    pool = [i for i in range(len(digits.target)) if i not in seed][:pool_size]
    truth = {}
    for i in seed + pool:
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"b-{i:04d}.png")
        truth[image_id_from_key(f"b-{i:04d}.png")] = str(digits.target[i])
    (folder / "seed.csv").write_text("".join(f"b-{i:04d}.png,{digits.target[i]}\n"
                                             for i in seed))
    prefix = f"bench-orch-{uuid.uuid4().hex[:8]}"
    config = folder / "alpha.toml"
    depth = "" if "queue_depth" in loop_extra else f"queue_depth = {2 * batch}\n"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n[labelstudio]\nproject_title = "alpha bench {prefix}"\n'
        '[task]\nlabels = ["0","1","2","3","4","5","6","7","8","9"]\n'
        f"[train]\nimage_size = 8\nmin_steps = {min_steps}\n"
        f"[loop]\nbatch_size = {batch}\n{depth}{loop_extra}"
        f'pull_interval_s = {pull_every_s}\nschedule_cron = "17 3 * * *"\n'
    )
    return config, truth


@contextlib.contextmanager
def served_project(folder: Path, batch: int, pull_every_s: int, min_steps: int,
                   **project) -> Iterator[tuple[RoundContext, dict[str, str], bool]]:
    """A fresh project (`make_project`) ingested, its first round run (the first batch in
    the queue, and the webhook registered if Label Studio allows it), and `alpha serve`
    running for it: (context, truth, webhook registered). On the way out serve stops and
    the project is removed: objects, Label Studio project, deployments."""
    config, truth = make_project(folder, batch, pull_every_s, min_steps, **project)
    ctx = open_context(config)
    point_prefect_at(ctx.settings)
    ingest_folder(ctx.store, ctx.settings, folder / "images", folder / "seed.csv")
    from flows.round import active_learning_round

    try:
        active_learning_round(config_file=str(config))
        webhook = bool(ctx.project._request(
            "GET", "api/webhooks/", params={"project": ctx.project.project_id}))
        serve = subprocess.Popen([sys.executable, "-m", "alpha.cli", "serve", "--config",
                                  str(config)], env={**os.environ}, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        try:
            time.sleep(15)  # the deployments registered and the runner polling
            yield ctx, truth, webhook
        finally:
            _stop(serve)
    finally:
        _cleanup(ctx)


def _stop(serve: subprocess.Popen) -> None:
    """Stop serve; if it has not stopped within a minute (flow runs of its own still going),
    kill its process group: serve and the flow runs it started, nothing else."""
    serve.terminate()
    try:
        serve.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait(timeout=10)


def head_version(ctx) -> str | None:
    """The model version of the prediction on the task Label Studio serves next."""
    task = ctx.project._request("GET", f"api/projects/{ctx.project.project_id}/next")
    predictions = (task or {}).get("predictions") or []
    return predictions[0].get("model_version") if predictions else None


def cycle(ctx, truth: dict, n: int, seed: int, limit_s: float) -> dict:
    old = (ctx.store.get_json(latest_key(ctx.store)) or {}).get("version")
    for k in range(n):  # one at a time, as a person would
        report = simulate_annotations(ctx.project, truth, random_state=seed * 1000 + k, limit=1)
        assert report.annotated == 1, report
    start = time.monotonic()
    new = None
    while time.monotonic() - start < limit_s:
        version = (ctx.store.get_json(latest_key(ctx.store)) or {}).get("version")
        if version != old and head_version(ctx) == version:
            new = version
            break
        time.sleep(0.5)
    delay = time.monotonic() - start
    manifest = ctx.store.get_json(ctx.store.model_key(new, "metrics.json")) if new else None
    return {"delay_s": delay if new else None, "model": new,
            "train_s": _train_time(ctx) if new else None,
            "n_labels": (manifest or {}).get("n_labels")}


def _train_time(ctx, limit_s: float = 120) -> float | None:
    """Run time of the `train` task of the newest train-and-select run of this project,
    once that run has finished (it may still be writing its report when its tasks already
    head the queue)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from flows.names import TRAIN_FLOW, full_name

    deadline = time.monotonic() + limit_s
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(full_name(TRAIN_FLOW, ctx.settings))
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployment.id]))) if r.start_time]
            newest = max(runs, key=lambda r: r.start_time, default=None)
            if newest is not None and newest.state and newest.state.is_final():
                tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[newest.id])))
                trained = [t for t in tasks if t.name.startswith("train-")]
                return trained[0].total_run_time.total_seconds() if trained else None
            time.sleep(1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10,
                        help="loop.batch_size (and retrain_after: one batch annotated)")
    parser.add_argument("--pull-every", type=int, default=60, help="loop.pull_interval_s")
    parser.add_argument("--limit", type=float, default=900, help="seconds to wait per cycle")
    parser.add_argument("--min-steps", type=int, default=500,
                        help="train.min_steps (500: the default; fewer: a shorter training)")
    parser.add_argument("--poll", type=float, default=LoopSettings().runner_poll_s,
                        help="loop.runner_poll_s: how often serve looks for due runs")
    args = parser.parse_args()

    rows = []
    with (tempfile.TemporaryDirectory() as tmp,
          served_project(Path(tmp), args.batch, args.pull_every, args.min_steps,
                         loop_extra=f"runner_poll_s = {args.poll}\n") as served):
        ctx, truth, webhook = served
        for c in range(args.cycles):
            row = cycle(ctx, truth, args.batch, c + 1, args.limit)
            rows.append(row)
            print(f"cycle {c + 1}: delay {row['delay_s']} s, train {row['train_s']} s, "
                  f"model {row['model']} ({row['n_labels']} labels)", flush=True)
    delays = [r["delay_s"] for r in rows if r["delay_s"] is not None]
    trains = [r["train_s"] for r in rows if r["train_s"] is not None]
    print(f"\nwebhook registered: {webhook}; pull every {args.pull_every} s; "
          f"train.min_steps {args.min_steps}; "
          f"{args.batch} labels per retrain; runner_poll_s {args.poll}")
    print("| cycle | Nth label -> new model's task at the head (s) | training (s) |")
    print("|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {_fmt(r['delay_s'])} | {_fmt(r['train_s'])} |")
    if delays:
        print(f"| median | {statistics.median(delays):.1f} | "
              f"{statistics.median(trains) if trains else float('nan'):.1f} |")


def _fmt(value: float | None) -> str:
    return "timeout" if value is None else f"{value:.1f}"


def _cleanup(ctx) -> None:
    """The project's objects, Label Studio project and deployments."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.names import PULL_FLOW, ROUND_FLOW, TRAIN_FLOW, full_name

    keys = list(ctx.store.list_keys(""))
    for start in range(0, len(keys), 1000):
        ctx.store.client.delete_objects(Bucket=ctx.store.bucket, Delete={
            "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
    found = ctx.project._find_project()
    if found is not None:
        ctx.project.client.projects.delete(id=found["id"])
    with get_client(sync_client=True) as client:
        for flow_name in (ROUND_FLOW, PULL_FLOW, TRAIN_FLOW):
            with contextlib.suppress(ObjectNotFound):  # already gone
                client.delete_deployment(
                    client.read_deployment_by_name(full_name(flow_name, ctx.settings)).id)


if __name__ == "__main__":
    main()
