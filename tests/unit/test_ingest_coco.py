"""`alpha ingest IMAGES --coco instances.json`: seed objects from a COCO file, without services.

Polygons, compressed and uncompressed RLE become one segment-id mask per listed image, the
later annotation keeping overlapped pixels; an image listed without annotations is labeled
"no objects"; a bad entry is named with its fix and its image goes in unlabeled.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from alpha.config import Settings
from alpha.errors import AlphaError, ConfigError
from alpha.ingest import ingest_folder
from alpha.records import read_all_records, read_mask
from alpha.store import image_id_from_key

H, W = 10, 12


@pytest.fixture
def instance(settings: Settings) -> Settings:
    return Settings(s3=settings.s3, labelstudio=settings.labelstudio,
                    task={"kind": "instance", "labels": ["cell", "debris"]})


def rle(mask: np.ndarray) -> dict:
    """Compressed RLE as COCO files hold it (counts a str)."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


@pytest.fixture
def coco_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = ["a.png", "sub/b.png", "empty.png", "crowd.png", "box.png", "odd.png", "wide.png",
             "pool.png"]
    for name in names:
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W), 128, np.uint8)).save(images / name)
    blob = np.zeros((H, W), bool)
    blob[7:9, 1:4] = True
    entries = [dict(id=i + 1, file_name=n, width=W if n != "wide.png" else W + 4, height=H)
               for i, n in enumerate(names[:-1])]
    entries[1]["file_name"] = "b.png"  # COCO often keeps only the bare name
    entries.append(dict(id=99, file_name="missing.png", width=W, height=H))
    anns = [
        # a.png: a polygon [2, 8) x [2, 6), a later polygon over its right part, an RLE blob,
        # and an uncompressed RLE of rows 0-1 of the last column
        dict(id=10, image_id=1, category_id=1, segmentation=[[2, 2, 8, 2, 8, 6, 2, 6]]),
        dict(id=11, image_id=1, category_id=2, segmentation=[[6, 2, 10, 2, 10, 6, 6, 6]]),
        dict(id=12, image_id=1, category_id=1, segmentation=rle(blob)),
        dict(id=13, image_id=1, category_id=1,
             segmentation={"size": [H, W], "counts": [11 * H, 2, 8]}),
        dict(id=14, image_id=2, category_id=2, segmentation=[[0, 0, 3, 0, 3, 3, 0, 3]]),
        dict(id=15, image_id=4, category_id=1, iscrowd=1, segmentation=rle(blob)),
        dict(id=16, image_id=5, category_id=1, bbox=[1, 1, 3, 3]),
        dict(id=17, image_id=6, category_id=1, segmentation=[[1, 2, 3]]),
        dict(id=18, image_id=7, category_id=1, segmentation=[[0, 0, 3, 0, 3, 3, 0, 3]]),
        dict(id=19, image_id=42, category_id=1, segmentation=[[0, 0, 3, 0, 3, 3, 0, 3]]),
    ]
    categories = [dict(id=1, name="cell"), dict(id=2, name="debris"), dict(id=3, name="dust")]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(dict(images=entries, annotations=anns, categories=categories)))
    return tmp_path, path


def test_coco_objects_become_seed_masks_and_bad_entries_are_named(bucket, instance,
                                                                  coco_folder):
    root, coco = coco_folder
    report = ingest_folder(bucket, instance, root / "images", coco=coco)

    assert (report.uploaded, report.seed_labels) == (8, 3)
    problems = "\n".join(report.problems)
    assert "category 'dust' is not one of task.labels" in problems
    assert "annotations[9] names no listed image" in problems
    assert "'missing.png' is not an image of the folder" in problems
    assert "annotation 15 of 'crowd.png' is a crowd region" in problems
    assert "annotation 16 of 'box.png' has no segmentation (a box alone" in problems
    assert "annotation 17 of 'odd.png' has a malformed segmentation" in problems
    assert "COCO lists 'wide.png' as 16x10 but the image is 12x10" in problems
    assert "'crowd.png' is ingested unlabeled" in problems
    assert len(report.problems) == 7, problems

    records = read_all_records(bucket)
    assert set(records) == {image_id_from_key(n) for n in ["a.png", "sub/b.png", "empty.png"]}
    a = records[image_id_from_key("a.png")]
    ids = read_mask(bucket, a)
    expected = np.zeros((H, W), np.uint16)
    expected[2:6, 2:6] = 1  # the first polygon, less what the second took
    expected[2:6, 6:10] = 2
    expected[7:9, 1:4] = 3
    expected[0:2, 11] = 4
    np.testing.assert_array_equal(ids, expected)
    assert [(s["id"], s["label"]) for s in a.segments] == [
        (1, "cell"), (2, "debris"), (3, "cell"), (4, "cell")]
    b = records[image_id_from_key("sub/b.png")]
    assert int((read_mask(bucket, b) == 1).sum()) == 9 and b.segments[0]["label"] == "debris"
    empty = records[image_id_from_key("empty.png")]
    assert empty.segments == [] and not read_mask(bucket, empty).any()

    bucket.client.written.clear()
    again = ingest_folder(bucket, instance, root / "images", coco=coco)
    assert (again.uploaded, again.seed_labels) == (0, 0)
    assert bucket.client.written == []


def test_a_coco_file_needs_an_object_kind_one_source_and_coco_s_shape(bucket, settings,
                                                                      instance, coco_folder):
    root, coco = coco_folder
    with pytest.raises(ConfigError, match="task.kind is 'classification'"):
        ingest_folder(bucket, settings, root / "images", coco=coco)
    with pytest.raises(ConfigError, match="one way"):
        ingest_folder(bucket, instance, root / "images", masks=root / "images", coco=coco)
    broken = root / "broken.json"
    broken.write_text('{"images": [}')
    with pytest.raises(AlphaError, match="cannot be read"):
        ingest_folder(bucket, instance, root / "images", coco=broken)
    broken.write_text('{"images": []}')
    with pytest.raises(AlphaError, match="needs the lists 'images', 'annotations'"):
        ingest_folder(bucket, instance, root / "images", coco=broken)
    assert bucket.client.written == []  # nothing uploaded before the file was understood
