"""Semantic segmentation on the real stack: masks through Label Studio and back, and a round.

A mask pushed as a pre-annotation (brush RLE) and accepted unchanged must come back from a
pull pixel for pixel; an edit must update it and say how much was changed; a polygon must be
rasterised where it was drawn; every kind of broken annotation must be named, task by task,
without stopping the good ones; and a whole round (train, score, select, push, then pull the
simulated annotator's masks) must complete as a flow run on the Prefect server.
"""

from __future__ import annotations

import io
import json
import re
import uuid
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from PIL import Image
from prefect.client.orchestration import get_client

from alpha.datasets import compose_scenes, write_segmentation_folder
from alpha.history import read_history
from alpha.ingest import ingest_folder
from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.labelstudio import LabelStudioProject, PushItem
from alpha.loop import RoundContext, open_context, pull_step
from alpha.records import read_all_records, read_mask, read_record
from alpha.report import REPORT_KEY, render_report
from alpha.simulate import simulate_annotations
from alpha.store import image_id_from_key
from flows.round import active_learning_round

pytestmark = pytest.mark.integration

LABELS = ["background", "square", "disc"]
W, H = 40, 30
UNLABELLED = 255


# ---- fixtures: semantic variants of the conftest ones ---------------------------------------
@pytest.fixture(scope="module")
def settings(stack_is_up, run_id, semantic_settings_for):
    """Overrides conftest's: this module's prefix and project, for the semantic kind."""
    return semantic_settings_for("sem", run_id, LABELS)


@pytest.fixture(scope="module")
def kind():
    return get_kind("semantic")


@pytest.fixture(scope="module")
def project(settings, store, project_opener):
    """Overrides conftest's: no digit images, the semantic label config."""
    with project_opener(settings, store) as project:
        yield project


@pytest.fixture(scope="module")
def names(kind, settings) -> dict:
    """The control and object names of the kind's label config (brush, polygon, image)."""
    root = ET.fromstring(kind.label_config(LABELS, settings.task.options))
    found = {"image": root.find(".//Image"), "brush": root.find(".//BrushLabels"),
             "polygon": root.find(".//PolygonLabels")}
    missing = [tag for tag, element in found.items() if element is None]
    assert not missing, f"the semantic label config has no {missing}"
    return {tag: element.get("name") for tag, element in found.items()}


# ---- helpers ----------------------------------------------------------------------------
def shapes_mask(seed: int, unlabelled: bool = False) -> np.ndarray:
    """A W x H mask: background, a rectangle ("square", 1), a disc (2), maybe an unlabelled
    strip on the left."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    mask = np.zeros((H, W), np.uint8)
    top, left = int(rng.integers(2, 12)), int(rng.integers(2, 12))
    mask[top:top + 10, left:left + 12] = 1
    cx, cy = int(rng.integers(24, 33)), int(rng.integers(8, 22))
    mask[(xx - cx) ** 2 + (yy - cy) ** 2 <= 36] = 2
    if unlabelled:
        mask[:, :3] = UNLABELLED
    return mask


def upload_image(store, name: str, mask: np.ndarray) -> tuple[str, str]:
    """A grey PNG showing the mask's shapes, under images/; returns (image id, key)."""
    grey = np.where(mask == UNLABELLED, 10, 40 + 90 * mask.astype(np.int32)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    key = store.image_key(name)
    store.put_bytes(key, buffer.getvalue(), "image/png")
    return store.image_id_for(key), key


def repainted(mask: np.ndarray) -> np.ndarray:
    """What an annotator makes of `mask`: two patches repainted with another class."""
    out = mask.copy()
    out[18:28, 0:14] = 2
    out[0:4, 30:40] = 1
    assert (out != mask).sum() > 40
    return out


def brush_result(kind, mask: np.ndarray) -> list[dict]:
    return kind.result_from_target(Target(mask=mask), LABELS, (mask.shape[1], mask.shape[0]))


def polygon_result(names: dict, points: list[list[float]], label: str) -> list[dict]:
    return [{"type": "polygonlabels", "from_name": names["polygon"], "to_name": names["image"],
             "original_width": W, "original_height": H, "image_rotation": 0,
             "value": {"points": points, "polygonlabels": [label], "closed": True}}]


def prediction_result(project: LabelStudioProject, task_id: int) -> list[dict]:
    """The pre-annotation's results exactly as Label Studio stores them."""
    predictions = project.client.predictions.list(task=task_id)
    assert len(predictions) == 1, predictions
    return predictions[0].result


def annotation_id(project: LabelStudioProject, image_id: str) -> int:
    record = read_record(project.store, image_id)
    assert record is not None and record.ls_annotation_id is not None
    return record.ls_annotation_id


def assert_nothing_written(store, image_id: str) -> None:
    assert not store.exists(store.label_key(image_id)), image_id
    assert not store.exists(store.mask_key(image_id)), image_id


# ---- 1. brush masks: accepted unchanged, then edited -------------------------------------------
def test_an_accepted_mask_comes_back_pixel_identical_and_an_edit_updates_it(
    kind, project, store
):
    masks = {f"same-{i}": shapes_mask(i, unlabelled=i == 1) for i in range(3)}
    ids = {name: upload_image(store, f"same/{name}.png", m) for name, m in masks.items()}
    items = [PushItem(image_id, key, brush_result(kind, masks[name]), 0.3 + 0.1 * n)
             for n, (name, (image_id, key)) in enumerate(ids.items())]
    created = project.push(items, model_version="m-same", round_id="r-same").created
    assert set(created) == {image_id for image_id, _ in ids.values()}
    for task_id in created.values():
        project.create_annotation(task_id, prediction_result(project, task_id))

    pulled = project.pull()
    assert pulled.problems == [] and (pulled.new, pulled.updated) == (3, 0)
    for name, (image_id, _) in ids.items():
        record = read_record(store, image_id)
        assert record.status == "labeled" and record.ls_task_id == created[image_id]
        assert (record.mask.width, record.mask.height) == (W, H)
        np.testing.assert_array_equal(read_mask(store, record), masks[name], err_msg=name)

    # The annotator repaints part of the fully labeled image 0 with another class.
    edited = repainted(masks["same-0"])
    image_id = ids["same-0"][0]
    old = read_record(store, image_id)
    project.client.annotations.update(id=annotation_id(project, image_id),
                                      result=brush_result(kind, edited))
    pulled = project.pull()
    assert pulled.problems == [] and (pulled.new, pulled.updated) == (0, 1)
    assert pulled.changed == [image_id]
    record = read_record(store, image_id)
    np.testing.assert_array_equal(read_mask(store, record), edited)
    assert record.mask.sha256 != old.mask.sha256 and len(record.history) == 1
    again = project.pull()
    assert (again.new, again.updated, again.problems) == (0, 0, [])




def test_changed_is_the_share_of_the_pre_annotation_the_annotator_repainted(
    kind, project, store, names
):
    accepted, edited = shapes_mask(11), shapes_mask(12)
    blank = np.zeros((H, W), np.uint8)
    ids = {name: upload_image(store, f"changed/{name}.png", m)
           for name, m in {"accepted": accepted, "edited": edited, "outlined": blank}.items()}
    items = [PushItem(ids["accepted"][0], ids["accepted"][1], brush_result(kind, accepted), 0.4),
             PushItem(ids["edited"][0], ids["edited"][1], brush_result(kind, edited), 0.5),
             PushItem(ids["outlined"][0], ids["outlined"][1], brush_result(kind, blank), 0.6)]
    created = project.push(items, model_version="m-changed", round_id="r-changed").created
    task = {name: created[image_id] for name, (image_id, _) in ids.items()}
    repaint = repainted(edited)
    project.create_annotation(task["accepted"], prediction_result(project, task["accepted"]))
    project.create_annotation(task["edited"], brush_result(kind, repaint))
    project.create_annotation(task["outlined"], polygon_result(  # over "all background"
        names, [[25.0, 20.0], [75.0, 20.0], [75.0, 80.0], [25.0, 80.0]], "square"))
    pulled = project.pull()
    assert pulled.problems == [] and pulled.new == 3
    changed = {name: read_record(store, image_id).changed for name, (image_id, _) in ids.items()}
    # Every pixel was pre-annotated, so any definition of the share agrees on these values.
    assert changed == {"accepted": 0.0,
                       "edited": pytest.approx(float(np.mean(repaint != edited))),
                       "outlined": 1.0}, changed


# ---- 2. polygons ------------------------------------------------------------------------
def test_a_polygon_annotation_comes_back_as_its_raster(kind, project, store, names):
    blank = np.zeros((H, W), np.uint8)
    image_id, key = upload_image(store, "polygon/rect.png", blank)
    task_id = project.push([PushItem(image_id, key, brush_result(kind, blank), 0.5)],
                           model_version="m-poly", round_id="r-poly").created[image_id]
    # x from 10 to 30 px, y from 6 to 24 px, in percent of 40 x 30
    project.create_annotation(task_id, polygon_result(
        names, [[25.0, 20.0], [75.0, 20.0], [75.0, 80.0], [25.0, 80.0]], "square"))
    pulled = project.pull()
    assert pulled.problems == [] and pulled.new == 1
    record = read_record(store, image_id)
    mask = read_mask(store, record)
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    # Pixels whose centre lies inside: exactly columns 10..29 of rows 6..23.
    expected = np.full((H, W), UNLABELLED, np.uint8)
    expected[6:24, 10:30] = 1
    np.testing.assert_array_equal(mask, expected)


# ---- 3. bad input -----------------------------------------------------------------------
def test_bad_annotations_are_named_per_task_and_written_once_fixed(
    kind, settings, project, store, names
):
    good_mask = shapes_mask(7)
    good = brush_result(kind, good_mask)
    brush = good[0]

    def broken_brush(**value) -> list[dict]:
        return [{**brush, "value": {**brush["value"], **value}}]

    small = np.full((10, 10), 255, np.uint8)
    bad = {  # name -> (result, what the problem must mention)
        "rle-too-short": (broken_brush(rle=mask2rle(small)), r"rle|size|length|pixel"),
        "rle-strings": (broken_brush(rle=["a", "b", "c"]), r"rle"),
        "rle-not-a-list": (broken_brush(rle="garbage"), r"rle"),
        "polygon-two-points": (polygon_result(names, [[10.0, 10.0], [60.0, 60.0]], "disc"),
                               r"point|3"),
        "polygon-outside": (polygon_result(names, [[120.0, 110.0], [160.0, 120.0],
                                                   [140.0, 170.0]], "disc"),
                            r"outside|image"),
        "unknown-label": (broken_brush(brushlabels=["unicorn"]), r"unicorn"),
    }
    ids = {name: upload_image(store, f"bad/{name}.png", good_mask) for name in [*bad, "good"]}
    items = [PushItem(image_id, key, brush_result(kind, good_mask), 0.5)
             for image_id, key in ids.values()]
    created = project.push(items, model_version="m-bad", round_id="r-bad").created
    annotations = {}
    for name, (image_id, _) in ids.items():
        result = bad[name][0] if name in bad else good
        annotations[name] = project.create_annotation(created[image_id], result)

    pulled = project.pull()
    assert (pulled.new, pulled.updated) == (1, 0), pulled
    np.testing.assert_array_equal(read_mask(store, read_record(store, ids["good"][0])),
                                  good_mask)
    by_task = {problem.task_id: problem for problem in pulled.problems}
    assert len(pulled.problems) == len(bad), pulled.problems
    for name, (_, pattern) in bad.items():
        image_id = ids[name][0]
        problem = by_task.get(created[image_id])
        assert problem is not None, f"{name}: no problem reported ({pulled.problems})"
        assert problem.image_id == image_id
        assert re.search(pattern, problem.reason, re.IGNORECASE), (name, problem.reason)
        assert "Traceback" not in problem.reason and len(problem.reason) < 1000
        assert_nothing_written(store, image_id)

    # Problems are read again on every pull until fixed, nothing is written meanwhile, and
    # the round's pull record shows each one by task and image.
    again = pull_step(RoundContext(settings, store, project), "round-bad-input")
    assert (again["new"], again["updated"]) == (0, 0)
    assert sorted(again["problems"]) == sorted(
        f"task {p.task_id} ({p.image_id}): {p.reason}" for p in pulled.problems)
    assert all(not store.exists(store.label_key(ids[name][0])) for name in bad)

    for name in bad:  # the annotator fixes each one
        project.client.annotations.update(id=annotations[name], result=good)
    fixed = project.pull()
    assert fixed.problems == [] and (fixed.new, fixed.updated) == (len(bad), 0)
    for name in bad:
        record = read_record(store, ids[name][0])
        assert record.ls_annotation_id == annotations[name]
        np.testing.assert_array_equal(read_mask(store, record), good_mask, err_msg=name)
    assert project.pull().problems == []


# ---- 4. a whole round on the Prefect server ---------------------------------------------
SEED, POOL, BATCH = 12, 20, 4
SCENE = (40, 32)  # (width, height): not the model's 32 x 32, so pre-annotations are resized


@pytest.fixture(scope="module")
def scenes_round(tmp_path_factory, stack_is_up):
    """A fresh semantic project: 12 composed scenes with seed masks and a pool of 20."""
    scenes = compose_scenes(SEED + POOL, size=SCENE, garments=(1, 2), random_state=3)
    folder = tmp_path_factory.mktemp("scenes")
    write_segmentation_folder(folder, scenes)
    for name in scenes.names[SEED:]:
        (folder / "masks" / name).unlink()
    prefix = f"test-sem-flow-{uuid.uuid4().hex[:8]}"
    config = folder / "alpha.toml"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n'
        f'[labelstudio]\nproject_title = "alpha semantic flow test {prefix}"\n'
        f'[task]\nkind = "semantic"\nlabels = {json.dumps(scenes.labels)}\n'
        "[task.options]\nuncertainty_map = true\n"
        "[train]\nimage_size = 32\nchannels = 1\nepochs = 2\nmin_steps = 10\nbatch_size = 8\n"
        "widths = [8, 16]\nrefit = false\n"
        f"[loop]\nbatch_size = {BATCH}\n"
    )
    ctx = open_context(config)
    report = ingest_folder(ctx.store, ctx.settings, folder / "images", masks=folder / "masks")
    assert report.problems == []
    assert (report.uploaded, report.seed_labels) == (SEED + POOL, SEED)
    truth = {image_id_from_key(name): Target(mask=scenes.masks[i])
             for i, name in enumerate(scenes.names)}
    yield config, ctx, truth
    found = ctx.project._find_project()
    if found is not None:
        ctx.project.client.projects.delete(id=found["id"])
    keys = list(ctx.store.list_keys(""))
    for start in range(0, len(keys), 1000):
        ctx.store.client.delete_objects(Bucket=ctx.store.bucket, Delete={
            "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})


def run_round(config, strategy: str | None = None) -> dict:
    state = active_learning_round(config_file=str(config), strategy=strategy, return_state=True)
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.type.value == "COMPLETED"
    return state.result()


@pytest.fixture(scope="module")
def two_rounds(scenes_round):
    """Round 1 on the seed masks; the simulated annotator answers its tasks with the true
    masks; round 2 pulls them. Both as flow runs on the Prefect server."""
    config, ctx, truth = scenes_round
    first = run_round(config)
    pushed = ctx.store.get_json(ctx.store.round_key(first["round"], "push.json"))["created"]
    predictions = {task_id: ctx.project.client.predictions.list(task=task_id)
                   for task_id in pushed.values()}
    simulated = simulate_annotations(ctx.project, truth, error_rate=0.0, random_state=1)
    second = run_round(config)
    return {"first": first, "pushed": pushed, "predictions": predictions,
            "simulated": simulated, "second": second}


def test_a_semantic_round_completes_and_the_next_pulls_the_masks(scenes_round, two_rounds,
                                                                 kind):
    config, ctx, truth = scenes_round
    summary = two_rounds["first"]
    assert summary["labels"]["labeled"] == SEED
    assert summary["model"]["primary_metric"] == kind.PRIMARY_METRIC
    assert kind.PRIMARY_METRIC in summary["model"]["metrics"]
    assert summary["selection"]["pool_size"] == POOL
    assert summary["push"]["created"] == BATCH

    selection = ctx.store.get_json(ctx.store.round_key(summary["round"], "selection.json"))
    assert len(selection["items"]) == BATCH
    for item in selection["items"]:  # ids, keys and scores only: no maps, no probabilities
        assert set(item) <= {"image_id", "key", "uncertainty", "confidence"}, item
        assert isinstance(item["image_id"], str) and isinstance(item["key"], str)
        assert all(isinstance(item[k], float) for k in set(item) - {"image_id", "key"})

    pushed = two_rounds["pushed"]
    assert set(pushed) == {item["image_id"] for item in selection["items"]}
    config_root = ET.fromstring(kind.label_config(ctx.settings.task.labels,
                                                  ctx.settings.task.options))
    brush_name = config_root.find(".//BrushLabels").get("name")
    width, height = SCENE
    for image_id, task_id in pushed.items():
        assert image_id in truth
        predictions = two_rounds["predictions"][task_id]
        assert len(predictions) == 1
        prediction = predictions[0]
        assert prediction.score is not None and 0.0 < prediction.score <= 1.0
        assert prediction.model_version == summary["model"]["version"]
        regions = prediction.result
        assert regions, f"task {task_id} has an empty pre-annotation"
        classes = [region["value"]["brushlabels"] for region in regions]
        assert all(len(c) == 1 and c[0] in ctx.settings.task.labels for c in classes)
        assert len({c[0] for c in classes}) == len(classes), classes  # one region per class
        covered = np.zeros((height, width), np.int32)
        for region in regions:
            assert region["type"] == "brushlabels" and region["from_name"] == brush_name
            assert (region["original_width"], region["original_height"]) == SCENE
            assert region["value"]["format"] == "rle"
            alpha = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3]
            assert set(np.unique(alpha)) <= {0, 255}
            covered += alpha > 0
        assert covered.max() == 1, "predicted regions overlap"

    # Each task shows its uncertainty map: a PNG at the image's size in the bucket, which
    # Label Studio serves through the task data like the image.
    token = ctx.settings.labelstudio.api_key.get_secret_value()
    for image_id, task_id in pushed.items():
        key = ctx.store.task_image_key(kind.UNCERTAINTY_KEY, image_id)
        stored = ctx.store.get_bytes(key)
        assert Image.open(io.BytesIO(stored)).size == SCENE
        auth = {"Authorization": f"Token {token}"}
        task = httpx.get(f"{ctx.project.url}/api/tasks/{task_id}/", timeout=30,
                         headers=auth).json()
        resolved = task["data"][kind.UNCERTAINTY_KEY].lstrip("/")
        served = httpx.get(f"{ctx.project.url}/{resolved}", timeout=30, headers=auth,
                           follow_redirects=True)
        assert served.status_code == 200 and served.content == stored

    simulated = two_rounds["simulated"]
    assert simulated.annotated == BATCH and simulated.no_truth == 0
    assert (simulated.wrong, simulated.wrong_image_ids) == (0, [])  # error_rate=0
    second = two_rounds["second"]
    assert second["pull"]["new"] == BATCH and second["pull"]["problems"] == []
    assert second["labels"]["labeled"] == SEED + BATCH
    assert second["push"]["created"] == BATCH
    pulled = {i: r for i, r in read_all_records(ctx.store).items() if r.source == "labelstudio"}
    assert set(pulled) == set(pushed)
    for image_id, record in pulled.items():
        assert record.simulated and record.mask is not None
        np.testing.assert_array_equal(read_mask(ctx.store, record), truth[image_id].mask)


def test_the_pulled_masks_say_how_much_of_the_pre_annotation_was_changed(scenes_round,
                                                                         two_rounds):
    _, ctx, _ = scenes_round
    pulled = [r for r in read_all_records(ctx.store).values() if r.source == "labelstudio"]
    assert len(pulled) == BATCH
    assert all(r.changed is not None and 0.0 <= r.changed <= 1.0 for r in pulled), pulled
    labels = two_rounds["second"]["labels"]
    assert labels["compared"] == BATCH and labels["mean_changed"] is not None


def test_the_report_of_a_semantic_project_counts_classes_in_the_masks(scenes_round,
                                                                      two_rounds):
    """The report works for masks: labels per class are the labeled images whose (true,
    pixel-identical) mask has the class, the metric is mean IoU, and every plot with data is
    drawn; agreement has none (nobody annotated an image twice) and says so."""
    _, ctx, truth = scenes_round
    history = read_history(ctx.store, ctx.settings)
    labeled = [r for r in read_all_records(ctx.store).values() if r.status == "labeled"]
    expected = {name: sum(index in np.unique(truth[r.image_id].mask) for r in labeled)
                for index, name in enumerate(ctx.settings.task.labels)}
    assert {name: sum(c.values()) for name, c in history.class_counts.items()} == expected
    assert history.primary_metric == "miou" and len(history.rounds) == 2
    assert all(point.metric is not None for point in history.rounds)

    page = render_report(history)
    drawn = dict(re.findall(r'<figure class="plot" id="([a-z-]+)" data-drawn="(\w+)">', page))
    assert {name for name, value in drawn.items() if value == "false"} == {"agreement"}
    assert "images whose mask has the class" in page
    assert ctx.store.exists(ctx.store.key(*REPORT_KEY))  # the round left it in the bucket
