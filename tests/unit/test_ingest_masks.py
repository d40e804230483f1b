"""`alpha ingest IMAGES --masks MASKS`: seed masks for a segmentation task, without services.

Each good mask becomes a seed label record with its PNG beside it, holding exactly the mask
given (the task's ignore_index stored as 255); each bad one is named with what to do and
skipped while its image still goes in, unlabeled. Re-running writes nothing new, and a
person's label from Label Studio is never replaced by a seed mask.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alpha.cli import app
from alpha.config import Settings
from alpha.errors import AlphaError, AnnotationError, ConfigError
from alpha.ingest import ingest_folder, read_seed_mask
from alpha.records import read_all_records, read_mask, read_record, write_record
from alpha.store import image_id_from_key

LABELS = ["background", "cell", "edge"]


@pytest.fixture
def semantic(settings: Settings) -> Settings:
    return Settings(s3=settings.s3, labelstudio=settings.labelstudio,
                    task={"kind": "semantic", "labels": LABELS})


def save(path, array) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return np.asarray(array, np.uint8)


def mask_of(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(LABELS), (height, width))


@pytest.fixture
def folder(tmp_path):
    """Images (one JPEG in a subfolder, one pool image without a mask) and their masks,
    three of them bad, one without an image."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    rng = np.random.default_rng(0)
    for name in ["a.png", "sub/b.jpg", "pool.png", "small.png", "colour.png", "unknown.png"]:
        save(images / name, rng.integers(0, 256, (10, 12)))
    truth = {"a.png": mask_of(10, 12, 1), "sub/b.jpg": mask_of(10, 12, 2)}
    truth["a.png"][0, :4] = 255  # unlabelled pixels
    save(masks / "a.png", truth["a.png"])
    save(masks / "sub/b.png", truth["sub/b.jpg"])
    save(masks / "small.png", mask_of(5, 6, 3))
    save(masks / "colour.png", np.stack([mask_of(10, 12, 4)] * 3, axis=-1))
    unknown = mask_of(10, 12, 5)
    unknown[3, 3] = 7
    save(masks / "unknown.png", unknown)
    save(masks / "orphan.png", mask_of(10, 12, 6))
    return tmp_path, truth


def test_good_masks_become_seed_records_and_bad_ones_are_named(bucket, semantic, folder):
    root, truth = folder
    report = ingest_folder(bucket, semantic, root / "images", masks=root / "masks")

    assert (report.uploaded, report.seed_labels) == (6, 2)
    problems = "\n".join(report.problems)
    assert len(report.problems) == 4, problems
    assert "'small.png' is 6x5 pixels but its image is 12x10" in problems
    assert "nearest-neighbour" in problems
    assert "'colour.png' cannot be read" in problems and "single-channel PNG" in problems
    assert "'unknown.png' holds class index 7" in problems and "task.labels" in problems
    assert "'orphan.png'" in problems and "has no image" in problems
    assert "'small.png' is ingested unlabeled" in problems

    records = read_all_records(bucket)
    assert set(records) == {image_id_from_key("a.png"), image_id_from_key("sub/b.jpg")}
    for name, mask in truth.items():
        record = records[image_id_from_key(name)]
        assert (record.source, record.status, record.label) == ("seed", "labeled", None)
        assert record.image_key == bucket.image_key(name)
        assert record.mask.key == bucket.mask_key(record.image_id)
        stored = read_mask(bucket, record)
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored, mask)
    assert {ref.key for ref in bucket.list_images()} == {
        bucket.image_key(n) for n in
        ["a.png", "sub/b.jpg", "pool.png", "small.png", "colour.png", "unknown.png"]}

    bucket.client.written.clear()
    again = ingest_folder(bucket, semantic, root / "images", masks=root / "masks")
    assert (again.uploaded, again.already_present, again.seed_labels) == (0, 6, 0)
    assert bucket.client.written == []
    assert read_all_records(bucket) == records


def test_a_person_s_label_wins_and_a_corrected_seed_mask_replaces_the_old(bucket, semantic,
                                                                           folder):
    root, truth = folder
    ingest_folder(bucket, semantic, root / "images", masks=root / "masks")
    a_id, b_id = image_id_from_key("a.png"), image_id_from_key("sub/b.jpg")
    person = read_record(bucket, a_id).model_copy(update={"source": "labelstudio",
                                                          "ls_task_id": 5})
    write_record(bucket, person)
    fixed = save(root / "masks/a.png", np.zeros((10, 12)))
    fixed_b = save(root / "masks/sub/b.png", np.ones((10, 12)))

    report = ingest_folder(bucket, semantic, root / "images", masks=root / "masks")
    assert report.seed_labels == 1
    assert read_record(bucket, a_id) == person
    np.testing.assert_array_equal(read_mask(bucket, person), truth["a.png"])
    assert not np.array_equal(fixed, truth["a.png"])
    b = read_record(bucket, b_id)
    np.testing.assert_array_equal(read_mask(bucket, b), fixed_b)
    assert len(b.history) == 1


def test_ignore_index_is_stored_as_255(tmp_path):
    mask = save(tmp_path / "m.png", [[0, 1, 2], [11, 11, 255]])
    read = read_seed_mask(tmp_path / "m.png", "m.png", (3, 2), LABELS, ignore_index=11)
    np.testing.assert_array_equal(read, [[0, 1, 2], [255, 255, 255]])
    with pytest.raises(AnnotationError, match="class index 11"):
        read_seed_mask(tmp_path / "m.png", "m.png", (3, 2), LABELS)
    wide = tmp_path / "wide.png"
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(wide)
    with pytest.raises(AnnotationError, match="class index 300"):
        read_seed_mask(wide, "wide.png", (2, 1), LABELS)
    assert mask.shape == (2, 3)
    save(tmp_path / "empty.png", np.full((2, 3), 255))
    with pytest.raises(AnnotationError, match="no labeled pixel"):
        read_seed_mask(tmp_path / "empty.png", "empty.png", (3, 2), LABELS)


def test_an_image_folder_inside_the_mask_folder_is_not_read_as_masks(bucket, semantic,
                                                                      tmp_path):
    truth = save(tmp_path / "a.png", mask_of(4, 4, 0))
    save(tmp_path / "images" / "a.png", np.zeros((4, 4)))
    report = ingest_folder(bucket, semantic, tmp_path / "images", masks=tmp_path)
    assert (report.uploaded, report.seed_labels, report.problems) == (1, 1, [])
    record = read_record(bucket, image_id_from_key("a.png"))
    np.testing.assert_array_equal(read_mask(bucket, record), truth)


def test_pairing_problems_are_named_and_the_images_still_go_in(bucket, semantic, tmp_path):
    images = tmp_path / "images"
    masks = images / "masks"
    save(images / "twin.png", np.zeros((4, 4)))
    save(images / "twin.jpg", np.zeros((4, 4)))
    save(images / "Photo.png", np.zeros((4, 4)))
    save(images / "jpeg.png", np.zeros((4, 4)))
    save(masks / "twin.png", np.zeros((4, 4)))
    save(masks / "photo.png", np.zeros((4, 4)))
    save(masks / "jpeg.jpg", np.zeros((4, 4)))
    report = ingest_folder(bucket, semantic, images, masks=masks)  # masks inside the images

    assert (report.uploaded, report.seed_labels) == (4, 0)  # the masks are not images
    problems = "\n".join(report.problems)
    assert "'twin.png' could be for any of the images 'twin.jpg', 'twin.png'" in problems
    assert "(did you mean 'Photo.png'?)" in problems
    assert "'jpeg.jpg' cannot be read" in problems and "not PNG" in problems
    assert read_all_records(bucket) == {}


def test_masks_need_a_mask_kind_and_an_existing_folder(bucket, settings, semantic, tmp_path):
    images = tmp_path / "images"
    save(images / "a.png", np.zeros((4, 4)))
    (tmp_path / "masks").mkdir()
    with pytest.raises(ConfigError, match="task.kind is 'classification'"):
        ingest_folder(bucket, settings, images, masks=tmp_path / "masks")
    with pytest.raises(AlphaError, match=f"Mask folder {tmp_path / 'nowhere'} does not exist"):
        ingest_folder(bucket, semantic, images, masks=tmp_path / "nowhere")
    (tmp_path / "labels.csv").write_text("a.png,cell\n")
    with pytest.raises(ConfigError, match="--masks"):
        ingest_folder(bucket, semantic, images, tmp_path / "labels.csv")
    assert bucket.client.written == []


def test_cli_refuses_masks_for_classification(tmp_path, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("ALPHA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALPHA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alpha.toml").write_text(
        '[s3]\nprefix = "p"\naccess_key_id = "k"\nsecret_access_key = "s"\n'
        '[labelstudio]\napi_key = "t"\n[task]\nlabels = ["a", "b"]\n')
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    result = CliRunner().invoke(app, ["ingest", "images", "--masks", "masks"])
    assert result.exit_code == 2, result.output
    assert "task.kind is 'classification'" in result.output
    assert "Traceback" not in result.output


def test_the_task_s_ignore_index_is_read_from_its_options(bucket, settings, tmp_path):
    camvid_like = Settings(s3=settings.s3, labelstudio=settings.labelstudio,
                           task={"kind": "semantic", "labels": LABELS,
                                 "options": {"ignore_index": 3}})
    save(tmp_path / "images/a.png", np.zeros((2, 3)))
    save(tmp_path / "masks/a.png", [[0, 1, 3], [2, 3, 255]])
    report = ingest_folder(bucket, camvid_like, tmp_path / "images", masks=tmp_path / "masks")
    assert (report.seed_labels, report.problems) == (1, [])
    record = read_record(bucket, image_id_from_key("a.png"))
    np.testing.assert_array_equal(read_mask(bucket, record), [[0, 1, 255], [2, 255, 255]])
