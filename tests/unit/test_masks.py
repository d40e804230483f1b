"""Masks as Label Studio regions: brush RLE round trips, polygon rasters, bad input named."""

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from alpha.errors import AnnotationError
from alpha.masks import (
    brush_region,
    decode_brush,
    polygon_region,
    rasterize_polygon,
    region_size,
)


def ragged_mask(height=12, width=16, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), bool)
    mask[2:9, 3:12] = True
    mask[rng.random((height, width)) < 0.1] ^= True
    return mask


def test_brush_region_round_trip_is_pixel_identical():
    mask = ragged_mask()
    region = brush_region(mask, "car", "label", "image", score=0.75, region_id="r1")
    assert region["type"] == "brushlabels"
    assert (region["original_width"], region["original_height"]) == (16, 12)
    assert region["image_rotation"] == 0 and region["id"] == "r1" and region["score"] == 0.75
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["car"]
    assert np.array_equal(decode_brush(region["value"], 16, 12, "r"), mask)
    assert region_size(region, "r") == (16, 12)


def test_brush_masks_paint_with_255_so_the_editor_shows_them():
    region = brush_region(ragged_mask(), "car", "label", "image")
    alpha = decode_rle(region["value"]["rle"]).reshape(12, 16, 4)[:, :, 3]
    assert set(np.unique(alpha)) == {0, 255}


def test_empty_and_full_brush_masks():
    for mask in (np.zeros((5, 7), bool), np.ones((5, 7), bool)):
        region = brush_region(mask, "a", "label", "image")
        assert np.array_equal(decode_brush(region["value"], 7, 5, "r"), mask)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"format": "rle", "rle": [1, 2, 3]}, "too short"),
        ({"format": "rle", "rle": [0, 0, 0, 9, 7, 0, 0, 0, 0]}, "holds 9 values"),
        ({"format": "rle", "rle": [0.5] * 20}, "float values, not integers"),
        ({"format": "rle", "rle": ["a"] * 20}, "str values, not integers"),
        ({"format": "rle", "rle": [300] * 20}, "outside 0..255"),
        ({"format": "rle", "rle": []}, "no RLE mask"),
        ({"format": "png", "rle": [1]}, "format 'png'"),
        ({"rle": None}, "no RLE mask"),
        ("garbage", "no value with a mask"),
    ],
)
def test_malformed_rle_is_named(value, message):
    with pytest.raises(AnnotationError, match=message) as caught:
        decode_brush(value, 16, 12, "Region 3")
    assert str(caught.value).startswith("Region 3")
    assert "fix the annotation in Label Studio" in str(caught.value)
    assert len(str(caught.value)) < 300  # never echoes the RLE


def test_an_rle_of_another_size_or_cut_short_is_named():
    value = brush_region(ragged_mask(), "car", "label", "image")["value"]
    with pytest.raises(AnnotationError, match="a 15x12 image needs 720"):
        decode_brush(value, 15, 12, "r")
    cut = {"format": "rle", "rle": value["rle"][: len(value["rle"]) // 2]}
    with pytest.raises(AnnotationError, match="ends before"):
        decode_brush(cut, 16, 12, "r")


def test_polygon_along_pixel_edges_gives_exactly_those_pixels():
    # 25 %..75 % of a 16 x 12 image: columns 4..11, rows 3..8
    raster = rasterize_polygon([[25, 25], [75, 25], [75, 75], [25, 75]], 16, 12, "p")
    expected = np.zeros((12, 16), bool)
    expected[3:9, 4:12] = True
    assert np.array_equal(raster, expected)


def test_polygon_triangle_takes_the_pixels_whose_centres_are_inside():
    width, height = 10, 10
    raster = rasterize_polygon([[0, 0], [100, 0], [0, 100]], width, height, "p")
    rows, cols = np.mgrid[0:height, 0:width]
    expected = (cols + 0.5) + (rows + 0.5) < 10  # below the diagonal x + y = 10
    assert np.array_equal(raster, expected)


def test_adjacent_polygons_share_no_pixel_and_cover_the_image():
    left = rasterize_polygon([[0, 0], [37.3, 0], [61.9, 100], [0, 100]], 23, 17, "p")
    right = rasterize_polygon([[37.3, 0], [100, 0], [100, 100], [61.9, 100]], 23, 17, "p")
    assert not (left & right).any() and (left | right).all()


def test_concave_polygon_and_points_a_hair_outside():
    # a U shape: the notch in the middle stays empty
    points = [[0, 0], [30, 0], [30, 60], [70, 60], [70, 0], [100, 0], [100, 100], [0, 100]]
    raster = rasterize_polygon(points, 10, 10, "p")
    assert not raster[:6, 3:7].any() and raster[:6, :3].all() and raster[6:].all()
    within = rasterize_polygon([[-0.4, -0.4], [100.4, 0], [100.4, 100.4]], 10, 10, "p")
    assert within.any()


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([[10, 10], [50, 50]], "has 2 point"),
        ([], "has 0 point"),
        ([[10, 10], [50, 50], [120, 50]], "outside the image"),
        ([[10, 10], [50, -3], [50, 50]], "outside the image"),
        ([[10, 10], [50, "x"], [50, 50]], "not \\[x, y\\] numbers"),
        ([[10, 10, 1], [50, 5, 1], [50, 50, 1]], "not \\[x, y\\] pairs"),
        ([[10, 10], [50, float("nan")], [50, 50]], "not finite"),
        (None, "not \\[x, y\\] pairs"),
    ],
)
def test_bad_polygons_are_named(points, message):
    with pytest.raises(AnnotationError, match=message):
        rasterize_polygon(points, 16, 12, "Region 2")


def test_polygon_region_round_trip():
    region = polygon_region([[25, 25], [75, 25], [75, 75], [25, 75]], "car", "polygon", "image",
                            (16, 12))
    assert region["type"] == "polygonlabels" and region["value"]["closed"] is True
    raster = rasterize_polygon(region["value"]["points"], *region_size(region, "r"), "r")
    assert raster.sum() == 8 * 6


@pytest.mark.parametrize(
    "region",
    [{}, {"original_width": 16}, {"original_width": 0, "original_height": 12},
     {"original_width": "16", "original_height": 12},
     {"original_width": 16.5, "original_height": 12}],
)
def test_missing_or_bad_image_size_is_named(region):
    with pytest.raises(AnnotationError, match="original_width/original_height"):
        region_size(region, "Region 1")
