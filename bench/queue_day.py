"""Queue depth over a simulated day of annotation: is the annotators' queue held at its
target (loop.queue_depth) while people drain it, on the running local stack?

`alpha serve` runs for a fresh project (real digits, 30 seed labels; bench.orchestration's
setup); the first round fills the queue. Then the SIMULATED annotator works through a
compressed day: bursts of annotations a couple of seconds apart, idle spells between them
and a lunch break halfway, drawn from a seeded generator. Nothing else drives the loop:
each annotation reaches Label Studio's webhook, whose pull tops the queue up below the
low-water mark and starts train-and-select every loop.retrain_after labels, as it would for
people. A sampler reads the queue depth (Label Studio tasks without an annotation) every
second; when the annotator finds the queue empty it waits, and that wait is reported.

    ALPHA_HOME=... python bench/queue_day.py --annotations 240

The project is removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alpha.config import LoopSettings
from alpha.errors import AlphaError
from alpha.labelstudio import LabelStudioProject
from alpha.loop import RoundContext
from alpha.simulate import simulate_annotations
from alpha.store import Store
from alpha.train import latest_key
from bench.orchestration import served_project


def day_plan(annotations: int, gap_s: float, random_state: int = 0) -> list[float]:
    """Seconds the annotator waits before each annotation: bursts of 8-30 tasks about
    `gap_s` apart (log-normal, 1-4x spread), an idle spell of 10-35 s between bursts, and
    a lunch break of 90 s halfway. A person's day with its evenings and nights cut out."""
    rng = np.random.default_rng(random_state)
    waits: list[float] = []
    lunch = annotations // 2
    while len(waits) < annotations:
        burst = int(rng.integers(8, 31))
        for k in range(min(burst, annotations - len(waits))):
            gap = float(np.clip(rng.lognormal(np.log(gap_s), 0.5), gap_s / 2, 4 * gap_s))
            if k == 0:
                gap += 90.0 if len(waits) <= lunch < len(waits) + burst else 0.0
                gap += float(rng.uniform(10, 35)) if waits else 0.0
            waits.append(gap)
    return waits


@dataclass
class Sampler:
    """Reads the queue depth and the latest model every `every_s` seconds in a thread,
    with its own Label Studio client (the annotator's is busy in the main thread)."""

    ctx: RoundContext
    every_s: float = 1.0
    samples: list[tuple[float, int, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            try:
                depth = len(self.ctx.project.unannotated_tasks())
                model = (self.ctx.store.get_json(latest_key(self.ctx.store)) or {}
                         ).get("version")
            except AlphaError:  # Label Studio's pages moved under the listing: next second
                self.stop.wait(self.every_s)
                continue
            self.samples.append((time.monotonic() - start, depth, model))
            self.stop.wait(self.every_s)


def annotate_day(ctx: RoundContext, truth: dict[str, str], waits: list[float],
                 give_up_s: float = 300.0) -> tuple[int, float, bool]:
    """SIMULATION: one annotation after each wait; an empty queue is waited out (polled
    every 0.5 s), for at most `give_up_s` per task. Returns (annotations made, seconds the
    annotator waited for a task, whether it gave up)."""
    done, starved = 0, 0.0
    for k, wait in enumerate(waits):
        time.sleep(wait)
        waited = 0.0
        while True:
            report = simulate_annotations(ctx.project, truth, random_state=k, limit=1)
            if report.annotated or report.skipped:
                done += 1
                break
            if report.no_truth:
                raise RuntimeError(f"the annotator cannot answer the queue: {report}")
            if waited >= give_up_s:  # the loop stopped feeding the queue
                return done, starved, True
            starved += 0.5  # the queue is empty
            waited += 0.5
            time.sleep(0.5)
    return done, starved, False


def summary(samples: list[tuple[float, int, str | None]], target: int, low: int) -> dict:
    """Depth statistics weighted by time (each sample holds until the next one)."""
    times = np.array([s[0] for s in samples])
    depths = np.array([s[1] for s in samples])
    held = np.diff(times, append=times[-1])
    total = float(held.sum()) or 1.0
    return {
        "min": int(depths.min()), "max": int(depths.max()),
        "mean": float((depths * held).sum() / total),
        "below_low_s": float(held[depths < low].sum()),
        "empty_s": float(held[depths == 0].sum()),
        "over_target_s": float(held[depths > target].sum()),
        "models": len({s[2] for s in samples if s[2]}),
        "seconds": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=int, default=240)
    parser.add_argument("--gap", type=float, default=2.0,
                        help="median seconds between two annotations of a burst")
    parser.add_argument("--depth", type=int, default=20, help="loop.queue_depth")
    parser.add_argument("--low", type=int, default=10, help="loop.queue_low")
    parser.add_argument("--batch", type=int, default=20, help="loop.batch_size")
    parser.add_argument("--retrain-after", type=int, default=40, help="loop.retrain_after")
    parser.add_argument("--min-steps", type=int, default=500, help="train.min_steps")
    parser.add_argument("--pull-every", type=int, default=60, help="loop.pull_interval_s")
    parser.add_argument("--poll", type=float, default=LoopSettings().runner_poll_s,
                        help="loop.runner_poll_s: how often serve looks for due runs")
    parser.add_argument("--csv", type=Path, help="write the samples (s, depth, model) here")
    args = parser.parse_args()

    waits = day_plan(args.annotations, args.gap)
    print(f"planned day: {args.annotations} annotations in about {sum(waits) / 60:.1f} min "
          f"of waits (plus the annotating itself)", flush=True)
    loop_extra = (f"queue_depth = {args.depth}\nqueue_low = {args.low}\n"
                  f"retrain_after = {args.retrain_after}\nrunner_poll_s = {args.poll}\n")
    with (tempfile.TemporaryDirectory() as tmp,
          served_project(Path(tmp), args.batch, args.pull_every, args.min_steps,
                         pool_size=max(600, 2 * args.annotations),
                         loop_extra=loop_extra) as served):
        ctx, truth, webhook = served
        sampler = Sampler(_own_context(ctx))
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            done, starved, gave_up = annotate_day(ctx, truth, waits)
        finally:
            sampler.stop.set()
            thread.join(timeout=30)
        day_s = time.monotonic() - started
        runs = _runs_by_state(ctx)
    stats = summary(sampler.samples, args.depth, args.low)
    if args.csv:
        with args.csv.open("w", newline="") as out:
            csv.writer(out).writerows([("seconds", "depth", "model"), *sampler.samples])
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nwebhook registered: {webhook}; target {args.depth}, low-water {args.low}, "
          f"batch {args.batch}, retrain after {args.retrain_after} labels, train.min_steps "
          f"{args.min_steps}, pull every {args.pull_every} s; runner_poll_s {args.poll}; "
          f"{load}")
    print("| annotations | day (min) | depth min | depth max | depth mean (time-weighted) "
          "| time below low-water | time empty | annotator waited for a task | time over "
          "target | models trained |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {done} | {day_s / 60:.1f} | {stats['min']} | {stats['max']} | "
          f"{stats['mean']:.1f} | {stats['below_low_s']:.0f} s "
          f"({100 * stats['below_low_s'] / stats['seconds']:.1f}%) | {stats['empty_s']:.0f} s | "
          f"{starved:.0f} s | {stats['over_target_s']:.0f} s | {stats['models']} |")
    print("flow runs of the served deployments by state:", runs)
    if gave_up:
        print(f"the annotator GAVE UP after {done} annotations: no task for 300 s")


def _runs_by_state(ctx: RoundContext) -> dict[str, int]:
    """How many runs of each served deployment ended (or stand) in each state."""
    from collections import Counter

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.names import PULL_FLOW, TRAIN_FLOW, full_name

    counts: Counter[str] = Counter()
    with get_client(sync_client=True) as client:
        for flow_name in (PULL_FLOW, TRAIN_FLOW):
            deployment = client.read_deployment_by_name(full_name(flow_name, ctx.settings))
            runs, offset = [None], 0
            while runs:  # the server answers at most 200 at a time
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[deployment.id])), limit=200, offset=offset)
                counts.update(f"{flow_name} {run.state_name}" for run in runs)
                offset += len(runs)
    return dict(sorted(counts.items()))


def _own_context(ctx: RoundContext) -> RoundContext:
    """A second context on the same settings: its own S3 and Label Studio clients."""
    store = Store.from_settings(ctx.settings)
    return RoundContext(ctx.settings, store, LabelStudioProject(ctx.settings, store))


if __name__ == "__main__":
    main()
