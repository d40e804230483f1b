"""Instance and panoptic segmentation on the real stack: a round per kind on the Prefect
server, objects pushed as one brush region each, and objects that come back from Label
Studio with their ids and classes, including an object the annotator deleted and one they
added.

Each kind gets a fresh project: seed masks (segment ids + classes.csv) ingested from a
folder, a pool, round 1 (train, score, select, push), the annotations made through Label
Studio's API (the simulated annotator's true objects; one task edited by hand and, for
instance, one emptied after its pre-annotation was deleted: "no object here"), round 2
(pull, retrain, push again).
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from prefect.client.orchestration import get_client

from alpha.datasets import (
    SegmentationDataset,
    compose_panoptic_scenes,
    load_stardist_tiles,
    stardist_available,
    write_instance_folder,
)
from alpha.demo import segment_targets
from alpha.ingest import ingest_folder
from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.loop import open_context
from alpha.records import read_all_records, read_mask
from alpha.simulate import simulate_annotations
from alpha.store import image_id_from_key
from flows.round import active_learning_round

pytestmark = pytest.mark.integration

SEED, POOL, BATCH = 10, 14, 4


def instance_data() -> tuple[SegmentationDataset, str]:
    if not stardist_available():
        pytest.skip("stardist's data files are not installed (bash infra/setup.sh)")
    return load_stardist_tiles(tile=(40, 32)), ""


def panoptic_data() -> tuple[SegmentationDataset, str]:
    scenes = compose_panoptic_scenes(SEED + POOL, size=(40, 32), garments=(1, 2),
                                     random_state=5)
    return scenes, f"[task.options]\nthings = {json.dumps(scenes.things)}\n"


DATA = {"instance": instance_data, "panoptic": panoptic_data}


@pytest.fixture(scope="module", params=["instance", "panoptic"])
def object_round(request, tmp_path_factory, stack_is_up):
    """A fresh project of the kind, round 1 on its seed masks, the annotations, round 2."""
    name = request.param
    kind = get_kind(name)
    dataset, options_toml = DATA[name]()
    n = SEED + POOL
    names = [f"{name}-{i:03d}.png" for i in range(n)]
    subset = SegmentationDataset(
        dataset.name, dataset.labels, dataset.images[:n], dataset.masks[:n],
        things=dataset.things, instances=dataset.instances[:n],
        instance_classes=dataset.instance_classes[:n])
    folder = tmp_path_factory.mktemp(name)
    write_instance_folder(folder, subset, names)
    for file in names[SEED:]:  # the pool: images without masks
        (folder / "masks" / file).unlink()
    labels = list(dataset.things) if name == "instance" else list(dataset.labels)
    prefix = f"test-{name}-{uuid.uuid4().hex[:8]}"
    config = folder / "alpha.toml"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n'
        f'[labelstudio]\nproject_title = "alpha {name} {prefix}"\n'
        f'[task]\nkind = "{name}"\nlabels = {json.dumps(labels)}\n{options_toml}'
        "[train]\nimage_size = 32\nchannels = 1\nepochs = 2\nmin_steps = 150\nbatch_size = 8\n"
        "widths = [8, 16]\nrefit = false\n"
        f"[loop]\nbatch_size = {BATCH}\n"
    )
    ctx = open_context(config)
    report = ingest_folder(ctx.store, ctx.settings, folder / "images", masks=folder / "masks")
    assert report.problems == []
    assert (report.uploaded, report.seed_labels) == (n, SEED)
    truth = {image_id_from_key(file): target
             for file, target in zip(names, segment_targets(subset), strict=True)}
    first = run_round(config)
    pushed = ctx.store.get_json(ctx.store.round_key(first["round"], "push.json"))["created"]
    predictions = {task_id: ctx.project.client.predictions.list(task=task_id)
                   for task_id in pushed.values()}
    # One task by hand: the annotator deletes the first true object and adds one of their own.
    edited_id = sorted(pushed)[0]
    edited = edit_objects(truth[edited_id], kind, labels)
    ctx.project.create_annotation(pushed[edited_id], kind.result_from_target(
        edited, labels, edited.mask.shape[::-1]))
    emptied_id = None
    if name == "instance":  # "no object here", on a task whose pre-annotation is gone
        emptied_id = sorted(pushed)[1]
        for prediction in predictions[pushed[emptied_id]]:
            ctx.project.client.predictions.delete(id=prediction.id)
        ctx.project.create_annotation(pushed[emptied_id], [])
    simulated = simulate_annotations(ctx.project, truth, error_rate=0.0, random_state=1)
    second = run_round(config)
    yield {"kind": kind, "ctx": ctx, "labels": labels, "truth": truth, "first": first,
           "pushed": pushed, "predictions": predictions, "edited_id": edited_id,
           "edited": edited, "emptied_id": emptied_id, "simulated": simulated,
           "second": second}
    found = ctx.project._find_project()
    if found is not None:
        ctx.project.client.projects.delete(id=found["id"])
    keys = list(ctx.store.list_keys(""))
    for start in range(0, len(keys), 1000):
        ctx.store.client.delete_objects(Bucket=ctx.store.bucket, Delete={
            "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})


def run_round(config) -> dict:
    state = active_learning_round(config_file=str(config), return_state=True)
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.type.value == "COMPLETED"
    return state.result()


def edit_objects(truth: Target, kind, labels: list[str]) -> Target:
    """`truth` without its first object and with a new 4 x 4 object where no object was."""
    ids = np.asarray(truth.mask).copy()
    segments = [dict(s) for s in truth.segments]
    things = [s for s in segments if s["isthing"]]
    assert things, "the edited image needs an object to delete"
    ids[ids == things[0]["id"]] = 0
    segments.remove(things[0])
    free = np.argwhere(np.lib.stride_tricks.sliding_window_view(
        ~np.isin(ids, [s["id"] for s in things[1:]]), (4, 4)).all(axis=(2, 3)))
    top, left = free[len(free) // 2]
    new_id = max((s["id"] for s in segments), default=0) + 1
    ids[top:top + 4, left:left + 4] = new_id
    segments.append({"id": new_id, "label": things[0]["label"], "isthing": True})
    return Target(mask=ids, segments=segments)


def objects_of(ids: np.ndarray, segments: list[dict]) -> list[tuple[str, frozenset]]:
    """Each thing segment as (class, its pixels): comparable whatever the ids are."""
    return sorted((s["label"], frozenset(map(tuple, np.argwhere(ids == s["id"]))))
                  for s in segments if s["isthing"] and (ids == s["id"]).any())


def test_a_round_completes_and_pushes_one_region_per_object(object_round):
    kind, ctx, first = object_round["kind"], object_round["ctx"], object_round["first"]
    assert first["labels"]["labeled"] == SEED
    assert first["model"]["primary_metric"] == kind.PRIMARY_METRIC
    assert kind.PRIMARY_METRIC in first["model"]["metrics"]
    assert first["selection"]["pool_size"] == POOL and first["push"]["created"] == BATCH
    width, height = 40, 32
    regions_per_task = []
    for task_id in object_round["pushed"].values():
        data = ctx.project.client.tasks.get(id=task_id).data
        assert data["image_size"] == [width, height]  # an empty annotation's size
        predictions = object_round["predictions"][task_id]
        assert len(predictions) == 1
        prediction = predictions[0]
        assert 0.0 < prediction.score <= 1.0
        assert prediction.model_version == first["model"]["version"]
        object_regions = [r for r in prediction.result if r["from_name"] == kind.FROM_NAME]
        ids = [r["id"] for r in prediction.result]
        assert len(set(ids)) == len(ids), "two regions share an id"
        covered = np.zeros((height, width), np.int32)
        for region in prediction.result:
            assert region["type"] == "brushlabels"
            assert (region["original_width"], region["original_height"]) == (width, height)
            assert len(region["value"]["brushlabels"]) == 1
            if region["from_name"] == kind.FROM_NAME:  # objects carry their confidence
                assert 0.0 <= region["score"] <= 1.0
            alpha = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3]
            assert alpha.any(), "an empty region was pushed"
            covered += alpha > 0
        assert covered.max() <= 1, "regions overlap"
        regions_per_task.append(len(object_regions))
        if not prediction.result:
            continue  # no object and no stuff predicted: nothing to read back
        # Each object region is one object: reading them back gives one segment each.
        reading = kind.read_annotations([prediction.result], object_round["labels"],
                                        ctx.settings.task.options)
        things = [s for s in reading.target.segments if s["isthing"]]
        assert len(things) == len(object_regions)
        if kind.NAME == "panoptic":
            stuff = [r["value"]["brushlabels"][0] for r in prediction.result
                     if r["from_name"] == kind.STUFF_NAME]
            assert len(stuff) == len(set(stuff)), "a stuff class in two regions"
    assert max(regions_per_task) >= 1, "no pushed task shows a predicted object"


def test_objects_come_back_with_their_ids_and_classes_and_the_edit_is_pulled(object_round):
    ctx, truth, second = object_round["ctx"], object_round["truth"], object_round["second"]
    by_hand = 1 + (object_round["emptied_id"] is not None)  # the edited (and emptied) task
    assert object_round["simulated"].annotated == BATCH - by_hand
    assert second["pull"]["new"] == BATCH and second["pull"]["problems"] == []
    assert second["labels"]["labeled"] == SEED + BATCH
    pulled = {i: r for i, r in read_all_records(ctx.store).items() if r.source == "labelstudio"}
    assert set(pulled) == set(object_round["pushed"])
    for image_id, record in pulled.items():
        ids = read_mask(ctx.store, record)
        expected = (object_round["edited"] if image_id == object_round["edited_id"]
                    else Target(mask=np.zeros_like(truth[image_id].mask), segments=[])
                    if image_id == object_round["emptied_id"] else truth[image_id])
        assert objects_of(ids, record.segments) == objects_of(np.asarray(expected.mask),
                                                              expected.segments), image_id
        stuff = sorted(s["label"] for s in record.segments if not s["isthing"])
        assert stuff == sorted(s["label"] for s in expected.segments if not s["isthing"])
    edited = pulled[object_round["edited_id"]]
    before = truth[object_round["edited_id"]]
    deleted = objects_of(np.asarray(before.mask), before.segments)[0]
    after = objects_of(read_mask(ctx.store, edited), edited.segments)
    assert deleted not in after
    assert any(len(pixels) == 16 for _, pixels in after)  # the added 4 x 4 object
    assert not edited.simulated
