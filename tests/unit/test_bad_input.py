"""Bad input, each with a clear error and nothing lost (issue 4), without services.

Each test feeds one kind of bad input next to good data, checks that the message names both
the problem and the fix, and that the good data around it is untouched: the other images
uploaded byte for byte, trained on and scored, the other label records as they were.
The same inputs against the real S3 server and Label Studio are in
tests/integration/test_bad_input_services.py.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from alpha.errors import AlphaError, AnnotationError, ImageError
from alpha.images import MAX_PIXELS, check_image_bytes, decode_batch, decode_image
from alpha.ingest import ingest_folder, read_label_csv
from alpha.kinds import classification as clf
from alpha.records import LabelRecord, read_all_records, read_record, write_record
from alpha.score import score_pool
from alpha.store import Store, image_id_from_key, validate_relative_key
from alpha.train import load_model, train_model

# Two real names whose image ids clash: same readable part (the last 48 characters of the
# stem), same first 10 hex digits of SHA-1. Found by brute force over ~900,000 names, which
# is why a large image folder can hit one.
ID_CLASH = ("3a1b/photo_taken_on_the_beach_in_the_summer_holidays_.png",
            "e044c/photo_taken_on_the_beach_in_the_summer_holidays_.png")
NFC = unicodedata.normalize("NFC", "café.png")
NFD = unicodedata.normalize("NFD", "café.png")


# ---- image bytes ---------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gray(value: int, size: int = 8) -> bytes:
    return encode(Image.fromarray(np.full((size, size), value, np.uint8)))


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height grey pixels, with a few rows of data:
    ~1.5 KB that would take width*height bytes to decode."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows)
            + _chunk(b"IEND", b""))


def jpeg_bomb(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    data = bytearray(encode(Image.new("L", (8, 8), 128), "JPEG"))
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def text_bomb() -> bytes:
    """A 4x4 PNG with a compressed text chunk that inflates to 5 MB (over Pillow's 1 MB)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * 5_000_000, zip=True)
    return encode(Image.new("L", (4, 4)), pnginfo=info)


def unreadable() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, the problem the message names, the fix it names)."""
    good = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)))
    photo = encode(Image.new("RGB", (64, 64), (200, 30, 30)), "JPEG")
    corrupt = bytearray(good)
    corrupt[60:200] = bytes(140)
    replace = "replace or remove it"
    downscale = f"downscale it below {MAX_PIXELS} pixels or remove it"
    return {
        "empty.png": (b"", "empty file", replace),
        "corrupt.png": (bytes(corrupt), "corrupt file", replace),
        "truncated.png": (good[: len(good) // 2], "truncated file", replace),
        "truncated.jpg": (photo[: len(photo) // 2], "truncated file", replace),
        "text.png": (b"not an image at all\n" * 20, "not a PNG or JPEG image", replace),
        "bomb.png": (png_bomb(30_000, 30_000), "decompression bomb: 900000000 pixels",
                     downscale),
        "bomb.jpg": (jpeg_bomb(30_000, 30_000), "decompression bomb", downscale),
        "bomb-10k.png": (png_bomb(10_000, 10_000), "decompression bomb: 100000000 pixels",
                         downscale),
        "text-bomb.png": (text_bomb(), "decompression bomb: a metadata chunk", replace),
    }


def wrong_modes() -> dict[str, tuple[bytes, float]]:
    """name -> (bytes, the mean grey level in [0, 1] a person sees)."""
    red_on_clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # left half red, right transparent
    red_on_clear.paste((255, 0, 0, 255), (0, 0, 4, 8))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (4, 0, 8, 8))  # right half: index 1, declared transparent below
    ramp = np.tile(np.arange(8, dtype=np.uint16) * 8192, (8, 1))  # 0..57344 of 65535
    red = 0.299  # luminance of pure red
    return {
        "cmyk.jpg": (encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), red),
        "sixteen-bit.png": (encode(Image.fromarray(ramp)), float(ramp.mean() / 65535)),
        "palette-transparent.png": (encode(palette, transparency=1), (red + 1) / 2),
        "rgba.png": (encode(red_on_clear), (red + 1) / 2),
        "grey-alpha.png": (encode(Image.new("LA", (8, 8), (40, 0))), 1.0),
        "one-bit.png": (encode(Image.new("1", (8, 8), 1)), 1.0),
    }


# ---- images: decode -------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(unreadable()))
def test_each_unreadable_image_names_the_problem_and_the_fix(name):
    data, problem, fix = unreadable()[name]
    for call in (lambda: check_image_bytes(data, name), lambda: decode_image(data, name, 8, 1)):
        with pytest.raises(ImageError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"Image {name!r} cannot be read (")
        assert problem in message and message.endswith(f"{fix}.")


def test_bombs_are_refused_from_the_header_without_decoding():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for data in (png_bomb(30_000, 30_000), jpeg_bomb(30_000, 30_000), png_bomb(65_535, 65_535)):
        for _ in range(3):
            with pytest.raises(ImageError, match="decompression bomb"):
                decode_image(data, "bomb.png", 28, 3)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100  # decoding one of them would take 900 MB or more


def test_bombs_are_refused_even_when_pillow_limit_is_switched_off(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as some libraries do globally
    with pytest.raises(ImageError, match=r"10000x10000 pixels is over the limit of 89478485"):
        check_image_bytes(png_bomb(10_000, 10_000), "scan.png")


@pytest.mark.parametrize("name", list(wrong_modes()))
def test_wrong_modes_are_converted_as_a_person_sees_them(name):
    data, mean = wrong_modes()[name]
    assert check_image_bytes(data, name)[1] == (8, 8)
    grey = decode_image(data, name, size=8, channels=1)
    colour = decode_image(data, name, size=8, channels=3)
    assert grey.shape == (1, 8, 8) and colour.shape == (3, 8, 8)
    assert grey.mean() == pytest.approx(mean, abs=0.02)
    assert colour.min() >= 0.0 and colour.max() <= 1.0


def test_transparent_pixels_become_white_whatever_colour_they_hide():
    hidden = [Image.new("RGBA", (4, 4), (c, c, c, 0)) for c in (0, 77, 255)]
    decoded = [decode_image(encode(image), "clear.png", 4, 3) for image in hidden]
    for array in decoded:
        np.testing.assert_array_equal(array, np.ones((3, 4, 4), np.float32))


def test_a_sixteen_bit_ramp_keeps_its_order_and_range():
    ramp = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0..65535
    array = decode_image(encode(Image.fromarray(ramp)), "ramp.png", 4, 1)[0]
    np.testing.assert_allclose(array, ramp / 65535, atol=1 / 255)


def test_a_multi_frame_camera_jpeg_is_accepted():
    frames = [Image.new("RGB", (8, 8), (0, 0, 255)), Image.new("RGB", (8, 8), (0, 255, 0))]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert check_image_bytes(data, "camera.jpg") == ("MPO", (8, 8))
    assert decode_image(data, "camera.jpg", 8, 3)[2].mean() == pytest.approx(1.0, abs=0.02)


def test_decode_batch_skips_every_bad_image_and_keeps_the_good_ones_exact():
    bad = {name: data for name, (data, _, _) in unreadable().items()}
    converted = {name: data for name, (data, _) in wrong_modes().items()}
    good = {f"good-{v}.png": gray(v) for v in (0, 90, 255)}
    named = [*bad.items(), *converted.items(), *good.items()]
    images, kept, errors = decode_batch([d for _, d in named], [n for n, _ in named], 8, 1)
    assert [named[i][0] for i in kept] == [*converted, *good]
    assert len(errors) == len(bad)
    for (name, _), message in zip(bad.items(), errors, strict=True):
        assert repr(name) in message
    for row, index in enumerate(kept):
        np.testing.assert_array_equal(images[row], decode_image(named[index][1], "x", 8, 1))


def test_training_and_scoring_skip_bad_images_and_use_the_rest(bucket, settings):
    bad = {name: data for name, (data, _, _) in unreadable().items()}
    converted = {name: data for name, (data, _) in wrong_modes().items()}
    rng = np.random.default_rng(0)
    labeled = {}
    for index in range(30):
        label = settings.task.labels[index % 3]
        value = {"dark": 20, "bright": 230, "striped": 120}[label]
        key = bucket.image_key(f"labeled/{index:02d}.png")
        bucket.put_bytes(key, gray(int(value + rng.integers(0, 20))))
        labeled[bucket.image_id_for(key)] = (key, label)
    for name, data in {**bad, **converted}.items():
        key = bucket.image_key(f"labeled/{name}")
        bucket.put_bytes(key, data)
        labeled[bucket.image_id_for(key)] = (key, "dark")
        bucket.put_bytes(bucket.image_key(f"pool/{name}"), data)
    for image_id, (key, label) in labeled.items():
        write_record(bucket, LabelRecord(image_id=image_id, image_key=key, status="labeled",
                                         label=label, source="seed"))
    records_before = read_all_records(bucket)

    info = train_model(bucket, settings, version="v1")
    assert info.n_labels == 30 + len(converted)
    assert len(info.skipped) == len(bad)
    for name in bad:
        assert sum(f"labeled/{name}'" in message for message in info.skipped) == 1
    scores = score_pool(bucket, load_model(bucket), settings, exclude=set(labeled))
    assert sorted(scores.keys) == sorted(bucket.image_key(f"pool/{n}") for n in converted)
    assert len(scores.skipped) == len(bad)
    assert all(np.isfinite(values).all() for values in scores.scores.scores.values())
    assert read_all_records(bucket) == records_before  # bad images change no label record


# ---- images: ingest -------------------------------------------------------------------------
def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def stored_images(store: Store) -> dict[str, bytes]:
    prefix = store.key("images") + "/"
    return {ref.key.removeprefix(prefix): store.get_bytes(ref.key) for ref in store.list_images()}


def test_ingest_reports_each_bad_image_and_uploads_the_rest_exactly(bucket, settings, tmp_path):
    bad = unreadable()
    converted = {name: data for name, (data, _) in wrong_modes().items()}
    good = {"a.png": gray(10), "sub/b.png": gray(200)}
    write_files(tmp_path, {**{n: d for n, (d, _, _) in bad.items()}, **converted, **good})

    report = ingest_folder(bucket, settings, tmp_path)

    assert report.uploaded == len(good) + len(converted)
    assert stored_images(bucket) == {**good, **converted}  # as they are on disk, not converted
    assert len(report.problems) == len(bad)
    for name, (_, problem, fix) in bad.items():
        [message] = [m for m in report.problems if m.startswith(f"Image {name!r}")]
        assert problem in message and fix in message


def test_ingest_reports_progress_once_per_image_checked(bucket, settings, tmp_path):
    write_files(tmp_path, {"a.png": gray(10), "b.png": gray(20), "c.png": b"not an image"})
    seen: list[tuple[int, int]] = []
    report = ingest_folder(bucket, settings, tmp_path, progress=lambda *step: seen.append(step))
    assert report.uploaded == 2 and len(report.problems) == 1
    assert seen == [(1, 3), (2, 3), (3, 3)]  # the unreadable one counts: it was checked


def test_content_type_follows_the_bytes_not_the_suffix(bucket, settings, tmp_path):
    write_files(tmp_path, {"looks-like.png": encode(Image.new("RGB", (8, 8)), "JPEG")})
    uploads = []
    bucket.client.put_object = lambda **kw: uploads.append(kw["ContentType"])
    ingest_folder(bucket, settings, tmp_path)
    assert uploads == ["image/jpeg"]


# ---- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("rtl\u202egnp.png", "control characters (U+202E)"),  # bidi override disguises a name
        ("zero\u200bwidth.png", "control characters (U+200B)"),
        ("line\u2028sep.png", "control characters (U+2028)"),
        ("c1\x85control.png", "control characters (U+0085)"),
        ("bom\ufeff.png", "control characters (U+FEFF)"),
        ("latin1-\udce9.png", "not valid UTF-8"),  # how Python shows undecodable file names
        ("what?.png", "'?' cuts the name short in Label Studio's image URL"),
        ("a/./b.png", "no empty, '.' or '..' parts"),
        ("C:\\photos\\x.png", "must be a relative path"),
    ],
)
def test_names_that_cannot_be_keys_are_refused_with_the_reason(name, problem):
    with pytest.raises(ValueError) as raised:
        validate_relative_key(name)
    message = str(raised.value)
    assert message.startswith("invalid image name ") and problem in message
    assert message.endswith("rename the file")


@pytest.mark.parametrize(
    "name", ["with space.png", "hash#1.png", "100%.png", "emoji-👩‍💻.png", "日本/写真.jpg",
             "a+b=c.png", "dots...png"],
)
def test_unusual_but_safe_names_are_kept(name):
    assert validate_relative_key(name) == name


def test_names_are_stored_in_nfc_so_a_macos_name_and_a_typed_one_are_one_image(bucket):
    assert validate_relative_key(NFD) == NFC
    assert bucket.image_key(NFD) == bucket.image_key(NFC)
    assert bucket.image_id_for(bucket.image_key(NFD)) == image_id_from_key(NFC)


def test_a_key_over_the_s3_limit_is_refused_before_any_upload(bucket):
    deep = "/".join(["folder" * 20] * 9) + "/x.png"
    with pytest.raises(ValueError, match=r"S3 key would be 1\d{3} bytes, over S3's limit of 1024"):
        bucket.image_key(deep)


def test_ingest_refuses_bad_names_and_uploads_the_rest(bucket, settings, tmp_path):
    names = {"rtl\u202egnp.png": gray(1), "what?.png": gray(2), "ok.png": gray(3),
             "/".join(["folder" * 20] * 9) + "/deep.png": gray(4)}
    write_files(tmp_path, names)
    latin1 = os.fsencode(tmp_path) + b"/caf\xe9.png"  # a file name that is not UTF-8
    Path(os.fsdecode(latin1)).write_bytes(gray(5))

    report = ingest_folder(bucket, settings, tmp_path)

    assert report.uploaded == 1 and stored_images(bucket) == {"ok.png": gray(3)}
    problems = "\n".join(report.problems)
    assert len(report.problems) == 4 and problems.count("rename the file") == 3
    assert "U+202E" in problems and "'?'" in problems and "not valid UTF-8" in problems
    assert "over S3's limit of 1024; use a shorter name or fewer folders" in problems


def test_names_differing_only_in_unicode_form_are_both_refused(bucket, settings, tmp_path):
    write_files(tmp_path, {NFC: gray(1), NFD: gray(2), "other.png": gray(3)})
    report = ingest_folder(bucket, settings, tmp_path)
    assert stored_images(bucket) == {"other.png": gray(3)}
    assert len(report.problems) == 2
    for message in report.problems:
        assert "in another Unicode form" in message and "rename one of them" in message
        assert "'caf\\xe9.png'" in message and "'cafe\\u0301.png'" in message


def test_an_image_stored_under_another_unicode_form_is_not_uploaded_twice(
    bucket, settings, tmp_path
):
    old_key = bucket.key("images", NFD)  # as stored before names were normalised
    bucket.put_bytes(old_key, gray(1))
    write_files(tmp_path, {NFD: gray(1), "other.png": gray(2)})
    report = ingest_folder(bucket, settings, tmp_path)
    assert stored_images(bucket) == {NFD: gray(1), "other.png": gray(2)}
    assert report.problems == [
        f"Image {NFD!r} is already in the bucket as {old_key!r}, the same name in another "
        "Unicode form: rename the file, or delete that object."]


def test_names_differing_only_in_case_are_two_images(bucket, settings, tmp_path):
    write_files(tmp_path, {"Cat.png": gray(1), "cat.png": gray(2)})
    csv = tmp_path.parent / "case.csv"
    csv.write_text("Cat.png,dark\ncat.png,bright\nCAT.png,dark\n")
    report = ingest_folder(bucket, settings, tmp_path, csv)
    assert stored_images(bucket) == {"Cat.png": gray(1), "cat.png": gray(2)}
    records = read_all_records(bucket)
    assert {r.image_key: r.label for r in records.values()} == {
        "proj/images/Cat.png": "dark", "proj/images/cat.png": "bright"}
    assert report.problems == [
        f"case.csv: 'CAT.png' is not an image in {tmp_path}: fix the name (a path relative to "
        "that folder) or add the image."]


def test_names_whose_image_ids_clash_are_both_refused(bucket, settings, tmp_path):
    assert image_id_from_key(ID_CLASH[0]) == image_id_from_key(ID_CLASH[1])
    write_files(tmp_path, {ID_CLASH[0]: gray(1), ID_CLASH[1]: gray(2), "other.png": gray(3)})
    report = ingest_folder(bucket, settings, tmp_path)
    assert stored_images(bucket) == {"other.png": gray(3)}
    assert len(report.problems) == 2
    assert all("would get the image id" in m and "rename the file" in m for m in report.problems)


def test_a_name_whose_id_clashes_with_an_image_in_the_bucket_is_refused(
    bucket, settings, tmp_path
):
    first, second = tmp_path / "first", tmp_path / "second"
    write_files(first, {ID_CLASH[0]: gray(1)})
    write_files(second, {ID_CLASH[1]: gray(2), "more.png": gray(3)})
    ingest_folder(bucket, settings, first, _csv(tmp_path, f"{ID_CLASH[0]},dark\n"))
    record = read_record(bucket, image_id_from_key(ID_CLASH[0]))

    report = ingest_folder(bucket, settings, second, _csv(tmp_path, f"{ID_CLASH[1]},bright\n"))

    assert stored_images(bucket) == {ID_CLASH[0]: gray(1), "more.png": gray(3)}
    assert read_record(bucket, record.image_id) == record  # the first image keeps its label
    assert report.problems[0] == (
        f"Image {ID_CLASH[1]!r} would get the image id {record.image_id!r}, which "
        f"'proj/images/{ID_CLASH[0]}' has already: rename the file.")
    assert "was not ingested (see the problem reported for it)" in report.problems[1]


def test_the_same_name_with_other_content_never_replaces_a_labeled_image(
    bucket, settings, tmp_path
):
    write_files(tmp_path / "v1", {"x.png": gray(10), "y.png": gray(20)})
    ingest_folder(bucket, settings, tmp_path / "v1", _csv(tmp_path, "x.png,dark\n"))
    record = read_record(bucket, image_id_from_key("x.png"))
    write_files(tmp_path / "v2", {"x.png": gray(250), "y.png": gray(20), "z.png": gray(30)})

    report = ingest_folder(bucket, settings, tmp_path / "v2", _csv(tmp_path, "x.png,bright\n"))

    assert (report.uploaded, report.already_present) == (1, 1)
    assert stored_images(bucket) == {"x.png": gray(10), "y.png": gray(20), "z.png": gray(30)}
    assert read_record(bucket, record.image_id) == record
    assert report.problems[0] == (
        "Image 'x.png' differs from the image already in the bucket as 'proj/images/x.png', "
        "and a changed image would keep the old one's labels: rename the new file, or delete "
        "the old object first to replace it.")


def test_same_size_other_content_is_caught_without_an_md5_etag(bucket, settings, tmp_path):
    write_files(tmp_path / "v1", {"x.png": gray(10)})
    ingest_folder(bucket, settings, tmp_path / "v1")
    listing = bucket.client.paginate
    bucket.client.paginate = lambda **kw: (  # as for a multipart upload: "<md5>-<parts>"
        {"Contents": [{**i, "ETag": '"abc-2"'} for i in page["Contents"]]}
        for page in listing(**kw))
    write_files(tmp_path / "v2", {"x.png": gray(11)})  # same size, other pixels
    assert len(gray(10)) == len(gray(11))
    report = ingest_folder(bucket, settings, tmp_path / "v2")
    assert "differs from the image already in the bucket" in report.problems[0]
    assert stored_images(bucket) == {"x.png": gray(10)}
    again = ingest_folder(bucket, settings, tmp_path / "v1")
    assert (again.already_present, again.problems) == (1, [])


# ---- the label CSV ---------------------------------------------------------------------------
LABELS = ["dark", "bright", "striped"]


def _csv(folder: Path, text: str, name: str = "labels.csv", encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_bom_header_and_windows_line_ends_is_read(tmp_path):
    path = _csv(tmp_path, "filename,label\r\na.png,dark\r\nsub\\b.png,bright\r\n./c.png,dark\r\n",
                encoding="utf-8-sig")
    assert read_label_csv(path, LABELS) == (
        {"a.png": "dark", "sub/b.png": "bright", "c.png": "dark"}, [])


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("a.png,dark,extra", "line 2: expected 2 columns 'filename,label', got 3"),
        ("a.png", "line 2: expected 2 columns 'filename,label', got 1"),
        ("a.png;dark", "separate the columns with a comma"),
        ("a.png,", "line 2: empty label in ['a.png', '']; fill it in or delete the row"),
        (",dark", "line 2: empty file name"),
        ("a.png,purple", "label 'purple' for 'a.png' is not one of the task labels "
                         "['dark', 'bright', 'striped']; fix the row or add the label to "
                         "task.labels"),
        ("a.png,Dark", "label 'Dark' for 'a.png' is not one of the task labels"),
        ("a.png,da\x00rk", "label 'da\\x00rk' for 'a.png' is not one of the task labels"),
    ],
)
def test_a_malformed_row_is_reported_by_line_and_the_rest_kept(tmp_path, row, problem):
    path = _csv(tmp_path, f"ok.png,dark\n{row}\n\nlast.png,striped\n")
    known, problems = read_label_csv(path, LABELS)
    assert known == {"ok.png": "dark", "last.png": "striped"}
    assert len(problems) == 1 and problems[0].startswith("labels.csv line")
    assert problem in problems[0]


def test_trailing_empty_columns_from_spreadsheets_are_fine(tmp_path):
    assert read_label_csv(_csv(tmp_path, "a.png,dark,,\n"), LABELS) == ({"a.png": "dark"}, [])


def test_conflicting_rows_for_one_image_drop_it_and_name_both(tmp_path):
    path = _csv(tmp_path, "a.png,dark\nb.png,dark\na.png,bright\nb.png,dark\n")
    known, problems = read_label_csv(path, LABELS)
    assert known == {"b.png": "dark"}
    assert problems == ["labels.csv line 3: 'a.png' is labeled 'bright' here but 'dark' on an "
                        "earlier line; keep one row per image."]


@pytest.mark.parametrize("text", ["", "\n\n", "filename,label\n"])
def test_an_empty_csv_is_reported(tmp_path, text):
    known, problems = read_label_csv(_csv(tmp_path, text), LABELS)
    if text.startswith("filename"):
        assert (known, problems) == ({}, [])  # a header alone: nothing to do, nothing wrong
    else:
        assert known == {} and problems == [
            "labels.csv is empty: add 'filename,label' rows, or leave out --labels."]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'a.png,dark\nb.png,"' + b"x" * 200_000 + b'"\n',  # an unclosed quote does this too
         r"line 2 cannot be parsed \(field larger than field limit \(131072\)\): fix that line"),
        ("café.png,dark\n".encode("latin-1"), "is not UTF-8 text: save it as UTF-8 CSV"),
    ],
)
def test_an_unparsable_csv_stops_ingest_before_any_upload(
    bucket, settings, tmp_path, content, message
):
    write_files(tmp_path / "images", {"a.png": gray(1)})
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(AlphaError, match=message):
        ingest_folder(bucket, settings, tmp_path / "images", path)
    assert stored_images(bucket) == {}


def test_a_missing_csv_names_the_path(tmp_path):
    with pytest.raises(AlphaError, match=r"Cannot read label CSV .*nope.csv .*fix the path"):
        read_label_csv(tmp_path / "nope.csv", LABELS)


def test_unknown_names_in_the_csv_are_reported_and_the_known_ones_labeled(
    bucket, settings, tmp_path
):
    write_files(tmp_path / "images", {"a.png": gray(1), "sub/b.png": gray(2),
                                      "broken.png": b"", NFD: gray(3)})
    csv = _csv(tmp_path, f"filename,label\na.png,dark\nb.png,bright\nmissing.png,dark\n"
                         f"broken.png,dark\n{NFC},striped\nsub\\b.png,bright\nSUB/B.PNG,dark\n")
    existing = LabelRecord(image_id=image_id_from_key("a.png"), image_key="proj/images/a.png",
                           status="labeled", label="striped", source="labelstudio")
    write_record(bucket, existing)

    report = ingest_folder(bucket, settings, tmp_path / "images", csv)

    folder = tmp_path / "images"
    assert report.problems == [
        "Image 'broken.png' cannot be read (empty file): replace or remove it.",
        f"labels.csv: 'b.png' is not an image in {folder}: fix the name (a path relative to "
        "that folder) or add the image.",
        f"labels.csv: 'missing.png' is not an image in {folder}: fix the name (a path relative "
        "to that folder) or add the image.",
        "labels.csv: 'broken.png' was not ingested (see the problem reported for it), so its "
        "label is not recorded: fix the image and ingest again.",
        f"labels.csv: 'SUB/B.PNG' is not an image in {folder} (did you mean 'sub/b.png'?): fix "
        "the name (a path relative to that folder) or add the image.",
    ]
    labels = {r.image_key: r.label for r in read_all_records(bucket).values()}
    assert labels == {"proj/images/a.png": "striped",  # the annotator's label wins
                      "proj/images/sub/b.png": "bright", f"proj/images/{NFC}": "striped"}
    assert report.seed_labels == 2


# ---- annotations -----------------------------------------------------------------------------
def _choice(**changes) -> dict:
    item = clf.result_from_label("dark")[0]
    item.update(changes)
    return item


RECTANGLE = {"from_name": "box", "to_name": "image", "type": "rectanglelabels",
             "value": {"x": 1, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["dark"]}}
BRUSH = {"from_name": "mask", "to_name": "image", "type": "brushlabels",
         "value": {"format": "rle", "rle": list(range(500)), "brushlabels": ["dark"]}}


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ([RECTANGLE], "no 'label' choices, only results the label config does not declare "
                      "(box: rectanglelabels)"),
        ([BRUSH], "no 'label' choices, only results the label config does not declare "
                  "(mask: brushlabels)"),
        ([_choice(), RECTANGLE], "results the label config does not declare "
                                 "(box: rectanglelabels) besides its 'label' choices"),
        ([_choice(type="brushlabels", value=BRUSH["value"])], "has type 'brushlabels'"),
        ([_choice(to_name="other")], "points at 'other', not at 'image'"),
        ([_choice(value="dark")], "malformed value 'dark' (expected {'choices': [a label]})"),
        ([_choice(value={"choices": "dark"})], "malformed value {'choices': 'dark'}"),
        ([_choice(value={"choices": [None]})], "malformed value {'choices': [None]}"),
        ([_choice(value=None)], "malformed value None"),
        ([_choice(value={"rle": list(range(500))})], "malformed value {'rle': [0, 1, 2,"),
        (["dark"], "result holds ['dark']"),
        ({"choices": ["dark"]}, "result is {'choices': ['dark']}, not a list of regions"),
    ],
)
def test_an_annotation_that_does_not_fit_the_config_is_refused(result, problem):
    with pytest.raises(AnnotationError) as raised:
        clf.label_from_result(result, LABELS)
    message = str(raised.value)
    assert problem in message
    assert message.endswith("fix the annotation in Label Studio or the task's label config.")
    assert len(message) < 400  # a whole brush mask never lands in a message


def test_an_empty_annotation_says_what_the_annotator_can_do():
    with pytest.raises(AnnotationError) as raised:
        clf.label_from_result([], LABELS)
    assert str(raised.value) == (
        "The annotation has an empty result (no label chosen): choose a label in Label Studio, "
        "or skip the task if none fits.")


def test_a_label_not_in_the_config_names_both_fixes():
    with pytest.raises(AnnotationError) as raised:
        clf.label_from_result(clf.result_from_label("purple"), LABELS)
    assert str(raised.value) == (
        "The annotation's label 'purple' is not one of the task's labels (dark, bright, "
        "striped): add it to task.labels or fix the annotation in Label Studio or the task's "
        "label config.")
