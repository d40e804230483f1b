"""Bad input against the REAL S3 server and Label Studio (issue 4): clear errors, nothing lost.

The unit tests (tests/unit/test_bad_input.py) cover every case against in-memory fakes;
these check what only the real services can show: SeaweedFS's ETags and key limits, which
names Label Studio can resolve to an image, what Label Studio stores for annotations that
do not fit the label config, and how both refuse wrong credentials, buckets and servers.
Each test leaves the module's digit images and label records as they were, and says so.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import unicodedata
import uuid
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from alpha.errors import ServiceUnavailable
from alpha.ingest import ingest_folder
from alpha.kinds import get_kind
from alpha.labelstudio import LabelStudioProject, PushItem
from alpha.records import read_all_records, read_record
from alpha.store import Store, image_id_from_key
from alpha.train import train_model

pytestmark = pytest.mark.integration


def _png(value: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1) * 4)) + chunk(b"IEND", b""))


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _fresh(settings, **s3) -> Store:
    """A Store on its own prefix (removed by `cleanup`), or with other S3 settings."""
    s3 = {"prefix": f"{settings.s3.prefix}-bad-{uuid.uuid4().hex[:6]}", **s3}
    return Store.from_settings(settings.model_copy(
        update={"s3": settings.s3.model_copy(update=s3)}))


@pytest.fixture
def cleanup():
    """Stores to empty after the test: each test writes under prefixes of its own."""
    stores: list[Store] = []
    yield stores.append
    for store in stores:
        keys = list(store.list_keys(""))
        for start in range(0, len(keys), 1000):
            store.client.delete_objects(Bucket=store.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})


def _snapshot(store: Store) -> tuple[dict[str, bytes], dict]:
    """The module's good data: every image's bytes and every label record."""
    images = dict(zip([r.key for r in store.list_images()],
                      store.get_many([r.key for r in store.list_images()]), strict=True))
    return images, read_all_records(store)


# ---- images and names on the real S3 server --------------------------------------------------
SAFE_NAMES = ["with space.png", "hash#1.png", "100%20.png", "emoji-👩‍💻.png", "日本/写真.png",
              unicodedata.normalize("NFD", "décor.png")]


def test_ingest_reports_bad_images_and_names_and_uploads_the_rest(settings, tmp_path, cleanup):
    store = _fresh(settings)
    cleanup(store)
    good = {name: _png(10 * i) for i, name in enumerate(SAFE_NAMES)}
    good["cmyk.jpg"] = _cmyk_jpeg()  # a wrong mode: converted when decoded, kept as it is
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    bad = {"empty.png": b"", "truncated.png": buffer.getvalue()[:2000],
           "bomb.png": _png_bomb(30000, 30000),
           "what?.png": _png(1), "rtl\u202egnp.png": _png(2),
           unicodedata.normalize("NFC", "twin-é.png"): _png(3),
           unicodedata.normalize("NFD", "twin-é.png"): _png(4),
           "/".join(["f" * 200] * 5) + "/deep.png": _png(5)}
    for name, data in {**good, **bad}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)

    report = ingest_folder(store, settings, tmp_path)

    assert report.uploaded == len(good)
    stored = {ref.key: store.get_bytes(ref.key) for ref in store.list_images()}
    expected = {store.image_key(n): data for n, data in good.items()}
    assert stored == expected  # byte for byte, under NFC keys
    assert {ref.image_id for ref in store.list_images()} == {
        image_id_from_key(unicodedata.normalize("NFC", n)) for n in good}
    problems = "\n".join(report.problems)
    assert len(report.problems) == len(bad)
    for phrase in ("'empty.png' cannot be read (empty file): replace or remove it",
                   "'truncated.png' cannot be read (truncated file)",
                   "'bomb.png' cannot be read (decompression bomb: 900000000 pixels",
                   "'?' cuts the name short in Label Studio's image URL; rename the file",
                   "control characters (U+202E); rename the file",
                   "in another Unicode form, so both would be the S3 key",
                   "over S3's limit of 1024; use a shorter name or fewer folders"):
        assert phrase in problems


def test_a_changed_image_under_an_old_name_is_refused_by_its_etag(settings, tmp_path, cleanup):
    store = _fresh(settings)
    cleanup(store)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "x.png").write_bytes(_png(10))
    (tmp_path / "v2" / "x.png").write_bytes(_png(11))  # same size, other pixels
    assert len(_png(10)) == len(_png(11))
    labels = tmp_path / "labels.csv"
    labels.write_text("x.png,zero\n")
    ingest_folder(store, settings, tmp_path / "v1", labels)
    record = read_record(store, image_id_from_key("x.png"))

    report = ingest_folder(store, settings, tmp_path / "v2", labels)

    assert report.problems[0] == (
        f"Image 'x.png' differs from the image already in the bucket as "
        f"{store.image_key('x.png')!r}, and a changed image would keep the old one's labels: "
        "rename the new file, or delete the old object first to replace it.")
    assert store.get_bytes(store.image_key("x.png")) == _png(10)
    assert read_record(store, record.image_id) == record
    again = ingest_folder(store, settings, tmp_path / "v1", labels)  # SeaweedFS's ETag is MD5
    assert (again.uploaded, again.already_present, again.problems) == (0, 1, [])


def test_s3_refuses_a_key_over_its_limit_with_our_message(settings, cleanup):
    store = _fresh(settings)
    cleanup(store)
    with pytest.raises(ServiceUnavailable) as raised:
        store.put_bytes(store.key("images", "x/" * 520 + "a.png"), b"x")
    assert str(raised.value) == (f"S3 at {store.endpoint} refused a key as too long: shorten "
                                 "s3.prefix or the image names.")


# ---- names in Label Studio -------------------------------------------------------------------
def _resolved_image(project: LabelStudioProject, task_id: int) -> httpx.Response:
    token = project.settings.labelstudio.api_key.get_secret_value()
    headers = {"Authorization": f"Token {token}"}
    task = httpx.get(f"{project.url}/api/tasks/{task_id}/", headers=headers, timeout=30).json()
    return httpx.get(f"{project.url}/{task['data']['image'].lstrip('/')}", headers=headers,
                     follow_redirects=True, timeout=30)


def test_names_we_keep_resolve_in_label_studio_and_a_question_mark_would_not(
    project, store, labels
):
    guess = get_kind("classification").pre_annotation(np.full(len(labels), 1 / len(labels)),
                                                      labels).result
    items, truth = [], {}
    for index, name in enumerate([*SAFE_NAMES, "what?.png"]):
        key = store.key("images", "names", unicodedata.normalize("NFC", name))
        truth[key] = _png(100 + index)
        store.put_bytes(key, truth[key], "image/png")  # '?' put directly: ingest refuses it
        items.append(PushItem(store.image_id_for(key), key, guess, 0.5))
    pushed = project.push(items, model_version="m-names", round_id="r-names")
    tasks = {**pushed.created, **pushed.already_present}

    for item in items:
        fetched = _resolved_image(project, tasks[item.image_id])
        if "?" in item.key:
            # Label Studio presigned the name cut at '?': the annotator would get a 404
            assert fetched.status_code == 404 and fetched.url.path.endswith("/names/what")
        else:
            assert fetched.status_code == 200 and fetched.content == truth[item.key], item.key


# ---- annotations that do not fit the label config --------------------------------------------
RECTANGLE = {"from_name": "box", "to_name": "image", "type": "rectanglelabels",
             "value": {"x": 1, "y": 2, "width": 30, "height": 40, "rectanglelabels": ["one"]}}
BRUSH = {"from_name": "label", "to_name": "image", "type": "brushlabels",
         "value": {"format": "rle", "rle": [0, 1, 2, 3], "brushlabels": ["one"]}}


def _choice(label: str, **changes) -> dict:
    item = {"from_name": "label", "to_name": "image", "type": "choices",
            "value": {"choices": [label]}}
    item.update(changes)
    return item


BAD_ANNOTATIONS = {
    "empty": ([], "empty result (no label chosen): choose a label in Label Studio, or skip"),
    "not-in-config": ([_choice("eleven")], "label 'eleven' is not one of the task's labels"),
    "rectangle": ([RECTANGLE], "no 'label' choices, only results the label config does not "
                               "declare (box: rectanglelabels)"),
    "brush": ([BRUSH], "'label' result has type 'brushlabels', but the label config declares "
                       "'choices'"),
    "extra-region": ([_choice("one"), RECTANGLE], "results the label config does not declare "
                                                  "(box: rectanglelabels) besides"),
    "malformed": ([_choice("one", value={"choices": "one"})], "malformed value"),
}


def test_annotations_that_do_not_fit_are_reported_at_pull_and_never_written(
    project, store, images, push_items
):
    chosen = images[:len(BAD_ANNOTATIONS) + 2]
    project.push(push_items(chosen, seed=5), model_version="m-bad", round_id="r-bad")
    project.pull()  # whatever other tests left: this test counts only what it adds
    tasks = project.task_image_ids()
    before_images, before_records = _snapshot(store)
    bad = dict(zip(BAD_ANNOTATIONS, chosen, strict=False))
    good = chosen[len(BAD_ANNOTATIONS):]
    annotation_ids = {}
    for case, image in bad.items():
        annotation_ids[case] = project.create_annotation(tasks[image.image_id],
                                                         BAD_ANNOTATIONS[case][0])
    for image in good:
        project.create_annotation(tasks[image.image_id], [_choice(image.label)])

    result = project.pull()

    assert sorted(result.changed) == sorted(image.image_id for image in good)
    reasons = {problem.image_id: problem.reason for problem in result.problems}
    for case, image in bad.items():
        assert BAD_ANNOTATIONS[case][1] in reasons[image.image_id], case
        assert read_record(store, image.image_id) is None, case
    records = read_all_records(store)
    assert {i.image_id: records[i.image_id].label for i in good} == {
        i.image_id: i.label for i in good}
    assert {k: v for k, v in records.items() if k in before_records} == before_records
    assert _snapshot(store)[0] == before_images

    again = project.pull()  # reported again until fixed, still never written
    assert {p.image_id for p in again.problems} >= {image.image_id for image in bad.values()}
    assert again.changed == []
    fixed = bad["empty"]  # once the annotator fixes one, the next pull takes it: nothing lost
    project.client.annotations.update(id=annotation_ids["empty"], result=[_choice(fixed.label)])
    assert project.pull().changed == [fixed.image_id]
    assert read_record(store, fixed.image_id).label == fixed.label


# ---- wrong credentials, bucket and server ----------------------------------------------------
def _secrets(settings) -> list[str]:
    return [settings.s3.access_key_id.get_secret_value(),
            settings.s3.secret_access_key.get_secret_value(),
            settings.labelstudio.api_key.get_secret_value()]


@pytest.mark.parametrize("field", ["access_key_id", "secret_access_key"])
def test_a_wrong_s3_key_names_the_settings_and_leaks_nothing(settings, store, images, field):
    wrong = "WRONGKEY1234567890" if field == "access_key_id" else "wrong-secret-1234567890"
    broken = _fresh(settings, prefix=settings.s3.prefix, **{field: SecretStr(wrong)})
    before = _snapshot(store)
    for call in (lambda: list(broken.list_images()), lambda: broken.get_bytes(images[0].key),
                 lambda: broken.get_many([r.key for r in images]),
                 lambda: broken.put_bytes(images[0].key, b"overwritten?")):
        with pytest.raises(ServiceUnavailable) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"S3 at {broken.endpoint} refused the access key (")
        assert message.endswith("check s3.access_key_id and s3.secret_access_key.")
        assert not any(s in message for s in [wrong, *_secrets(settings)])
    assert _snapshot(store) == before


def test_a_wrong_bucket_names_the_setting_and_creates_nothing(settings):
    missing = f"alpha-missing-{uuid.uuid4().hex[:8]}"
    wrong = settings.model_copy(update={"s3": settings.s3.model_copy(update={"bucket": missing})})
    store = Store.from_settings(wrong)
    expected = (f"S3 bucket {missing!r} does not exist at {store.endpoint}: create it "
                "(`alpha ingest` does) or fix s3.bucket.")
    for call in (lambda: list(store.list_images()), lambda: read_all_records(store),
                 lambda: store.get_many([store.image_key("any.png")]),
                 lambda: train_model(store, wrong)):
        with pytest.raises(ServiceUnavailable) as raised:
            call()
        assert str(raised.value) == expected
    buckets = [b["Name"] for b in store.client.list_buckets()["Buckets"]]
    assert missing not in buckets


def test_a_bucket_name_the_server_refuses_names_the_setting(settings):
    wrong = settings.s3.model_copy(update={"bucket": "Not..Valid"})  # past the config check
    store = Store.from_settings(settings.model_copy(update={"s3": wrong}))
    with pytest.raises(ServiceUnavailable) as raised:
        store.ensure_bucket()
    assert str(raised.value) == (
        f"S3 at {store.endpoint} refused the bucket name 'Not..Valid' as invalid: fix s3.bucket "
        "(3-63 lowercase letters, digits, dots and hyphens).")


def _project_with(settings, store, **labelstudio) -> LabelStudioProject:
    update = settings.labelstudio.model_copy(update=labelstudio)
    return LabelStudioProject(settings.model_copy(update={"labelstudio": update}), store)


def _jwt(claims: dict) -> str:
    """A JWT with these claims and a made-up signature, like a revoked or edited token."""
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-the-token-1234", "Invalid token."),  # a legacy token nobody has
        (_jwt({"token_type": "refresh", "exp": 1_000_000_000}), "API key has expired"),
        (_jwt({"token_type": "refresh"}), "API key does not have an expiration set"),
        (_jwt({"token_type": "refresh", "exp": 4_000_000_000}), "Token is invalid"),
    ],
    ids=["legacy", "expired-jwt", "jwt-without-expiry", "forged-jwt"],
)
def test_a_token_without_rights_names_the_setting_and_leaks_nothing(
    settings, store, project, images, push_items, token, reason
):
    project.ensure_project()
    before_tasks, before = project.task_image_ids(), _snapshot(store)

    def wrong() -> LabelStudioProject:
        return _project_with(settings, store, api_key=SecretStr(token))

    calls = [lambda: wrong().pull(), lambda: wrong().task_image_ids(),
             lambda: wrong().push(push_items(images[-2:]), "m-x", "r-x")]
    for call in calls:
        with pytest.raises(ServiceUnavailable) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"Label Studio at {project.url} refused the API token (401)")
        assert reason in message and message.endswith("check labelstudio.api_key.")
        assert not any(s in message for s in [token, *_secrets(settings)])
    assert project.task_image_ids() == before_tasks and _snapshot(store) == before


def test_a_url_that_is_not_label_studio_names_the_url(settings, store):
    wrong = _project_with(settings, store, url=settings.s3.endpoint_url)
    with pytest.raises(ServiceUnavailable) as raised:
        wrong.task_image_ids()
    message = str(raised.value)
    assert message.startswith(f"{settings.s3.endpoint_url} refused the request (403)")
    assert message.endswith("check that labelstudio.url is the Label Studio server.")
    assert not any(s in message for s in _secrets(settings))
