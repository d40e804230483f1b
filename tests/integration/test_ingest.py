"""Ingest into the real S3 server, and the clear errors of bad input at the boundaries."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr
from typer.testing import CliRunner

from alpha.cli import app
from alpha.config import load_settings
from alpha.errors import ServiceUnavailable
from alpha.ingest import ingest_folder
from alpha.records import read_all_records
from alpha.store import Store, image_id_from_key

pytestmark = pytest.mark.integration


@pytest.fixture
def settings():
    return load_settings(s3={"prefix": f"test-ingest-{uuid.uuid4().hex[:8]}"},
                         task={"labels": ["dark", "light"]})


@pytest.fixture
def folder(tmp_path):
    """Four good images (one in a subfolder, one JPEG), one corrupt, one empty, a label CSV."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name, value in [("a.png", 10), ("b.png", 240), ("sub/c.png", 20)]:
        Image.fromarray(np.full((16, 16), value, np.uint8)).save(images / name)
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(images / "d.jpg")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (images / "empty.png").write_bytes(b"")
    (tmp_path / "labels.csv").write_text(
        "filename,label\na.png,dark\nb.png,light\nsub/c.png,purple\nmissing.png,dark\n"
    )
    return tmp_path


def test_ingest_uploads_good_images_and_seed_labels_and_names_bad_ones(settings, folder):
    store = Store.from_settings(settings)
    report = ingest_folder(store, settings, folder / "images", folder / "labels.csv")

    assert report.uploaded == 4
    assert report.seed_labels == 2
    problems = "\n".join(report.problems)
    assert "corrupt.png" in problems and "empty.png" in problems
    assert "'purple'" in problems and "missing.png" in problems
    keys = sorted(ref.key for ref in store.list_images())
    assert keys == [store.image_key(n) for n in ["a.png", "b.png", "d.jpg", "sub/c.png"]]
    assert store.get_bytes(store.image_key("a.png")) == (folder / "images/a.png").read_bytes()
    records = read_all_records(store)
    assert {r.image_id: r.label for r in records.values()} == {
        image_id_from_key("a.png"): "dark", image_id_from_key("b.png"): "light"}
    assert all(r.source == "seed" and r.status == "labeled" for r in records.values())

    again = ingest_folder(store, settings, folder / "images", folder / "labels.csv")
    assert (again.uploaded, again.already_present, again.seed_labels) == (0, 4, 0)
    assert len(read_all_records(store)) == 2


def test_cli_ingest_reports_a_corrupt_image_by_name_and_goes_on(settings, folder, monkeypatch):
    monkeypatch.setenv("ALPHA_S3__PREFIX", settings.s3.prefix)
    monkeypatch.setenv("ALPHA_TASK__LABELS", '["dark", "light"]')
    result = CliRunner().invoke(app, ["ingest", str(folder / "images")])
    assert result.exit_code == 0, result.output
    assert "ingested 4 new images" in result.output
    assert "corrupt.png" in result.output


def test_cli_missing_setting_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALPHA_TASK__LABELS", raising=False)
    result = CliRunner().invoke(app, ["ingest", str(tmp_path)])
    assert result.exit_code == 2
    assert "task.labels is missing" in result.output
    assert "Traceback" not in result.output


def test_unreachable_s3_endpoint_is_named(settings):
    broken = settings.model_copy(update={"s3": settings.s3.model_copy(
        update={"endpoint_url": "http://127.0.0.1:9"})})
    with pytest.raises(ServiceUnavailable, match=r"http://127.0.0.1:9 is unreachable"):
        Store.from_settings(broken).ensure_bucket()
    with pytest.raises(ServiceUnavailable, match=r"http://127.0.0.1:9 is unreachable"):
        Store.from_settings(broken).get_many(["p/images/a.png"])  # obstore's GETs


def test_wrong_s3_key_is_named_without_the_secret(settings):
    wrong = settings.s3.model_copy(update={"secret_access_key": SecretStr("not-the-secret-123")})
    store = Store.from_settings(settings.model_copy(update={"s3": wrong}))
    with pytest.raises(ServiceUnavailable, match="refused the access key") as error:
        list(store.list_keys("images/"))
    assert "not-the-secret-123" not in str(error.value)
