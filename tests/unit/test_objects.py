"""The instance and panoptic kinds without services: annotations to segment targets (overlap,
empty and misplaced regions, limits), consensus by IoU, what an annotator changed, ingest's
seed masks, metrics against known answers, and a tiny trained model's scores and
pre-annotations."""

from __future__ import annotations

import numpy as np
import pytest

from alpha.config import TrainSettings
from alpha.datasets import compose_panoptic_scenes
from alpha.demo import segment_targets
from alpha.errors import AnnotationError, ConfigError
from alpha.kinds import get_kind, objects
from alpha.kinds.base import Target
from alpha.masks import brush_region

instance = get_kind("instance")
panoptic = get_kind("panoptic")
LABELS = ["cell", "blob"]
PAN_LABELS = ["sky", "road", "car"]
PAN_OPTIONS = {"things": ["car"]}


def box(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[top:top + height, left:left + width] = True
    return out


def region(pixels: np.ndarray, label: str, tag: str = instance.FROM_NAME) -> dict:
    return brush_region(pixels, label, tag, instance.TO_NAME)


SHAPE = (12, 16)
A, B, C = box(SHAPE, 1, 1, 4, 4), box(SHAPE, 1, 5, 4, 4), box(SHAPE, 7, 9, 4, 5)


def things(target: Target) -> list[tuple[str, int]]:
    """(class, pixel count) of each object, in segment order."""
    mask = np.asarray(target.mask)
    return [(s["label"], int((mask == s["id"]).sum())) for s in target.segments if s["isthing"]]


def test_touching_objects_of_one_class_stay_two_objects():
    reading = instance.read_annotations([[region(A, "cell"), region(B, "cell")]], LABELS)
    assert things(reading.target) == [("cell", 16), ("cell", 16)]
    assert set(np.unique(reading.target.mask)) == {0, 1, 2}
    assert reading.agreement is None and reading.changed is None


def test_later_regions_win_shared_pixels_and_covered_or_empty_objects_are_dropped():
    covered = box(SHAPE, 2, 2, 2, 2)  # inside A, drawn first: painted over entirely
    empty = np.zeros(SHAPE, bool)
    result = [region(covered, "blob"), region(A, "cell"), region(box(SHAPE, 1, 3, 4, 4), "blob")]
    reading = instance.read_annotations([result + [region(empty, "cell")]], LABELS)
    # A lost its two right columns to the later blob; the covered blob and the empty region
    # are gone; ids are 1..k in drawing order
    assert things(reading.target) == [("cell", 8), ("blob", 16)]
    assert [s["id"] for s in reading.target.segments] == [1, 2]


def test_too_many_objects_are_refused_with_the_limit_named():
    many = [region(box(SHAPE, 0, i, 1, 1), "cell") for i in range(6)]
    with pytest.raises(AnnotationError, match=r"more than 5 objects \(options.max_objects\)"):
        instance.read_annotations([many], LABELS, {"max_objects": 5})


def test_panoptic_refuses_stuff_on_the_object_tool_and_objects_on_the_stuff_brush():
    sky = region(box(SHAPE, 0, 0, 3, 16), "sky", panoptic.FROM_NAME)
    with pytest.raises(AnnotationError, match=r"'sky' in the 'label' tool, which takes only car"):
        panoptic.read_annotations([[sky]], PAN_LABELS, PAN_OPTIONS)
    car = region(C, "car", panoptic.STUFF_NAME)
    with pytest.raises(AnnotationError, match=r"'car' in the 'stuff' tool, which takes only"):
        panoptic.read_annotations([[car]], PAN_LABELS, PAN_OPTIONS)


def test_panoptic_stuff_regions_of_a_class_merge_and_objects_keep_apart():
    result = [region(box(SHAPE, 0, 0, 3, 8), "sky", panoptic.STUFF_NAME),
              region(box(SHAPE, 0, 8, 3, 8), "sky", panoptic.STUFF_NAME),
              region(box(SHAPE, 3, 0, 9, 16), "road", panoptic.STUFF_NAME),
              region(A, "car", panoptic.FROM_NAME), region(C, "car", panoptic.FROM_NAME)]
    target = panoptic.read_annotations([result], PAN_LABELS, PAN_OPTIONS).target
    labels = [(s["label"], s["isthing"]) for s in target.segments]
    assert labels == [("sky", False), ("road", False), ("car", True), ("car", True)]
    sky = np.asarray(target.mask) == target.segments[0]["id"]
    assert sky.sum() == 3 * 16 - 4 * 2  # both sky regions, less the car drawn over it
    assert panoptic.target_problem(target, PAN_LABELS) is None


@pytest.mark.parametrize("kind, labels, options", [
    (instance, LABELS, {}), (panoptic, PAN_LABELS, PAN_OPTIONS)])
def test_a_target_survives_the_round_trip_through_label_studio_regions(kind, labels, options):
    ids = np.zeros(SHAPE, np.uint16)
    if kind is panoptic:
        ids[:6], ids[6:] = 3, 4
        segments = [{"id": 3, "label": "sky", "isthing": False},
                    {"id": 4, "label": "road", "isthing": False}]
        thing_label = "car"
    else:
        segments, thing_label = [], "cell"
    ids[A], ids[C] = 1, 2
    segments = [{"id": 1, "label": thing_label, "isthing": True},
                {"id": 2, "label": thing_label, "isthing": True}, *segments]
    target = Target(mask=ids, segments=segments)
    result = kind.result_from_target(target, labels, (SHAPE[1], SHAPE[0]))
    assert len(result) == len(segments)  # one region per object and per stuff class
    back = kind.read_annotations([result], labels, options).target
    assert things(back) == things(target)
    assert kind.target_problem(back, labels) is None


def test_consensus_keeps_the_objects_most_annotators_drew():
    first = [region(A, "cell"), region(C, "blob")]
    second = [region(A, "cell"), region(C, "cell")]  # same objects, C voted cell here
    third = [region(box(SHAPE, 1, 1, 4, 3), "cell"), region(B, "blob")]  # A slightly smaller
    reading = instance.read_annotations([first, second, third], LABELS)
    # A (3 of 3) and C (2 of 3, class: cell 1, blob 1 -> tie to the latest, cell) stay; B
    # (1 of 3) goes
    assert things(reading.target) == [("cell", 16), ("cell", 20)]
    assert 0.3 < reading.agreement < 1.0
    same = instance.read_annotations([first, first], LABELS)
    assert same.agreement == 1.0 and things(same.target) == [("cell", 16), ("blob", 20)]


def test_changed_counts_the_pixels_of_deleted_added_and_reclassified_objects():
    predicted = [region(A, "cell"), region(C, "cell")]
    same = instance.read_annotations([predicted], LABELS, predicted=predicted)
    assert same.changed == 0.0
    deleted = instance.read_annotations([[region(A, "cell")]], LABELS, predicted=predicted)
    assert deleted.changed == pytest.approx(C.sum() / C.size)
    renamed = instance.read_annotations([[region(A, "cell"), region(C, "blob")]], LABELS,
                                        predicted={"result": predicted})
    assert renamed.changed == pytest.approx(C.sum() / C.size)
    added = instance.read_annotations([predicted + [region(B, "blob")]], LABELS,
                                      predicted=predicted)
    assert added.changed == pytest.approx(B.sum() / B.size)


def test_an_empty_annotation_means_no_object_when_the_prediction_or_task_says_the_size():
    predicted = [region(A, "cell")]
    reading = instance.read_annotations([[]], LABELS, predicted=predicted)
    assert reading.target.mask.shape == SHAPE and not reading.target.mask.any()
    assert reading.target.segments == [] and reading.changed == pytest.approx(16 / A.size)
    with pytest.raises(AnnotationError, match="empty result"):
        instance.read_annotations([[]], LABELS)
    # an empty pre-annotation says no size: the task's data does (push keeps image_size)
    confirmed = instance.read_annotations([[]], LABELS, predicted=[], size=SHAPE[::-1])
    assert confirmed.target.mask.shape == SHAPE and confirmed.target.segments == []
    assert confirmed.changed == 0.0
    # the model predicted no object: everything the annotator drew is their work
    drawn = instance.read_annotations([predicted], LABELS, predicted=[])
    assert drawn.changed == pytest.approx(16 / A.size)
    assert instance.read_annotations([predicted], LABELS).changed is None  # no prediction


def test_seed_masks_need_a_class_for_every_id_and_stay_under_the_limit():
    ids = np.zeros(SHAPE, np.uint16)
    ids[A], ids[C] = 5, 9
    target = instance.seed_target(ids, {5: "cell", 9: "blob"}, LABELS, None, "m.png")
    assert things(target) == [("cell", 16), ("blob", 20)]
    with pytest.raises(AnnotationError, match=r"ids 9 that classes.csv gives no class"):
        instance.seed_target(ids, {5: "cell"}, LABELS, None, "m.png")
    with pytest.raises(AnnotationError, match=r"no class for any: add `m.png,id,label` rows"):
        instance.seed_target(ids, None, LABELS, None, "m.png")
    with pytest.raises(AnnotationError, match=r"2 objects, more than the limit of 1"):
        instance.seed_target(ids, {5: "cell", 9: "blob"}, LABELS, {"max_objects": 1}, "m.png")
    # panoptic: two ids of one stuff class are one segment (stuff has no instances)
    pan = np.full(SHAPE, 1, np.uint16)
    pan[:, 8:], pan[C] = 2, 3
    target = panoptic.seed_target(pan, {1: "road", 2: "road", 3: "car"}, PAN_LABELS,
                                  PAN_OPTIONS, "p.png")
    assert [(s["label"], s["isthing"]) for s in target.segments] == [("road", False),
                                                                      ("car", True)]


def test_settings_name_things_that_are_labels_and_leave_stuff():
    with pytest.raises(ConfigError, match="task.options.things"):
        panoptic.layout(PAN_LABELS, {"things": ["boat"]})
    with pytest.raises(ConfigError, match="task.options.things"):
        panoptic.layout(PAN_LABELS, {"things": PAN_LABELS})
    with pytest.raises(ConfigError, match="'background' is implied"):
        instance.layout(["background", "cell"])


def test_mask_ap_and_pq_of_known_answers():
    truths = [{"image_id": 0, "mask": A, "category_id": 1},
              {"image_id": 0, "mask": C, "category_id": 1}]
    perfect = [dict(t, score=0.9) for t in truths]
    assert objects.mask_ap(truths, perfect, SHAPE, 1, [1]) == (1.0, 1.0)
    half = [dict(truths[0], score=0.9)]  # one of two objects found
    ap50, _ = objects.mask_ap(truths, half, SHAPE, 1, [1])
    assert 0.45 < ap50 < 0.55
    assert objects.mask_ap(truths, [], SHAPE, 1, [1]) == (0.0, 0.0)


@pytest.fixture(scope="module")
def tiny_panoptic():
    """A panoptic model trained for a few steps on composed scenes (shapes, not skill)."""
    scenes = compose_panoptic_scenes(12, size=(40, 32), garments=(1, 2), random_state=2)
    targets = segment_targets(scenes)
    labels, options = scenes.labels, {"things": scenes.things}
    x = scenes.images[:, None].astype(np.float32) / 255
    y = panoptic.training_targets(targets, labels, (40, 32))
    settings = TrainSettings(image_size=40, image_height=32, channels=1, widths=(8, 16),
                             epochs=1, min_steps=6, batch_size=4, val_fraction=0.25)
    trained = panoptic.train(x, y, labels, settings, options)
    return trained, x, y, labels, options, settings


def test_a_trained_model_scores_pre_annotates_and_reloads(tiny_panoptic):
    trained, x, y, labels, options, settings = tiny_panoptic
    assert panoptic.PRIMARY_METRIC in trained.metrics
    scores = panoptic.score_batch(trained.model, 1.0, x, options)
    for name in panoptic.MEASURES:
        assert scores.scores[name].shape == (len(x),) and np.isfinite(scores.scores[name]).all()
    w = panoptic.Options(**options).object_weight
    np.testing.assert_allclose(scores.scores["margin"], (1 - w) * scores.scores["margin:topk"]
                               + w * scores.scores["objects:mean"])
    assert ((scores.confidence >= 0) & (scores.confidence <= 1)).all()
    mc = panoptic.score_batch(trained.model, 1.0, x[:3], options, samples=4)
    assert mc.scores["bald"].shape == (3,)
    annotations = panoptic.pre_annotate(trained.model, 1.0, x[:2], [(80, 64), (80, 64)],
                                        labels, options)
    for annotation in annotations:
        assert all((r["original_width"], r["original_height"]) == (80, 64)
                   for r in annotation.result)
        if annotation.result:
            back = panoptic.read_annotations([annotation.result], labels, options)
            assert back.target.mask.shape == (64, 80)
    model, *_ = panoptic.load_checkpoint(panoptic.save_checkpoint(trained, labels, settings))
    again = panoptic.score_batch(model, 1.0, x, options)
    np.testing.assert_allclose(again.scores["margin"], scores.scores["margin"])
    metrics = panoptic.evaluate(model, 1.0, x, y, labels)
    assert set(metrics) >= {"pq", "sq", "rq", "pq_things", "pq_stuff", "ap50", "miou"}
