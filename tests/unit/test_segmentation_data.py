"""Segmentation data: composed garment scenes with exact masks, the CamVid reader, and the
image/mask folders `alpha ingest --masks` reads."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from alpha.datasets import (
    CAMVID_DIR,
    CAMVID_LABELS,
    Dataset,
    SegmentationDataset,
    camvid_available,
    compose_scene_splits,
    compose_scenes,
    load_camvid,
    load_demo_dataset,
    write_segmentation_folder,
)


@pytest.fixture(scope="module")
def source() -> Dataset:
    return load_demo_dataset()


def tiny_source() -> Dataset:
    """Digit-sized 8x8 'garments' of two classes: a bright block and a bright bar."""
    block = np.zeros((8, 8), np.uint8)
    block[2:6, 2:6] = 200
    bar = np.zeros((8, 8), np.uint8)
    bar[:, 3] = 250
    images = np.stack([block, bar] * 3)
    targets = np.array([0, 1] * 3)
    return Dataset("tiny", ["block", "bar"], images, targets, images[:2], targets[:2])


def repaint(scenes: SegmentationDataset, crops: np.ndarray, threshold: int = 40):
    """The mask and garment pixels each scene must have, painted again from its `objects`."""
    for image, mask, objects in zip(scenes.images, scenes.masks, scenes.objects, strict=True):
        expected = np.zeros_like(mask)
        pixels = np.zeros(mask.shape, np.int64)
        for index, label, top, left, flipped in objects:
            crop = crops[index, :, ::-1] if flipped else crops[index]
            inside = crop > threshold
            h, w = crop.shape
            expected[top:top + h, left:left + w][inside] = label
            pixels[top:top + h, left:left + w][inside] = crop[inside]
        yield image, mask, expected, pixels


def test_scene_masks_are_exactly_the_garment_pixels_with_occlusion(source):
    scenes = compose_scenes(200, size=(64, 48), garments=(2, 4), random_state=3, source=source)
    assert scenes.images.shape == (200, 48, 64) and scenes.images.dtype == np.uint8
    assert scenes.masks.shape == (200, 48, 64) and scenes.masks.dtype == np.uint8
    assert scenes.labels == ["background", *source.labels]
    occluded = 0
    for (image, mask, expected, pixels), objects in zip(
            repaint(scenes, source.train_images), scenes.objects, strict=True):
        assert 2 <= len(objects) <= 4
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(image[mask > 0], pixels[mask > 0])
        assert all(label == source.train_targets[index] + 1
                   for index, label, *_ in objects)
        first = objects[0]
        visible = int((mask == first[1]).sum())
        occluded += visible < int((source.train_images[first[0]] > 40).sum())
    assert occluded > 10  # later garments cover earlier ones in many scenes
    assert set(np.unique(scenes.masks)) <= set(range(len(scenes.labels)))


def test_scenes_are_deterministic_and_test_scenes_use_test_garments(source):
    a = compose_scenes(50, random_state=7, source=source)
    b = compose_scenes(50, random_state=7, source=source)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.objects == b.objects
    assert not np.array_equal(a.images, compose_scenes(50, random_state=8, source=source).images)

    both = compose_scene_splits(30, 20, random_state=7, source=source)
    np.testing.assert_array_equal(both.images, a.images[:30])
    assert both.test_images.shape == (20, 64, 64) and both.test_masks.shape == (20, 64, 64)
    test = compose_scenes(20, random_state=7, source=source, split="test")
    np.testing.assert_array_equal(both.test_masks, test.masks)
    for image, mask, expected, pixels in repaint(test, source.test_images):
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(image[mask > 0], pixels[mask > 0])
    assert not np.array_equal(test.images[:20], a.images[:20])  # backgrounds differ too


def test_rgb_scenes_tint_garments_and_keep_exact_masks(source):
    scenes = compose_scenes(40, random_state=1, source=source, rgb=True)
    assert scenes.images.shape == (40, 64, 64, 3) and scenes.images.dtype == np.uint8
    for image, mask, expected, pixels in repaint(scenes, source.train_images):
        np.testing.assert_array_equal(mask, expected)
        on = mask > 0
        # each channel is the garment's value times a tint in [0.55, 1], the largest 1
        assert (image[on].max(axis=1) == pixels[on]).all()
        assert (image[on].min(axis=1) >= np.floor(pixels[on] * 0.55)).all()


def test_small_sources_are_upscaled_and_errors_are_clear():
    scenes = compose_scenes(20, size=(32, 32), garments=(1, 1), source=tiny_source())
    assert scenes.labels == ["background", "block", "bar"]
    for mask, objects in zip(scenes.masks, scenes.objects, strict=True):
        index, label, top, left, flipped = objects[0]
        expected = np.zeros_like(mask)
        crop = np.kron(tiny_source().train_images[index], np.ones((3, 3), np.uint8))
        crop = crop[:, ::-1] if flipped else crop
        expected[top:top + 24, left:left + 24][crop > 40] = label
        np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match="cannot hold"):
        compose_scenes(2, size=(16, 16), source=tiny_source())
    with pytest.raises(ValueError, match="split"):
        compose_scenes(2, source=tiny_source(), split="val")


def test_a_thousand_scenes_take_a_second_or_two(source):
    start = time.perf_counter()
    scenes = compose_scenes(1000, source=source)
    assert time.perf_counter() - start < 5
    assert len(scenes) == 1000 and 0.05 < (scenes.masks > 0).mean() < 0.5


def test_segmentation_folder_round_trips(tmp_path, source):
    scenes = compose_scenes(3, source=source, rgb=True)
    write_segmentation_folder(tmp_path, scenes, ["a.png", "sub/b.png", "c.jpg"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == [
        "images/a.png", "images/c.jpg", "images/sub/b.png",
        "masks/a.png", "masks/c.png", "masks/sub/b.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "images/a.png")),
                                  scenes.images[0])
    for name, mask in zip(["a", "sub/b", "c"], scenes.masks, strict=True):
        with Image.open(tmp_path / f"masks/{name}.png") as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), mask)


# ---- CamVid (../shared/data, optional) ------------------------------------------------------
needs_camvid = pytest.mark.skipif(not camvid_available(), reason=f"no CamVid in {CAMVID_DIR}")


@needs_camvid
@pytest.mark.parametrize("split, count", [("train", 367), ("val", 101)])
def test_camvid_loads_with_unlabelled_as_255(split, count):
    data = load_camvid(CAMVID_DIR, split)
    assert data.labels == CAMVID_LABELS and len(data.labels) == 11
    assert data.images.shape == (count, 180, 240, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (count, 180, 240) and data.masks.dtype == np.uint8
    assert len(data.names) == count and data.names == sorted(data.names)
    values = set(np.unique(data.masks).tolist())
    assert values <= set(range(11)) | {255} and 255 in values and 11 not in values
    with Image.open(CAMVID_DIR / split / "masks" / data.names[0]) as raw:
        raw = np.asarray(raw)
    np.testing.assert_array_equal(data.masks[0], np.where(raw == 11, 255, raw))


def test_camvid_missing_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train" / "images")):
        load_camvid(tmp_path, "train")
    (tmp_path / "val" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"masks are not in .*val/masks"):
        load_camvid(tmp_path, "val")
    (tmp_path / "val" / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "val/images/x.png")
    with pytest.raises(FileNotFoundError, match="no mask"):
        load_camvid(tmp_path, "val")
    Image.fromarray(np.full((4, 4), 12, np.uint8)).save(tmp_path / "val/masks/x.png")
    with pytest.raises(ValueError, match="class 12"):
        load_camvid(tmp_path, "val")
    with pytest.raises(ValueError, match="'train' or 'val'"):
        load_camvid(tmp_path, "test")
