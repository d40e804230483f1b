"""Store keys: stable, URL-safe ids; the design's layout; names that would escape refused."""

import re

import pytest

from alpha.store import Store, image_id_from_key, validate_relative_key


def test_image_id_is_stable_and_url_safe():
    first = image_id_from_key("cats/Tom & Jerry (1).png")
    assert first == image_id_from_key("cats/Tom & Jerry (1).png")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", first)
    assert first.startswith("cats_Tom_Jerry_1-")


def test_similar_names_get_different_ids():
    assert image_id_from_key("a/b.png") != image_id_from_key("a_b.png")
    assert image_id_from_key("x.png") != image_id_from_key("x.jpg")


def test_layout_keys():
    store = Store(client=None, bucket="bkt", prefix="/proj/")
    assert store.image_key("dir/x.png") == "proj/images/dir/x.png"
    assert store.label_key("x-1") == "proj/labels/x-1.json"
    assert store.model_key("m1", "model.pt") == "proj/models/m1/model.pt"
    assert store.round_key("round-0001", "push.json") == "proj/rounds/round-0001/push.json"
    assert store.s3_uri("proj/images/x.png") == "s3://bkt/proj/images/x.png"
    assert store.image_id_for("proj/images/dir/x.png") == image_id_from_key("dir/x.png")


@pytest.mark.parametrize(
    "name", ["../secret.png", "a/../../b.png", "/etc/passwd.png", "a//b.png", "bad\x00.png",
             "tab\t.png", "", "./x.png", "win\\path.png"],
)
def test_names_that_escape_or_break_keys_are_refused(name):
    with pytest.raises(ValueError, match="invalid image name"):
        validate_relative_key(name)
