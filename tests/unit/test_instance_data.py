"""Instance and panoptic data: instance ids of composed scenes, panoptic scenes with stuff,
stardist's nuclei tiles, and the instance/panoptic folders `alpha ingest` reads."""

from __future__ import annotations

import csv
import importlib.util
import re
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from alpha.datasets import (
    IGNORE_INDEX,
    Dataset,
    SegmentationDataset,
    compose_panoptic_scene_splits,
    compose_panoptic_scenes,
    compose_scene_splits,
    compose_scenes,
    load_demo_dataset,
    load_stardist_tiles,
    stardist_available,
    stardist_data_dir,
    write_instance_folder,
)
from alpha.masks import decode_mask_png


@pytest.fixture(scope="module")
def source() -> Dataset:
    return load_demo_dataset()


def owners(scenes: SegmentationDataset, crops: np.ndarray, threshold: int = 40):
    """Per scene, the 1-based painting position of the garment seen at each pixel (0: none),
    painted again from the scene's `objects`."""
    for mask, objects in zip(scenes.masks, scenes.objects, strict=True):
        owner = np.zeros(mask.shape, np.int64)
        for position, (index, _, top, left, flipped) in enumerate(objects, start=1):
            crop = crops[index, :, ::-1] if flipped else crops[index]
            h, w = crop.shape
            owner[top:top + h, left:left + w][crop > threshold] = position
        yield owner


def assert_consistent(scenes: SegmentationDataset) -> None:
    """Ids 1..k per image, each with a class, and every pixel of instance j of that class."""
    assert scenes.instances.dtype == np.uint16
    assert scenes.instances.shape == scenes.masks.shape
    assert len(scenes.instance_classes) == len(scenes.masks)
    for mask, ids, classes in zip(scenes.masks, scenes.instances, scenes.instance_classes,
                                  strict=True):
        present = sorted(set(np.unique(ids).tolist()) - {0})
        assert present == list(range(1, len(present) + 1)) == sorted(classes)
        for j, c in classes.items():
            assert scenes.labels[c] in scenes.things
            assert (mask[ids == j] == c).all()


# ---- instances of composed scenes -----------------------------------------------------------
def test_scene_instances_are_the_visible_garments_in_painting_order(source):
    scenes = compose_scenes(200, size=(64, 48), garments=(2, 4), random_state=3, source=source)
    assert scenes.things == source.labels
    assert_consistent(scenes)
    in_pieces = 0
    for owner, ids, classes, objects, mask in zip(
            owners(scenes, source.train_images), scenes.instances, scenes.instance_classes,
            scenes.objects, scenes.masks, strict=True):
        visible = [p for p in range(1, len(objects) + 1) if (owner == p).any()]
        expected = np.zeros_like(ids)
        for j, p in enumerate(visible, start=1):
            expected[owner == p] = j
            assert classes[j] == objects[p - 1][1]
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_array_equal(ids > 0, mask > 0)  # every garment pixel is an object's
        in_pieces += any(ndimage.label(ids == j)[1] > 1 for j in classes)
    assert in_pieces > 0  # a garment cut in two by a later one is still one instance


def two_shapes() -> Dataset:
    """16x16 'garments' symmetric under flipping, so every scene of 16x16 places them at the
    same spot: `big` (columns 1..14) and `plus` (big and the two top corners)."""
    big = np.zeros((16, 16), np.uint8)
    big[:, 1:15] = 200
    plus = big.copy()
    plus[0, [0, 15]] = 200
    images, targets = np.stack([plus, big]), np.array([0, 1])
    return Dataset("shapes", ["plus", "big"], images, targets, images, targets)


def test_hidden_garments_get_no_id_and_slivers_go_back_to_background():
    shapes = two_shapes()
    kept = compose_scenes(40, size=(16, 16), garments=(2, 2), source=shapes)
    slim = compose_scenes(40, size=(16, 16), garments=(2, 2), source=shapes, min_pixels=4)
    backgrounds = compose_scenes(40, size=(16, 16), garments=(0, 0), source=shapes).images
    assert_consistent(kept)
    assert_consistent(slim)
    assert kept.objects == slim.objects
    cases = set()
    for i, objects in enumerate(kept.objects):
        first, last = (shapes.train_targets[o[0]] for o in objects)
        cases.add((first, last))
        corners = (np.array([0, 0]), np.array([0, 15]))
        if (first, last) == (0, 1):  # plus under big: two corner pixels stay visible
            assert kept.instance_classes[i] == {1: 1, 2: 2}
            assert (kept.instances[i] == 1).sum() == 2
            assert (kept.instances[i][corners] == 1).all() and (kept.masks[i][corners] == 1).all()
            # under min_pixels=4 the sliver is dropped: background again in image and masks
            assert slim.instance_classes[i] == {1: 2}
            assert (slim.masks[i][corners] == 0).all() and (slim.instances[i][corners] == 0).all()
            np.testing.assert_array_equal(slim.images[i][corners], backgrounds[i][corners])
        else:  # the same shape twice, or big under plus: the first is hidden entirely
            assert kept.instance_classes[i] == {1: int(last) + 1}
            np.testing.assert_array_equal(slim.masks[i], kept.masks[i])
            np.testing.assert_array_equal(slim.images[i], kept.images[i])
        np.testing.assert_array_equal(kept.instances[i] > 0, kept.masks[i] > 0)
    assert cases == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_instances_are_deterministic_and_splits_carry_test_instances(source):
    a = compose_scenes(40, random_state=7, source=source)
    b = compose_scenes(15, random_state=7, source=source)
    np.testing.assert_array_equal(a.instances[:15], b.instances)
    assert a.instance_classes[:15] == b.instance_classes
    both = compose_scene_splits(15, 10, random_state=7, source=source)
    test = compose_scenes(10, random_state=7, source=source, split="test")
    np.testing.assert_array_equal(both.instances, b.instances)
    np.testing.assert_array_equal(both.test_instances, test.instances)
    assert both.test_instance_classes == test.instance_classes


# ---- panoptic scenes ------------------------------------------------------------------------
STUFF = ["wall", "floor", "grass"]


def test_panoptic_scenes_label_every_pixel_stuff_or_thing(source):
    scenes = compose_panoptic_scenes(200, random_state=4, source=source)
    assert scenes.labels == [*STUFF, *source.labels] and scenes.things == source.labels
    assert scenes.images.shape == scenes.masks.shape == (200, 64, 64)
    assert scenes.masks.max() < len(scenes.labels)  # nothing unlabelled
    assert_consistent(scenes)
    thing = scenes.masks >= len(STUFF)
    np.testing.assert_array_equal(scenes.instances > 0, thing)  # ids on garment pixels only
    counts = [len(set(np.unique(m).tolist()) & {0, 1, 2}) for m in scenes.masks]
    assert set(counts) == {2, 3}  # 2-3 stuff regions per scene
    assert all((m == 0).any() and (m == 1).any() for m in scenes.masks)
    assert 0.5 < np.mean([(m == 2).any() for m in scenes.masks]) < 0.95
    for mask in scenes.masks[:50]:  # the wall lies above the floor in every column
        rows = np.arange(64)[:, None]
        assert (np.where(mask == 0, rows, -1).max(0) < np.where(mask == 1, rows, 99).min(0)).all()


def test_panoptic_stuff_textures_differ(source):
    scenes = compose_panoptic_scenes(100, random_state=5, source=source)
    stats = np.array([[scenes.images[scenes.masks == s].mean(),
                       scenes.images[scenes.masks == s].std()] for s in range(3)])
    means, stds = stats[:, 0], stats[:, 1]
    assert min(abs(means[0] - means[1]), abs(means[0] - means[2]),
               abs(means[1] - means[2])) > 15
    assert stds[2] > 2 * stds[0] and stds[1] > 2 * stds[0]  # grainy grass, blotchy floor
    ordered = 0
    for image, mask in zip(scenes.images, scenes.masks, strict=True):
        level = [image[mask == s].mean() if (mask == s).sum() >= 30 else None for s in range(3)]
        ordered += level[1] > level[0] and (level[2] is None or level[0] > level[2])
    assert ordered >= 98  # floor brighter than wall, grass darker, scene by scene


def test_panoptic_scenes_are_deterministic_with_splits_and_options(source):
    a = compose_panoptic_scenes(30, random_state=2, source=source)
    b = compose_panoptic_scenes(12, random_state=2, source=source)
    for field in ("images", "masks", "instances"):
        np.testing.assert_array_equal(getattr(a, field)[:12], getattr(b, field))
    assert a.instance_classes[:12] == b.instance_classes and a.objects[:12] == b.objects
    assert not np.array_equal(a.images, compose_panoptic_scenes(30, random_state=3,
                                                                source=source).images)
    both = compose_panoptic_scene_splits(12, 8, random_state=2, source=source)
    test = compose_panoptic_scenes(8, random_state=2, source=source, split="test")
    np.testing.assert_array_equal(both.masks, b.masks)
    np.testing.assert_array_equal(both.test_masks, test.masks)
    np.testing.assert_array_equal(both.test_instances, test.instances)
    assert both.test_instance_classes == test.instance_classes

    rgb = compose_panoptic_scenes(5, size=(48, 32), source=source, rgb=True,
                                  stuff=("sky", "sea"))
    assert rgb.images.shape == (5, 32, 48, 3) and rgb.labels[:2] == ["sky", "sea"]
    assert set(np.unique(rgb.masks[rgb.instances == 0]).tolist()) == {0, 1}
    with pytest.raises(ValueError, match="also garment labels"):
        compose_panoptic_scenes(2, source=source, stuff=("wall", source.labels[0]))
    with pytest.raises(ValueError, match="distinct"):
        compose_panoptic_scenes(2, source=source, stuff=())


# ---- stardist's nuclei ----------------------------------------------------------------------
needs_stardist = pytest.mark.skipif(
    not stardist_available(), reason="stardist's data is not installed "
    "(pip install --no-deps stardist==0.9.2)")


@needs_stardist
def test_stardist_tiles_hold_renumbered_nuclei_and_a_disjoint_test_split():
    import tifffile

    data = load_stardist_tiles()
    assert "stardist" not in sys.modules  # its data was read, the package never imported
    assert data.labels == ["background", "nucleus"] and data.things == ["nucleus"]
    assert data.images.shape == data.masks.shape == data.instances.shape == (48, 64, 64)
    assert data.test_images.shape == data.test_instances.shape == (16, 64, 64)
    assert data.images.dtype == data.masks.dtype == np.uint8
    assert data.images.min() == 0 and data.images.max() == 255  # stretched, clipped
    for fields in (("masks", "instances", "instance_classes"),
                   ("test_masks", "test_instances", "test_instance_classes")):
        masks, ids, classes = (getattr(data, f) for f in fields)
        np.testing.assert_array_equal(masks, (ids > 0).astype(np.uint8))
        for tile, tile_classes in zip(ids, classes, strict=True):
            k = int(tile.max())
            assert set(np.unique(tile).tolist()) - {0} == set(range(1, k + 1))
            assert tile_classes == dict.fromkeys(range(1, k + 1), 1)
    counts = [int(t.max()) for t in [*data.instances, *data.test_instances]]
    assert np.mean(np.array(counts) > 0) >= 0.8 and sum(counts) > 125  # cut nuclei count twice

    # each tile is its raw crop: same pixel groups, ids in the raw order
    raw = tifffile.imread(stardist_data_dir() / "mask2d.tif")
    for name, tile in zip(data.names, data.instances, strict=True):
        top, left = map(int, re.fullmatch(r"nuclei_r(\d+)_c(\d+)\.png", name).groups())
        crop = raw[top:top + 64, left:left + 64]
        pairs = np.unique(np.stack([crop.ravel(), tile.ravel()]), axis=1)
        assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
        assert (np.diff(pairs[1]) > 0).all()

    flat = {tile.tobytes() for tile in data.images}
    assert not flat & {tile.tobytes() for tile in data.test_images}
    again, other = load_stardist_tiles(), load_stardist_tiles(random_state=1)
    assert again.names == data.names and other.names != data.names
    wide = load_stardist_tiles(tile=(128, 64))
    assert wide.images.shape[1:] == (64, 128) and len(wide) + len(wide.test_images) == 32


def test_missing_stardist_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "stardist" else real(name, *args))
    assert not stardist_available()
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps stardist==0\.9\.2"):
        load_stardist_tiles()


# ---- instance and panoptic folders ----------------------------------------------------------
def read_folder(folder):
    with open(folder / "classes.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["filename", "id", "label"]
    return [(name, int(j), label) for name, j, label in rows[1:]]


def read_mask(path):
    return decode_mask_png(path.read_bytes(), path.name)


def test_instance_folder_round_trips(tmp_path, source):
    scenes = compose_scenes(3, garments=(2, 4), source=source, rgb=True)
    write_instance_folder(tmp_path, scenes, ["a.png", "sub/b.png", "c.jpg"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == [
        "classes.csv", "images/a.png", "images/c.jpg", "images/sub/b.png",
        "masks/a.png", "masks/c.png", "masks/sub/b.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "images/a.png")),
                                  scenes.images[0])
    expected = []
    for name, ids, classes in zip(["a.png", "sub/b.png", "c.png"], scenes.instances,
                                  scenes.instance_classes, strict=True):
        np.testing.assert_array_equal(read_mask(tmp_path / "masks" / name), ids)
        expected += [(name, j, scenes.labels[c]) for j, c in sorted(classes.items())]
    assert read_folder(tmp_path) == expected  # no row for background


def test_many_ids_are_written_as_16_bit(tmp_path):
    ids = np.arange(1, 401, dtype=np.uint16).reshape(20, 20)
    data = SegmentationDataset(
        "many", ["background", "cell"], np.zeros((1, 20, 20), np.uint8),
        np.ones((1, 20, 20), np.uint8), things=["cell"], instances=ids[None],
        instance_classes=[dict.fromkeys(range(1, 401), 1)])
    write_instance_folder(tmp_path, data)
    with Image.open(tmp_path / "masks/00000.png") as image:
        assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(read_mask(tmp_path / "masks/00000.png"), ids)
    assert len(read_folder(tmp_path)) == 400
    with pytest.raises(ValueError, match="no instances"):
        write_instance_folder(tmp_path, SegmentationDataset("semantic", ["a"], data.images,
                                                            data.masks))


def test_panoptic_folder_adds_one_segment_per_stuff_class(tmp_path, source):
    scenes = compose_panoptic_scenes(4, random_state=1, source=source)
    scenes.masks[0, :, :3][scenes.instances[0, :, :3] == 0] = IGNORE_INDEX  # unlabelled strip
    write_instance_folder(tmp_path, scenes)
    rows = read_folder(tmp_path)
    for i, name in enumerate(scenes.names):
        segments = read_mask(tmp_path / "masks" / name)
        mine = {j: label for file, j, label in rows if file == name}
        things = scenes.instance_classes[i]
        assert sorted(mine) == list(range(1, len(mine) + 1))
        for j, c in things.items():  # thing ids kept as they are
            assert mine[j] == scenes.labels[c]
            np.testing.assert_array_equal(segments == j, scenes.instances[i] == j)
        stuff = [j for j in mine if j not in things]
        assert min(stuff) == len(things) + 1  # stuff after the things
        present = sorted(set(np.unique(scenes.masks[i]).tolist()) & {0, 1, 2})
        assert [mine[j] for j in stuff] == [STUFF[s] for s in present]
        for j in stuff:  # each stuff segment is all that class's pixels
            c = scenes.labels.index(mine[j])
            np.testing.assert_array_equal(segments == j, scenes.masks[i] == c)
        np.testing.assert_array_equal(segments == 0, scenes.masks[i] == IGNORE_INDEX)

    # an instance dataset written as panoptic makes its background a stuff segment
    write_instance_folder(tmp_path / "as_panoptic", compose_scenes(2, source=source),
                          panoptic=True)
    assert {label for *_, label in read_folder(tmp_path / "as_panoptic")} >= {"background"}
