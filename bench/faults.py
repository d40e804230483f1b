"""Fault injection: kill push and pull at random points, re-run them, count what broke.

Against the REAL local stack (`alpha stack up`). Each repetition starts a worker process
that pushes (or pulls), SIGKILLs it after a random delay drawn across a clean run's
duration, re-runs the step to completion, and counts:

- push: tasks per selected image in Label Studio (exactly 1 is the goal; 0 is a lost
  image, 2+ a duplicate). Every push repetition gets a fresh project, so a repetition
  cannot hide behind an earlier one; imports go in chunks of --chunk tasks (Label Studio
  accepts 500 per request, alpha's default) so more kills land between two requests.
- pull: label records per annotated task and their labels against Label Studio's
  annotations (the majority, as alpha resolves overlap). One project holds --annotated
  annotated tasks (some overlapped, some skipped); each repetition either starts from an
  empty bucket (every record and the cursor deleted) or edits a few annotations first, so
  kills land in first pulls and in incremental ones.

    python bench/faults.py --push-kills 50 --pull-kills 50
    python bench/faults.py --push-kills 3 --pull-kills 3 --tasks 200 --annotated 30  # quick

Prints a table and writes --json. Exit status 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

LABELS = [f"class-{i}" for i in range(10)]
HERE = Path(__file__).resolve()


# ---- shared by the harness and its workers ------------------------------------------------
def make_settings(prefix: str, title: str):
    from alpha.config import load_settings

    return load_settings(s3={"prefix": prefix}, labelstudio={"project_title": title},
                         task={"labels": LABELS})


def make_project(prefix: str, title: str):
    from alpha.labelstudio import LabelStudioProject
    from alpha.store import Store

    settings = make_settings(prefix, title)
    store = Store.from_settings(settings)
    return LabelStudioProject(settings, store)


def push_items(project, rep: int, tasks: int):
    """The selection of one push repetition: made-up images (push never reads the pixels)."""
    from alpha.labelstudio import PushItem
    from alpha.store import image_id_from_key

    rng = np.random.default_rng(rep)
    items = []
    for i in range(tasks):
        relative = f"faults/push-{rep:03d}/{i:05d}.png"
        pre = project.kind.pre_annotation(rng.dirichlet(np.ones(len(LABELS))), LABELS)
        items.append(PushItem(image_id_from_key(relative), project.store.image_key(relative),
                              pre.result, pre.score))
    return items


def worker(args: argparse.Namespace) -> None:
    """Runs in the child the harness kills: set up, say "ready", then do the step."""
    import alpha.labelstudio.queue as ls

    ls.IMPORT_CHUNK = args.chunk
    project = make_project(args.prefix, args.title)
    project.ensure_project()
    items = push_items(project, args.rep, args.tasks) if args.step == "push" else None
    print("ready", flush=True)
    if args.step == "push":
        project.push(items, model_version="faults", round_id=f"faults-{args.rep}")
    else:
        project.pull()
    print("done", flush=True)


# ---- the harness --------------------------------------------------------------------------
def run_worker(args: argparse.Namespace, step: str, title: str, rep: int,
               kill_after: float | None) -> dict[str, Any]:
    """Start a worker; kill it `kill_after` s after it is ready (None: let it finish)."""
    command = [sys.executable, str(HERE), "--worker", step, "--prefix", args.prefix,
               "--title", title, "--rep", str(rep), "--tasks", str(args.tasks),
               "--chunk", str(args.chunk)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    line = process.stdout.readline().strip()
    if line != "ready":
        process.wait(timeout=60)
        raise RuntimeError(f"{step} worker did not start: {process.stderr.read()[-2000:]}")
    started = time.monotonic()
    if kill_after is None:
        out, err = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"{step} worker failed: {err[-2000:]}")
        return {"seconds": time.monotonic() - started, "killed": False}
    try:
        process.wait(timeout=kill_after)
        killed = False  # finished before the kill was due
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        killed = True
    return {"seconds": time.monotonic() - started, "killed": killed, "delay": kill_after}


def tasks_per_image(project) -> Counter:
    return Counter(project._image_id_of(t.get("data") or {})
                   for t in project._list_tasks("id,data"))


def push_faults(args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Kill pushes at random points; after each re-run every image must have one task."""
    clean_title = f"alpha faults {args.prefix} push clean"
    clean = run_worker(args, "push", clean_title, 10_000, None)
    delete_project(clean_title)
    window = clean["seconds"] * 1.2
    counts: Counter = Counter()
    reps = []
    for rep in range(args.push_kills):
        title = f"alpha faults {args.prefix} push {rep}"
        killed = run_worker(args, "push", title, rep, rng.uniform(0, window))
        project = make_project(args.prefix, title)
        # The marker is there from just before the first import request to just after the
        # last: a kill that leaves it hit the import itself.
        in_import = project.store.exists(project._intent_key())
        before_rerun = tasks_per_image(project).total()
        run_worker(args, "push", title, rep, None)
        project = make_project(args.prefix, title)
        per_image = tasks_per_image(project)
        expected = {item.image_id for item in push_items(project, rep, args.tasks)}
        outcome = Counter(min(per_image.get(i, 0), 2) for i in expected)
        extra = sum(1 for i in per_image if i not in expected)
        counts.update({"images": len(expected), "exactly_once": outcome[1],
                       "lost": outcome[0], "duplicated": outcome[2] + extra})
        reps.append({**killed, "in_import": in_import, "tasks_before_rerun": before_rerun,
                     "lost": outcome[0], "duplicated": outcome[2] + extra})
        delete_project(title)
    return {"clean_push_s": clean["seconds"], "kill_window_s": window, "totals": dict(counts),
            "killed_mid_run": sum(r["killed"] for r in reps),
            "killed_mid_import": sum(r["killed"] and r["in_import"] for r in reps),
            "killed_mid_import_partial": sum(
                r["killed"] and r["in_import"] and 0 < r["tasks_before_rerun"] < args.tasks
                for r in reps),
            "reps": reps}


def expected_labels(project) -> dict[str, tuple[str, str | None]]:
    """image id -> (status, label) that Label Studio's annotations amount to."""
    from alpha.consensus import majority_vote

    out = {}
    for task in project._export(sorted(
            int(t["id"]) for t in project._list_tasks("id,total_annotations,cancelled_annotations")
            if t.get("total_annotations") or t.get("cancelled_annotations"))):
        annotations = sorted(task["annotations"], key=lambda a: (a.get("updated_at") or "",
                                                                 a["id"]))
        finished = [a for a in annotations if not a.get("was_cancelled")]
        image_id = project._image_id_of(task["data"])
        if not finished:
            out[image_id] = ("skipped", None)
            continue
        labels = [project.kind.label_from_result(a["result"], project.labels) for a in finished]
        out[image_id] = ("labeled", majority_vote(labels).label)
    return out


def prepare_pull_project(args: argparse.Namespace, title: str, rng: random.Random):
    """Push --annotated tasks and annotate them: ~10% skipped, ~10% with three annotations."""
    project = make_project(args.prefix, title)
    items = push_items(project, 20_000, args.annotated)
    project.push(items, model_version="faults", round_id="faults-pull")
    tasks = project.task_image_ids()
    for item in items:
        task_id = tasks[item.image_id]
        draw = rng.random()
        if draw < 0.1:
            project.create_annotation(task_id, [], was_cancelled=True)
            continue
        for _ in range(3 if draw > 0.9 else 1):
            label = rng.choice(LABELS)
            project.create_annotation(task_id, project.kind.result_from_label(label))
    return project


def reset_pulled(project) -> None:
    """An empty bucket for this prefix's labels: every record and the pull cursor gone."""
    keys = [*project.store.list_keys("labels/"), project._cursor_key()]
    for key in keys:
        project.store.delete(key)


def edit_some(project, rng: random.Random, n: int = 5) -> None:
    annotated = [t for t in project._export(sorted(project.task_image_ids().values()))
                 if any(not a.get("was_cancelled") for a in t.get("annotations") or [])]
    for task in rng.sample(annotated, min(n, len(annotated))):
        annotation = next(a for a in task["annotations"] if not a.get("was_cancelled"))
        project.client.annotations.update(
            id=annotation["id"], result=project.kind.result_from_label(rng.choice(LABELS)))


def pull_faults(args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Kill pulls at random points; after each re-run every annotated task must have
    exactly one record, with the label its annotations amount to."""
    from alpha.records import read_all_records

    title = f"alpha faults {args.prefix} pull"
    project = prepare_pull_project(args, title, rng)
    clean = run_worker(args, "pull", title, 0, None)
    window = clean["seconds"] * 1.2
    counts: Counter = Counter()
    reps = []
    for rep in range(args.pull_kills):
        incremental = rep % 2 == 1
        if incremental:
            edit_some(project, rng)
        else:
            reset_pulled(project)
        killed = run_worker(args, "pull", title, rep, rng.uniform(0, window))
        written_before_rerun = sum(1 for _ in project.store.list_keys("labels/"))
        run_worker(args, "pull", title, rep, None)
        expected = expected_labels(project)
        records = read_all_records(project.store)
        lost = sum(1 for i in expected if i not in records)
        wrong = sum(1 for i, want in expected.items()
                    if i in records and (records[i].status, records[i].label) != want)
        extra = sum(1 for i in records if i not in expected)
        record_keys = list(project.store.list_keys("labels/"))
        counts.update({"annotated_tasks": len(expected), "records": len(record_keys),
                       "lost": lost, "wrong_label": wrong, "extra": extra})
        reps.append({**killed, "incremental": incremental,
                     "records_before_rerun": written_before_rerun,
                     "lost": lost, "wrong_label": wrong, "extra": extra})
    delete_project(title)
    return {"clean_pull_s": clean["seconds"], "kill_window_s": window, "totals": dict(counts),
            "killed_mid_run": sum(r["killed"] for r in reps),
            "killed_with_records_partly_written": sum(
                r["killed"] and not r["incremental"]
                and 0 < r["records_before_rerun"] < args.annotated for r in reps),
            "reps": reps}


def delete_project(title: str) -> None:
    project = make_project("unused", title)
    found = project._find_project()
    if found is not None:
        project.client.projects.delete(id=found["id"])


def cleanup_bucket(prefix: str) -> None:
    store = make_project(prefix, "unused").store
    for key in list(store.list_keys("")):
        store.delete(key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--push-kills", type=int, default=50)
    p.add_argument("--pull-kills", type=int, default=50)
    p.add_argument("--tasks", type=int, default=1000, help="images per push")
    p.add_argument("--chunk", type=int, default=100, help="tasks per import request")
    p.add_argument("--annotated", type=int, default=200, help="annotated tasks for pull")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("bench/results/faults.json"))
    p.add_argument("--prefix", default=None, help=argparse.SUPPRESS)
    p.add_argument("--title", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=("push", "pull"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.step = args.worker
        worker(args)
        return 0

    args.prefix = f"faults-{uuid.uuid4().hex[:8]}"
    rng = random.Random(args.seed)
    make_project(args.prefix, "unused").store.ensure_bucket()
    started = time.monotonic()
    try:
        report = {"command": " ".join(["python", *sys.argv]), "tasks_per_push": args.tasks,
                  "chunk": args.chunk, "annotated": args.annotated,
                  "push": push_faults(args, rng) if args.push_kills else None,
                  "pull": pull_faults(args, rng) if args.pull_kills else None}
    finally:
        cleanup_bucket(args.prefix)
    report["seconds"] = time.monotonic() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    bad = 0
    print("| step | kills | killed mid-run | units checked | exactly once | lost | duplicated "
          "or wrong |\n|---|---|---|---|---|---|---|")
    if report["push"]:
        t = report["push"]["totals"]
        bad += t["lost"] + t["duplicated"]
        print(f"| push ({args.tasks} images each) | {args.push_kills} | "
              f"{report['push']['killed_mid_run']} (mid-import: "
              f"{report['push']['killed_mid_import']}, of which with part of the tasks made: "
              f"{report['push']['killed_mid_import_partial']}) | {t['images']} images | "
              f"{t['exactly_once']} | {t['lost']} | {t['duplicated']} |")
    if report["pull"]:
        t = report["pull"]["totals"]
        bad += t["lost"] + t["wrong_label"] + t["extra"]
        once = t["annotated_tasks"] - t["lost"] - t["wrong_label"]
        print(f"| pull ({args.annotated} annotated tasks) | {args.pull_kills} | "
              f"{report['pull']['killed_mid_run']} (records partly written: "
              f"{report['pull']['killed_with_records_partly_written']}) | "
              f"{t['annotated_tasks']} task records | {once} | {t['lost']} | "
              f"{t['wrong_label'] + t['extra']} |")
    print(f"\n{report['seconds']:.0f} s; wrote {args.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
