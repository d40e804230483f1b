"""The semantic segmentation kind: label config, regions <-> masks, consensus, the U-Net,
scores and checkpoints. Tiny images and few steps keep the file fast."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from alpha.config import Settings, TrainSettings
from alpha.consensus import mask_agreement, mask_iou, pixel_vote
from alpha.errors import AnnotationError, DataError
from alpha.kinds import get_kind
from alpha.kinds import semantic as S
from alpha.kinds.base import Kind, Target
from alpha.masks import brush_region, polygon_region

LABELS = ["sky", "road", "car"]
W, H = 16, 12


def squares(n: int, width: int = 24, height: int = 16, channels: int = 1, seed: int = 0):
    """Dark images with a bright square (class 1) and a mid-grey square (class 2)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.15, (n, channels, height, width)).astype(np.float32)
    masks = np.zeros((n, height, width), np.int64)
    for i in range(n):
        for cls, level in ((1, 0.9), (2, 0.5)):
            side_w, side_h = rng.integers(width // 5, width // 2), rng.integers(height // 5,
                                                                                 height // 2)
            x, y = rng.integers(0, width - side_w), rng.integers(0, height - side_h)
            masks[i, y : y + side_h, x : x + side_w] = cls
            images[i, :, y : y + side_h, x : x + side_w] = level
    return images, masks


def settings(**overrides) -> TrainSettings:
    values = dict(image_size=24, image_height=16, channels=1, epochs=1, min_steps=50,
                  batch_size=8, learning_rate=1e-2, widths=(8, 16), threads=1)
    values.update(overrides)
    return TrainSettings(**values)


@pytest.fixture(scope="module")
def trained():
    images, masks = squares(32)
    return S.train(images, masks, LABELS, settings(), S.Options())


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return S.UNet(3, len(LABELS), widths=(8, 16, 32)).eval()


def a_mask(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((H, W), np.uint8)
    mask[3:9, 2:10] = 1
    mask[5:11, 8:14] = 2
    mask[0, :5] = S.IGNORE
    flips = rng.random((H, W)) < 0.05
    mask[flips] = rng.integers(0, 3, flips.sum())
    return mask


def regions(mask: np.ndarray) -> list[dict]:
    return S.result_from_target(Target(mask=mask), LABELS, (mask.shape[1], mask.shape[0]))


def read(results, options=None, **kw):
    return S.read_annotations(results, LABELS, options or S.Options(), **kw)


# ---- the kind as the loop sees it --------------------------------------------------------
def test_the_module_is_a_kind():
    kind = get_kind("semantic")
    assert kind is S
    for name in [n for n in dir(Kind) if not n.startswith("_")] + list(Kind.__annotations__):
        assert hasattr(kind, name), name
    assert (S.NAME, S.DATA_KEY, S.PRIMARY_METRIC) == ("semantic", "image", "miou")
    assert "margin" in S.MEASURES and "margin:topk" in S.MEASURES and "bald" not in S.MEASURES
    assert S.input_size({"image_size": 120, "image_height": 90}) == (120, 90)
    assert S.input_size({"image_size": 64}) == (64, 64)


def test_options_defaults_and_validation():
    options = S.Options()
    assert (options.reduction, options.top_percent, options.background) == ("topk", 10.0, None)
    assert (options.ignore_index, options.score_batch_size) == (255, 16)
    with pytest.raises(ValueError, match="measure"):
        S.Options(measure="margin")  # the strategy picks the measure
    with pytest.raises(ValueError):
        S.Options(reduction="median")
    base = dict(s3={"access_key_id": "k", "secret_access_key": "s", "bucket": "test"},
                labelstudio={"api_key": "t"})
    good = Settings(**base, task={"kind": "semantic", "labels": LABELS,
                                  "options": {"background": "sky", "reduction": "mean"}})
    assert good.task.options.background == "sky" and good.task.options.reduction == "mean"
    with pytest.raises(ValueError, match="background 'grass' is not one of task.labels"):
        Settings(**base, task={"kind": "semantic", "labels": LABELS,
                               "options": {"background": "grass"}})


def test_label_config_declares_brush_and_polygon_labels_with_colours():
    labels = ["sky", 'a "quoted" & <odd> name']
    config = S.label_config(labels, S.Options())
    root = ET.fromstring(config)
    image = root.find("Image")
    assert image.get("name") == "image" and image.get("value") == "$image"
    for tag, name in (("BrushLabels", "label"), ("PolygonLabels", "polygon")):
        element = root.find(tag)
        assert element.get("name") == name and element.get("toName") == "image"
        values = [label.get("value") for label in element.findall("Label")]
        assert values == labels
        colours = [label.get("background") for label in element.findall("Label")]
        assert all(c.startswith("#") and len(c) == 7 for c in colours) and len(set(colours)) == 2


# ---- regions <-> masks -------------------------------------------------------------------
def test_result_from_target_round_trip_is_pixel_identical():
    mask = a_mask()
    result = regions(mask)
    assert [r["value"]["brushlabels"] for r in result] == [["sky"], ["road"], ["car"]]
    assert all(r["id"] for r in result) and len({r["id"] for r in result}) == 3
    reading = read([result])
    assert reading.target.mask.dtype == np.uint8
    assert np.array_equal(reading.target.mask, mask)  # 255 stays unlabelled
    assert (reading.index, reading.votes, reading.agreement, reading.changed) == (0, None, None,
                                                                                  None)


def test_result_from_target_resizes_to_the_image_size():
    result = S.result_from_target(Target(mask=a_mask()), LABELS, (32, 24))
    assert {(r["original_width"], r["original_height"]) for r in result} == {(32, 24)}
    assert np.array_equal(read([result]).target.mask, np.kron(a_mask(), np.ones((2, 2), np.uint8)))


def test_pre_annotation_read_back_unchanged_is_pixel_identical(untrained):
    images = np.random.default_rng(0).random((2, 3, H, W), dtype=np.float32)
    sizes = [(W, H), (37, 29)]  # the model's size, and an image of its own size
    pre = S.pre_annotate(untrained, 1.0, images, sizes, LABELS, S.Options())
    probs = torch.from_numpy(S.predict(untrained, images))
    for i, (width, height) in enumerate(sizes):
        up = torch.nn.functional.interpolate(probs[i : i + 1], size=(height, width),
                                             mode="bilinear", align_corners=False)[0]
        expected = up.argmax(dim=0).numpy()
        result = pre[i].result
        assert all(r["type"] == "brushlabels" and r["id"] for r in result)
        assert {(r["original_width"], r["original_height"]) for r in result} == {(width, height)}
        reading = read([result], predicted=result)
        assert np.array_equal(reading.target.mask, expected)
        assert reading.changed == 0.0
        confidence = up.max(dim=0).values.numpy()
        assert pre[i].score == pytest.approx(confidence.mean(), rel=1e-5)
        for region in result:
            cls = LABELS.index(region["value"]["brushlabels"][0])
            assert region["score"] == pytest.approx(confidence[expected == cls].mean(), rel=1e-5)


def test_the_uncertainty_map_shows_where_the_model_is_unsure(untrained):
    """Off by default: no extra image, no extra Image tag. On: one PNG per task at the image's
    own size, brighter where the model's top probability is lower, and a second Image in
    the label config that reads it from the task data."""
    import io

    from PIL import Image

    from alpha.heatmaps import heatmap_rgb

    images = np.random.default_rng(0).random((2, 3, H, W), dtype=np.float32)
    sizes = [(W, H), (37, 29)]
    assert S.task_images(S.Options()) == ()
    assert all(p.images == {} for p in S.pre_annotate(untrained, 1.0, images, sizes, LABELS))
    assert "$uncertainty" not in S.label_config(LABELS, S.Options())

    on = S.Options(uncertainty_map=True)
    assert S.task_images(on) == (S.UNCERTAINTY_KEY,)
    shown = ET.fromstring(S.label_config(LABELS, on)).findall(".//Image")
    assert [(i.get("name"), i.get("value")) for i in shown] == [
        ("image", "$image"), ("uncertainty", "$uncertainty")]
    probs = torch.from_numpy(S.predict(untrained, images))
    for i, pre in enumerate(S.pre_annotate(untrained, 1.0, images, sizes, LABELS, on)):
        assert set(pre.images) == {S.UNCERTAINTY_KEY}
        heat = np.asarray(Image.open(io.BytesIO(pre.images[S.UNCERTAINTY_KEY])).convert("RGB"))
        width, height = sizes[i]
        assert heat.shape == (height, width, 3)
        up = torch.nn.functional.interpolate(probs[i : i + 1], size=(height, width),
                                             mode="bilinear", align_corners=False)[0]
        # 1 - top probability, scaled so 1 is a uniform guess (untrained: nearly so)
        unsure = (1 - up.max(dim=0).values.numpy()) / (1 - 1 / len(LABELS))
        expected = heatmap_rgb(unsure).astype(int)
        assert np.abs(heat.astype(int) - expected).max() <= 1


def test_heatmap_colours_run_from_dark_to_bright():
    from alpha.heatmaps import heatmap_rgb

    rgb = heatmap_rgb(np.array([[0.0, 0.5, 1.0, 2.0, np.nan]]))
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 4] and rgb[0, 2].tolist() == [252, 255, 164]
    assert rgb[0, 3].tolist() == rgb[0, 2].tolist() and rgb[0, 4].tolist() == rgb[0, 0].tolist()
    sums = rgb[0, :3].astype(int).sum(axis=1)
    assert sums[0] < sums[1] < sums[2]
    with pytest.raises(ValueError, match="2-D"):
        heatmap_rgb(np.zeros(3))


def test_polygon_annotation_gives_the_expected_raster():
    result = [polygon_region([[25, 25], [75, 25], [75, 75], [25, 75]], "car", "polygon", "image",
                             (W, H))]
    mask = read([result]).target.mask
    expected = np.full((H, W), S.IGNORE, np.uint8)
    expected[3:9, 4:12] = 2
    assert np.array_equal(mask, expected)
    background = read([result], S.Options(background="sky")).target.mask
    assert np.array_equal(background, np.where(expected == S.IGNORE, 0, expected))


def test_overlap_rule_later_regions_win():
    road = np.zeros((H, W), bool)
    road[:, :10] = True
    brush = brush_region(road, "road", "label", "image")
    polygon = polygon_region([[50, 0], [100, 0], [100, 100], [50, 100]], "car", "polygon",
                             "image", (W, H))
    car_last = read([[brush, polygon]]).target.mask
    road_last = read([[polygon, brush]]).target.mask
    assert (car_last[:, 8:10] == 2).all() and (road_last[:, 8:10] == 1).all()
    assert (car_last[:, :8] == 1).all() and (car_last[:, 10:] == 2).all()
    assert (road_last[:, :10] == 1).all() and (road_last[:, 10:] == 2).all()


def test_several_annotations_vote_per_pixel_with_agreement():
    first, second, third = a_mask(0), a_mask(0), a_mask(0)
    second[3:9, 2:10] = 2  # one annotator calls the road a car
    reading = read([regions(first), regions(second), regions(third)])
    assert np.array_equal(reading.target.mask, first)  # two against one
    assert reading.index == 2 and reading.votes is None
    expected = np.mean([mask_iou(first, second), mask_iou(first, third), mask_iou(second, third)])
    assert reading.agreement == pytest.approx(expected) and 0 < reading.agreement < 1


def test_pixel_vote_ties_go_to_the_latest_and_unlabelled_pixels_do_not_vote():
    a = np.array([[0, 1, 255, 255]], np.uint8)
    b = np.array([[1, 255, 255, 2]], np.uint8)
    assert pixel_vote([a, b]).tolist() == [[1, 1, 255, 2]]
    assert pixel_vote([b, a]).tolist() == [[0, 1, 255, 2]]
    c = np.array([[0, 2, 2, 255]], np.uint8)
    assert pixel_vote([a, b, c]).tolist() == [[0, 2, 2, 2]]  # 0 has 2 votes; 1:1 vs 2:1 -> c
    with pytest.raises(ValueError, match="at least one"):
        pixel_vote([])


def test_mask_iou_and_agreement():
    a = np.array([[0, 0, 1, 1]])
    assert mask_iou(a, a) == 1.0 and mask_agreement([a]) == 1.0
    b = np.array([[0, 1, 1, 1]])
    assert mask_iou(a, b) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert mask_iou(np.full((2, 2), 255), np.full((2, 2), 255)) == 1.0
    c = np.array([[255, 255, 1, 1]])  # unlabelled where a says 0: class 0's IoU is 0
    assert mask_iou(a, c) == pytest.approx(0.5)
    assert mask_agreement([a, b, a]) == pytest.approx(np.mean([mask_iou(a, b)] * 2 + [1.0]))


def test_changed_is_the_share_of_pixels_the_annotator_changed():
    predicted = a_mask(0)
    corrected = predicted.copy()
    corrected[:2, :] = 1  # two rows repainted
    expected = float(np.mean(corrected != predicted))
    reading = read([regions(corrected)], predicted=regions(predicted))
    assert reading.changed == pytest.approx(expected) and expected > 0
    whole = {"model_version": "v1", "result": regions(predicted)}  # a whole prediction
    assert read([regions(corrected)], predicted=whole).changed == pytest.approx(expected)
    assert read([regions(corrected)], predicted=[]).changed is None  # no pre-annotation


def good_region() -> dict:
    return regions(a_mask())[1]


def with_value(**value) -> dict:
    region = good_region()
    region["value"] = {**region["value"], **value}
    return region


def without(*keys) -> dict:
    return {k: v for k, v in good_region().items() if k not in keys}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([], "empty result"),
        ("nope", "not a list of regions"),
        (["nope"], "region 1 is a str"),
        ([with_value(rle=[1, 2, 3, 4, 5, 6, 7, 8])], "malformed RLE"),
        ([with_value(rle=[0.5, 1.5] * 10)], "malformed RLE.*not integers"),
        ([with_value(rle="garbage")], "no RLE mask"),
        ([without("original_width")], "original_width/original_height"),
        ([without("original_height")], "original_width/original_height"),
        ([polygon_region([[1, 1], [50, 50], [1, 50]], "car", "polygon", "image", (W, H))
          | {"value": {"points": [[1, 1], [50, 50]], "polygonlabels": ["car"]}}],
         "2 point.*at least 3"),
        ([polygon_region([[1, 1], [50, 50], [1, 50]], "car", "polygon", "image", (W, H))
          | {"value": {"points": [[1, 1], [150, 50], [1, 50]], "polygonlabels": ["car"]}}],
         "outside the image"),
        ([with_value(brushlabels=["grass"])], "label 'grass'.*not one of the task's labels"),
        ([with_value(brushlabels=["road", "car"])], "names 2 labels"),
        ([with_value(brushlabels=[])], "names 0 labels"),
        ([good_region() | {"type": "rectanglelabels", "from_name": "box"}],
         "'rectanglelabels' region from 'box'.*does not declare"),
        ([good_region() | {"from_name": "polygon"}], "does not declare"),
        ([good_region() | {"to_name": "heatmap"}], "points at 'heatmap'"),
        ([good_region(), regions(np.zeros((5, 5), np.uint8))[0]], "5x5 image, unlike"),
    ],
)
def test_bad_annotations_are_named(result, message):
    with pytest.raises(AnnotationError, match=message) as caught:
        read([result])
    text = str(caught.value)
    assert text.startswith("The annotation") and len(text) < 400
    assert "Label Studio" in text or "task.labels" in text


def test_annotations_of_different_sizes_and_bad_ones_among_several_are_named():
    small = regions(np.zeros((5, 5), np.uint8))
    with pytest.raises(AnnotationError, match="different sizes"):
        read([regions(a_mask()), small])
    with pytest.raises(AnnotationError, match="Annotation 2 of 2, region 1"):
        read([regions(a_mask()), [with_value(rle=[9] * 10)]])
    # a pre-annotation that does not fit says nothing about what changed
    assert read([regions(a_mask())], predicted=[with_value(rle=[9] * 10)]).changed is None


# ---- targets -----------------------------------------------------------------------------
def test_target_problems():
    assert S.target_problem(Target(mask=a_mask()), LABELS) is None
    assert S.target_problem(Target(label="road"), LABELS) == "labeled but has no mask"
    bad = a_mask()
    bad[0, 0], bad[1, 1] = 7, 9
    assert "values 7, 9" in S.target_problem(Target(mask=bad), LABELS)
    assert "labels no pixel" in S.target_problem(Target(mask=np.full((3, 3), 255, np.uint8)),
                                                 LABELS)
    assert "shape" in S.target_problem(Target(mask=np.zeros((2, 3, 3), np.uint8)), LABELS)


def test_training_targets_resize_by_nearest_neighbour():
    masks = [a_mask(0), np.kron(a_mask(1), np.ones((2, 2), np.uint8))]
    out = S.training_targets([Target(mask=m) for m in masks], LABELS, (W, H))
    assert out.shape == (2, H, W) and out.dtype == np.int64
    assert np.array_equal(out[0], a_mask(0)) and np.array_equal(out[1], a_mask(1))
    assert set(np.unique(S.training_targets([Target(mask=a_mask())], LABELS, (7, 5)))) <= {
        0, 1, 2, 255}


def test_simulated_target_moves_edges_a_few_pixels():
    truth = Target(mask=a_mask())
    assert S.simulated_target(truth, LABELS, False, 0.3, np.random.default_rng(0)) is truth
    for draw in (0.2, 0.8):
        wrong = [S.simulated_target(truth, LABELS, True, draw, np.random.default_rng(5))
                 for _ in range(2)]
        assert np.array_equal(wrong[0].mask, wrong[1].mask)  # deterministic from rng
        changed = wrong[0].mask != truth.mask
        assert changed.any() and changed.mean() < 0.5
        assert wrong[0].mask.shape == truth.mask.shape
    # a shift moves the whole mask by 1-3 pixels: some shift reproduces it exactly
    shifted = S.simulated_target(truth, LABELS, True, 0.1, np.random.default_rng(1)).mask
    padded = np.pad(truth.mask, 3, mode="edge")
    offsets = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
               if np.array_equal(padded[3 - dy : 3 - dy + H, 3 - dx : 3 - dx + W], shifted)]
    assert offsets and all(1 <= abs(dy) + abs(dx) <= 3 for dy, dx in offsets)


# ---- the model ---------------------------------------------------------------------------
def test_training_beats_chance_and_reports_its_metrics(trained):
    metrics = trained.metrics
    # chance (all background) is about 0.28 mIoU here: background's IoU, 0 for the squares
    assert metrics["miou"] > 0.7, metrics
    assert set(metrics["per_class"]) == {0, 1, 2} and min(metrics["per_class"].values()) > 0.5
    assert 0.8 < metrics["pixel_accuracy"] <= 1.0
    assert metrics["n_val"] == 7 and metrics["n_train"] == 32 and metrics["refit"] is True
    assert trained.temperature == 1.0 and not trained.model.training
    frequency = trained.model.class_frequency.numpy()
    assert frequency.sum() == pytest.approx(1.0) and frequency[0] > frequency[1]
    images, masks = squares(10, seed=7)
    test = S.evaluate(trained.model, 1.0, images, masks, LABELS)
    assert list(test)[0] == "miou" and test["miou"] > 0.7


def test_unlabelled_pixels_do_not_train_or_count():
    images, masks = squares(12, seed=3)
    masks[:, :, :4] = S.IGNORE
    masks[0] = S.IGNORE  # a whole image unlabelled: its batches must not make NaNs
    result = S.train(images, masks, LABELS, settings(min_steps=6, refit=False), S.Options())
    assert np.isfinite(result.metrics["train_loss"])
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    with pytest.raises(DataError, match="at least 2 classes"):
        S.train(images, np.zeros_like(masks), LABELS, settings(min_steps=2), S.Options())
    with pytest.raises(DataError, match="at least 2"):
        S.train(images[:1], masks[:1], LABELS, settings(min_steps=2), S.Options())


def test_odd_input_sizes_and_rgb_work():
    images, masks = squares(6, width=30, height=22, channels=3, seed=2)
    model = S.UNet(3, 3, widths=(4, 8, 8, 8)).eval()  # 22 -> 11 -> 6 -> 3
    assert S.predict(model, images).shape == (6, 3, 22, 30)
    result = S.train(images, masks, LABELS,
                     settings(image_size=30, image_height=22, channels=3, widths=(4, 8, 8, 8),
                              min_steps=3, augment=True), S.Options())
    scores = S.score_batch(result.model, 1.0, images, S.Options(), samples=3)
    assert scores.embeddings.shape == (6, 8)
    pre = S.pre_annotate(result.model, 1.0, images[:1], [(61, 45)], LABELS, S.Options())
    assert read([pre[0].result]).target.mask.shape == (45, 61)


def test_checkpoint_round_trip_gives_identical_predictions(trained):
    data = S.save_checkpoint(trained, LABELS, settings())
    model, temperature, labels, train_settings = S.load_checkpoint(data)
    assert (temperature, labels, train_settings["image_height"]) == (1.0, LABELS, 16)
    images, _ = squares(4, seed=9)
    assert np.array_equal(S.predict(model, images), S.predict(trained.model, images))
    assert torch.equal(model.class_frequency, trained.model.class_frequency)
    with pytest.raises(DataError, match="cannot be loaded"):
        S.load_checkpoint(b"not a checkpoint")
    with pytest.raises(ValueError, match="labels"):
        S.save_checkpoint(trained, LABELS[:2], settings())


# ---- scores ------------------------------------------------------------------------------
def test_score_batch_without_samples(trained):
    images, _ = squares(5, seed=4)
    batch = S.score_batch(trained.model, 1.0, images, S.Options())
    assert set(batch.scores) == set(S.MEASURES)
    assert all(v.shape == (5,) and v.dtype == np.float64 for v in batch.scores.values())
    assert np.array_equal(batch.scores["margin"], batch.scores["margin:topk"])
    assert batch.embeddings.shape == (5, 16) and batch.embeddings.dtype == np.float32
    assert batch.predicted.dtype == np.int64 and (batch.predicted == 0).all()  # mostly dark
    assert ((batch.confidence > 0) & (batch.confidence <= 1)).all()
    assert batch.gradients is None and batch.n_classes == 3
    mean = S.score_batch(trained.model, 1.0, images, S.Options(reduction="mean"))
    assert np.array_equal(mean.scores["entropy"], batch.scores["entropy:mean"])
    probs = S.predict(trained.model, images)
    expected = 1 - probs.max(axis=1).astype(np.float64)
    np.testing.assert_allclose(batch.scores["least_confidence:mean"], expected.mean(axis=(1, 2)))
    np.testing.assert_allclose(batch.confidence, 1 - batch.scores["least_confidence:mean"])


def test_score_batch_with_samples_is_reproducible_and_sub_batched(trained):
    images, _ = squares(5, seed=4)
    options = S.Options(score_batch_size=2)
    first = S.score_batch(trained.model, 1.0, images, options, samples=4, gradients=True,
                          random_state=3)
    assert {"bald", "bald:topk", "bald:class_weighted", "variation_ratio:mean"} <= set(
        first.scores)
    assert first.gradients.shape == (5, 3 * 16)
    again = S.score_batch(trained.model, 1.0, images, S.Options(score_batch_size=16), samples=4,
                          gradients=True, random_state=3)
    for name in first.scores:
        np.testing.assert_allclose(first.scores[name], again.scores[name], rtol=1e-6,
                                   err_msg=name)
    other = S.score_batch(trained.model, 1.0, images, options, samples=4, random_state=4)
    assert not np.allclose(first.scores["bald:mean"], other.scores["bald:mean"])
    assert (first.scores["bald"] >= 0).all()
    # each sample uses one dropout mask for every image: image i scores alike in any batch
    alone = S.score_batch(trained.model, 1.0, images[3:4], options, samples=4, random_state=3)
    np.testing.assert_allclose(alone.scores["bald:mean"], first.scores["bald:mean"][3:4],
                               rtol=1e-6)
    empty = S.score_batch(trained.model, 1.0, images[:0], options, samples=4)
    assert len(empty) == 0 and set(empty.scores) == set(first.scores)
