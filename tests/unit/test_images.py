import io

import numpy as np
import pytest
from PIL import Image

from alpha.errors import ImageError
from alpha.images import check_image_bytes, decode_batch, decode_image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("channels", [1, 3])
def test_decode_good_images(make_image, fmt, channels):
    for mode in ("L", "RGB"):
        array = decode_image(make_image(fmt, (20, 12), mode), "x", size=16, channels=channels)
        assert array.shape == (channels, 16, 16)
        assert array.dtype == np.float32
        assert array.min() >= 0.0 and array.max() <= 1.0


def test_decode_keeps_pixels_when_size_matches():
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")

    array = decode_image(buffer.getvalue(), "exact.png", size=8, channels=1)
    np.testing.assert_allclose(array[0], pixels / 255.0, atol=1e-6)


def test_check_image_bytes_reports_format_and_size(make_image):
    assert check_image_bytes(make_image("PNG", (20, 12)), "a.png") == ("PNG", (20, 12))
    assert check_image_bytes(make_image("JPEG", (9, 7), "RGB"), "b.jpg") == ("JPEG", (9, 7))


def test_check_image_bytes_refuses_other_formats():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")
    with pytest.raises(ImageError, match=r"'anim.gif'.*not PNG or JPEG"):
        check_image_bytes(buffer.getvalue(), "anim.gif")


def _bad_inputs(make_image) -> dict[str, tuple[bytes, str]]:
    png = make_image("PNG", (64, 64))
    jpeg = make_image("JPEG", (64, 64))
    corrupt = bytearray(png)
    corrupt[60:200] = bytes(140)  # zero out the pixel data
    return {
        "empty.png": (b"", "empty file"),
        "notes.png": (b"hello, this is a text file\n" * 10, "not a PNG or JPEG"),
        "cut.png": (png[: len(png) // 2], "truncated"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "corrupt.png": (bytes(corrupt), "corrupt file"),
    }


@pytest.mark.parametrize("name", ["empty.png", "notes.png", "cut.png", "cut.jpg", "corrupt.png"])
def test_unreadable_inputs_raise_image_error_naming_the_file(make_image, name):
    data, cause = _bad_inputs(make_image)[name]
    for call in (lambda: decode_image(data, name, 8, 1), lambda: check_image_bytes(data, name)):
        with pytest.raises(ImageError) as raised:
            call()
        message = str(raised.value)
        assert repr(name) in message and cause in message and "replace or remove" in message


@pytest.mark.parametrize("limit", [1000, 200])  # 40x40 = 1600 px: warning zone, error zone
def test_decompression_bomb_is_an_image_error(make_image, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    data = make_image("PNG", (40, 40))
    with pytest.raises(ImageError, match=r"'bomb.png'.*decompression bomb"):
        decode_image(data, "bomb.png", 8, 1)
    with pytest.raises(ImageError, match="decompression bomb"):
        check_image_bytes(data, "bomb.png")


def test_decode_batch_skips_bad_keeps_good(make_image):
    blobs = [make_image(), b"", make_image("JPEG", mode="RGB"), b"junk"]
    names = ["a.png", "b.png", "c.jpg", "d.png"]
    images, good, errors = decode_batch(blobs, names, size=8, channels=3)
    assert images.shape == (2, 3, 8, 8)
    assert good == [0, 2]
    assert len(errors) == 2 and "'b.png'" in errors[0] and "'d.png'" in errors[1]


def test_decode_batch_all_bad_or_empty():
    images, good, errors = decode_batch([b"x"], ["x.png"], size=8, channels=1)
    assert images.shape == (0, 1, 8, 8) and good == [] and len(errors) == 1
    images, good, errors = decode_batch([], [], size=8, channels=1)
    assert images.shape == (0, 1, 8, 8) and good == [] and errors == []
    with pytest.raises(ValueError, match="names"):
        decode_batch([b"x"], [], size=8, channels=1)
