"""Push/pull throughput: alpha's bulk Label Studio adapter vs one-task-at-a-time SDK calls.

Against the running local stack (`alpha stack up`), on the same server:

- push: `LabelStudioProject.push` (one bulk import per 500 tasks, predictions inline) vs
  `tasks.create` + `predictions.create` per task;
- pull: `LabelStudioProject.pull` (Data Manager id listing + export of annotated tasks,
  parallel record writes) vs listing the tasks then `annotations.list` per task and writing
  each record in turn;
- listing a project's tasks: the adapter's `task_image_ids` vs `tasks.list(fields="all")`.

Both sides annotate with the simulated annotator in between (timed too, not compared), or,
with `--annotate import` (sizes the per-task API takes too long to annotate), the pull reads
a second project per side holding the same images imported with their predictions and
annotations. `--naive-tasks` runs the one-at-a-time side on fewer tasks: its rate (tasks/s)
stands for the whole size, and the speed-ups are ratios of rates. Each run makes its own S3
prefixes and projects and removes them at the end. It prints which database the stack's
Label Studio uses (`alpha stack up --db`).

`--kind semantic` times the adapter alone with segmentation tasks: composed 240x180 scenes,
each pushed with a brush-RLE pre-annotation (one region per class), answered by the simulated
annotator with the true mask, pulled into records with mask PNGs (checked pixel-identical).

`--kind instance` does the same with object tasks: `--objects` (20) separate objects of two
classes per 240x180 image, each pushed as its own brush region, pulled into segment-id PNGs
and segment lists (checked: every object back with its pixels and class).

    ALPHA_HOME=... python bench/push_pull.py --tasks 1000
    ALPHA_HOME=... python bench/push_pull.py --tasks 10000 --naive-tasks 500 --annotate import
    ALPHA_HOME=... python bench/push_pull.py --kind semantic --tasks 500
    ALPHA_HOME=... python bench/push_pull.py --kind instance --tasks 500 --objects 20
"""

from __future__ import annotations

import argparse
import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from alpha.config import Settings, alpha_home, load_settings
from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.labelstudio import LabelStudioProject, PushItem
from alpha.labelstudio.queue import IMPORT_CHUNK
from alpha.records import LabelRecord, read_record, upsert_record
from alpha.simulate import simulate_annotations
from alpha.store import Store, image_id_from_key
from infra import postgres

LABELS = [str(d) for d in range(10)]
LIST_ALL = "tasks.list(fields='all')"


def settings_for(run: str, side: str) -> Settings:
    return load_settings(
        s3={"prefix": f"bench-{run}-{side}"},
        labelstudio={"project_title": f"alpha bench {run} {side}"},
        task={"labels": LABELS},
    )


def upload_images(store: Store, n: int, rng: np.random.Generator) -> tuple[list, dict]:
    """n small random PNGs; returns push items and the 'truth' for the simulator."""
    pngs = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    keys = [store.image_key(f"bench/{i:06d}.png") for i in range(n)]
    store.ensure_bucket()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kp: store.put_bytes(kp[0], kp[1], "image/png"), zip(keys, pngs,
                                                                                strict=True)))
    items, truth = [], {}
    for i, key in enumerate(keys):
        image_id = image_id_from_key(f"bench/{i:06d}.png")
        probs = rng.dirichlet(np.ones(len(LABELS)))
        pre = get_kind("classification").pre_annotation(probs, LABELS)
        items.append(PushItem(image_id, key, pre.result, pre.score))
        truth[image_id] = LABELS[int(rng.integers(len(LABELS)))]
    return items, truth


def naive_push(project: LabelStudioProject, items: list[PushItem], model_version: str) -> None:
    client, kind = project.client, project.kind
    for item in items:
        task = client.tasks.create(project=project.project_id, data={
            kind.DATA_KEY: project.store.s3_uri(item.key), "image_id": item.image_id,
            "round": "bench"})
        client.predictions.create(task=task.id, result=item.result, score=item.score,
                                  model_version=model_version)


def naive_pull(project: LabelStudioProject) -> int:
    client, kind, store = project.client, project.kind, project.store
    written = 0
    for task in client.tasks.list(project=project.project_id, page_size=100):
        annotations = [a for a in client.annotations.list(id=task.id) if not a.was_cancelled]
        if not annotations:
            continue
        latest = max(annotations, key=lambda a: a.updated_at)
        uri = task.data[kind.DATA_KEY]
        record = LabelRecord(
            image_id=task.data["image_id"], image_key=uri.removeprefix(store.s3_uri("")),
            status="labeled", label=kind.label_from_result(latest.result, LABELS),
            source="labelstudio", ls_project_id=project.project_id, ls_task_id=task.id,
            ls_annotation_id=latest.id, annotation_updated_at=latest.updated_at.isoformat())
        written += upsert_record(store, record, read_record(store, record.image_id))
    return written


def timed(label: str, n: int, fn, results: dict):
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    results[label] = (n, seconds)
    print(f"  {label:<38} {seconds:8.2f} s  {n / seconds:9.1f} tasks/s", flush=True)
    return out


def cleanup(project: LabelStudioProject, store: Store) -> None:
    found = project._find_project()
    if found is not None:
        project.client.projects.delete(id=found["id"])
    keys = list(store.list_keys(""))
    for start in range(0, len(keys), 1000):
        store.client.delete_objects(Bucket=store.bucket, Delete={
            "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})


OBJECT_LABELS = ["cell", "debris"]
SIZE = (240, 180)


def object_targets(n: int, objects: int, rng: np.random.Generator) -> list:
    """n (grey image, instance Target) pairs, each with `objects` separate ellipses of
    random classes, one per cell of a grid over the image (so none touch)."""
    from alpha.kinds.base import Target

    width, height = SIZE
    columns = int(np.ceil(np.sqrt(objects * width / height)))
    rows = int(np.ceil(objects / columns))
    cell_w, cell_h = width // columns, height // rows
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for _ in range(n):
        ids = np.zeros((height, width), np.uint16)
        segments = []
        for k in range(objects):
            row, column = divmod(k, columns)
            cy = row * cell_h + cell_h / 2 + rng.uniform(-2, 2)
            cx = column * cell_w + cell_w / 2 + rng.uniform(-2, 2)
            ry, rx = rng.uniform(0.2, 0.4) * cell_h, rng.uniform(0.2, 0.4) * cell_w
            ids[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = k + 1
            segments.append({"id": k + 1, "label": OBJECT_LABELS[int(rng.integers(2))],
                             "isthing": True})
        image = np.where(ids > 0, 200, 40).astype(np.uint8)
        out.append((image, Target(mask=ids, segments=segments)))
    return out


def _objects(ids: np.ndarray, segments: list[dict]) -> list[tuple[str, bytes]]:
    """Each object as (class, its pixel mask's bytes): comparable whatever the ids."""
    return sorted((s["label"], (ids == s["id"]).tobytes()) for s in segments)


def mask_run(n: int, run: str, kind_name: str, objects: int) -> None:
    """Push, annotate and pull n mask tasks through the adapter: semantic masks must come
    back pixel-identical; instance objects each with its pixels and class."""
    from alpha.datasets import compose_scenes
    from alpha.records import read_all_records, read_mask

    if kind_name == "semantic":
        scenes = compose_scenes(n, size=SIZE, garments=(2, 6))
        labels = scenes.labels
        pairs = [(image, Target(mask=mask)) for image, mask in
                 zip(scenes.images, scenes.masks, strict=True)]
    else:
        labels = OBJECT_LABELS
        pairs = object_targets(n, objects, np.random.default_rng(0))
    settings = load_settings(
        s3={"prefix": f"bench-{run}-{kind_name}"},
        labelstudio={"project_title": f"alpha bench {run} {kind_name}"},
        task={"kind": kind_name, "labels": labels})
    store = Store.from_settings(settings)
    project = LabelStudioProject(settings, store)
    kind = get_kind(kind_name)
    results: dict[str, float] = {}
    try:
        store.ensure_bucket()
        items, truth = [], {}
        for i, (image, target) in enumerate(pairs):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG")
            key = store.image_key(f"bench/{i:06d}.png")
            store.put_bytes(key, buffer.getvalue(), "image/png")
            image_id = store.image_id_for(key)
            result = kind.result_from_target(target, labels, SIZE)
            items.append(PushItem(image_id, key, result, 0.5, size=SIZE))
            truth[image_id] = target
        project.ensure_project()
        regions = sum(len(item.result) for item in items)
        print(f"{n} {kind_name} tasks ({SIZE[0]}x{SIZE[1]}, {regions / n:.1f} brush regions "
              "each):")
        timed("bulk push (adapter)", n, lambda: project.push(items, "bench-v1", "r1"), results)
        timed("simulate (true masks)", n, lambda: simulate_annotations(project, truth), results)
        pulled = timed("bulk pull (adapter, masks to PNG)", n, project.pull, results)
        assert pulled.new == n and not pulled.problems, pulled
        records = read_all_records(store)
        if kind_name == "semantic":
            same = sum(np.array_equal(read_mask(store, records[i]), truth[i].mask)
                       for i in truth)
        else:
            same = sum(_objects(read_mask(store, records[i]), records[i].segments)
                       == _objects(np.asarray(truth[i].mask), truth[i].segments) for i in truth)
        print(f"  back identical (pixels{'' if kind_name == 'semantic' else ' and classes'}): "
              f"{same} of {n}")
        assert same == n
        again = timed("bulk pull again (nothing new)", n, project.pull, results)
        assert again.new == again.updated == 0
    finally:
        cleanup(project, store)


def import_annotated(project: LabelStudioProject, items: list[PushItem], truth: dict,
                     model_version: str) -> None:
    """Give `project` one task per item carrying its prediction AND its true annotation, in
    bulk imports: annotated tasks for the pull to read, made without one API call per
    annotation (10,000 of those take about 25 minutes here)."""
    kind, store = project.kind, project.store
    tasks = [{"data": {kind.DATA_KEY: store.s3_uri(item.key), "image_id": item.image_id,
                       "round": "bench"},
              "predictions": [{"model_version": model_version, "score": item.score,
                               "result": item.result}],
              "annotations": [{"result": kind.result_from_target(
                  Target(label=truth[item.image_id]), LABELS, (0, 0))}]}
             for item in items]
    for start in range(0, len(tasks), IMPORT_CHUNK):
        project.client.projects.import_tasks(id=project.project_id,
                                             request=tasks[start:start + IMPORT_CHUNK],
                                             request_options={"timeout_in_seconds": 300})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--naive-tasks", type=int, default=None,
                        help="tasks for the one-at-a-time side (default: --tasks); its rate "
                        "stands for the whole size")
    parser.add_argument("--annotate", choices=("api", "import"), default="api",
                        help="api: the simulated annotator answers the pushed tasks, one call "
                        "each; import: the pull reads a second project of the same images "
                        "imported with their annotations (for sizes the API takes too long for)")
    parser.add_argument("--kind", choices=("classification", "semantic", "instance"),
                        default="classification")
    parser.add_argument("--objects", type=int, default=20,
                        help="objects per image with --kind instance")
    args = parser.parse_args()
    n, run = args.tasks, uuid.uuid4().hex[:8]
    if args.kind != "classification":
        mask_run(n, run, args.kind, args.objects)
        return
    sizes = {"bulk": n, "naive": args.naive_tasks or n}
    rng = np.random.default_rng(0)
    sides, pull_sides = {}, {}
    for side in ("bulk", "naive"):
        settings = settings_for(run, side)
        store = Store.from_settings(settings)
        sides[side] = (LabelStudioProject(settings, store), store)
        if args.annotate == "import":
            pulled = settings.model_copy(update={"labelstudio": settings.labelstudio.model_copy(
                update={"project_title": f"alpha bench {run} {side} pull"})})
            pull_sides[side] = (LabelStudioProject(pulled, store), store)
    results: dict[str, tuple[int, float]] = {}
    try:
        print(f"Label Studio on {postgres.chosen_db(alpha_home())}; uploading "
              f"{sizes['bulk']} + {sizes['naive']} images, setting up projects ...", flush=True)
        prepared = {side: upload_images(store, sizes[side], rng)
                    for side, (_, store) in sides.items()}
        for project, _ in (*sides.values(), *pull_sides.values()):
            project.ensure_project()

        bulk, _ = sides["bulk"]
        naive, _ = sides["naive"]
        items, truth = prepared["bulk"]
        naive_items, naive_truth = prepared["naive"]
        print("push tasks with predictions:")
        timed("bulk push (adapter)", n, lambda: bulk.push(items, "bench-v1", "r1"), results)
        timed("one-at-a-time push (SDK)", sizes["naive"],
              lambda: naive_push(naive, naive_items, "bench-v1"), results)

        print(f"list {sizes['naive']} tasks (image id -> task id), both ways:")
        timed("task_image_ids (DM include=id,data)", sizes["naive"], naive.task_image_ids,
              results)
        timed(LIST_ALL, sizes["naive"], lambda: list(naive.client.tasks.list(
            project=naive.project_id, fields="all", page_size=1000)), results)

        if args.annotate == "api":
            print("annotate (simulated annotator, per task; not compared):")
            timed("simulate (bulk side)", n, lambda: simulate_annotations(bulk, truth), results)
            timed("simulate (naive side)", sizes["naive"],
                  lambda: simulate_annotations(naive, naive_truth), results)
        else:
            print("import the same images again, annotated, for the pull (not compared):")
            bulk, _ = pull_sides["bulk"]
            naive, _ = pull_sides["naive"]
            timed("import annotated (bulk side)", n,
                  lambda: import_annotated(bulk, items, truth, "bench-v1"), results)
            timed("import annotated (naive side)", sizes["naive"],
                  lambda: import_annotated(naive, naive_items, naive_truth, "bench-v1"), results)

        print("pull annotated tasks into label records:")
        pulled = timed("bulk pull (adapter)", n, bulk.pull, results)
        assert pulled.new == n, pulled
        written = timed("one-at-a-time pull (SDK)", sizes["naive"], lambda: naive_pull(naive),
                        results)
        assert written == sizes["naive"], written
        again = timed("bulk pull again (nothing new)", n, bulk.pull, results)
        assert again.new == again.updated == 0

        def ratio(fast: str, slow: str) -> float:
            (n_fast, s_fast), (n_slow, s_slow) = results[fast], results[slow]
            return (n_fast / s_fast) / (n_slow / s_slow)

        push = ratio("bulk push (adapter)", "one-at-a-time push (SDK)")
        pull = ratio("bulk pull (adapter)", "one-at-a-time pull (SDK)")
        listing = ratio("task_image_ids (DM include=id,data)", LIST_ALL)
        subset = (f" (one-at-a-time side: {sizes['naive']} tasks, its rate stands for {n})"
                  if sizes["naive"] != n else "")
        print(f"speed-up, tasks/s over tasks/s: push x{push:.1f}, pull x{pull:.1f}, "
              f"listing x{listing:.1f}{subset}")
    finally:
        for project, store in (*sides.values(), *pull_sides.values()):
            cleanup(project, store)


if __name__ == "__main__":
    main()
