"""The Label Studio adapter against the real local Label Studio and S3 server."""

from __future__ import annotations

import httpx
import pytest

from alpha.errors import ServiceUnavailable
from alpha.labelstudio import SAMPLING, SIMULATOR_EMAIL, LabelStudioProject
from alpha.records import read_all_records, read_record
from alpha.simulate import simulate_annotations

pytestmark = pytest.mark.integration


def _get(project: LabelStudioProject, path: str, **params) -> httpx.Response:
    token = project.settings.labelstudio.api_key.get_secret_value()
    # no params= when empty: httpx would drop the query string already in `path`
    return httpx.get(f"{project.url}/{path.lstrip('/')}", params=params or None,
                     headers={"Authorization": f"Token {token}"}, follow_redirects=True,
                     timeout=30)


def test_ensure_project_twice_gives_one_project_and_one_storage(project, settings, store, labels):
    first = project.ensure_project()
    again = LabelStudioProject(settings, store).ensure_project()
    assert first == again
    assert len(project.client.import_storage.s3.list(project=first)) == 1
    details = _get(project, f"api/projects/{first}/").json()
    assert details["title"] == settings.project_title
    assert details["sampling"] == SAMPLING
    assert details["label_config"] == project.kind.label_config(labels)
    storage = project.client.import_storage.s3.list(project=first)[0]
    assert (storage.bucket, storage.prefix, storage.presign) == (
        store.bucket, store.key("images"), True)
    rules = store.client.get_bucket_cors(Bucket=store.bucket)["CORSRules"]
    assert any(project.url in r["AllowedOrigins"] and "GET" in r["AllowedMethods"]
               for r in rules)
    assert project.project_url() == f"{project.url}/projects/{first}/data"


def test_changed_labels_update_the_project_config(project, settings, store, labels):
    titled = settings.labelstudio.model_copy(
        update={"project_title": settings.project_title + " relabel"})
    before = settings.model_copy(update={"labelstudio": titled})
    first = LabelStudioProject(before, store)
    project_id = first.ensure_project()
    try:
        more = [*labels, "not sure"]
        after = before.model_copy(update={"task": before.task.model_copy(update={"labels": more})})
        assert LabelStudioProject(after, store).ensure_project() == project_id
        config = _get(project, f"api/projects/{project_id}/").json()["label_config"]
        assert config == first.kind.label_config(more)
        assert len(first.client.import_storage.s3.list(project=project_id)) == 1
    finally:
        first.client.projects.delete(id=project_id)


def test_push_creates_tasks_whose_image_resolves_to_the_exact_bytes(project, images, push_items):
    items = push_items(images[:6])
    result = project.push(items, model_version="m-1", round_id="r-0001")
    assert set(result.created) == {item.image_id for item in items}
    assert result.already_present == {}
    assert project.task_image_ids() == result.created
    by_id = {image.image_id: image for image in images}
    for image_id, task_id in result.created.items():
        task = _get(project, f"api/tasks/{task_id}/").json()  # Label Studio resolves s3://
        assert task["data"]["image_id"] == image_id
        assert task["data"]["round"] == "r-0001"
        assert "/resolve/" in task["data"]["image"]
        fetched = _get(project, task["data"]["image"])
        assert fetched.status_code == 200
        assert fetched.content == by_id[image_id].png
    # most uncertain (lowest confidence) first: created in ascending score order
    scores = {item.image_id: item.score for item in items}
    in_task_order = sorted(result.created, key=result.created.get)
    assert [scores[i] for i in in_task_order] == sorted(scores.values())


def test_prediction_is_stored_with_model_version_and_score(project, images, push_items, labels):
    items = {item.image_id: item for item in push_items(images[:6])}
    tasks = project.task_image_ids()
    details = _get(project, f"api/projects/{project.project_id}/").json()
    assert details["model_version"] == "m-1"
    for image_id, item in items.items():
        predictions = project.client.predictions.list(task=tasks[image_id])
        assert len(predictions) == 1
        prediction = predictions[0]
        assert prediction.model_version == "m-1"
        assert prediction.score == pytest.approx(item.score)
        best = item.result[0]["value"]["choices"][0]
        assert project.kind.label_from_result(prediction.result, labels) == best


def test_uncertainty_sampling_serves_the_lowest_score_first(project, images, push_items):
    items = push_items(images[:6])
    lowest = min(items, key=lambda item: item.score)
    task = _get(project, f"api/projects/{project.project_id}/next").json()
    assert task["data"]["image_id"] == lowest.image_id


def test_pushing_the_same_selection_twice_creates_no_task(project, images, push_items):
    before = project.task_image_ids()
    again = project.push(push_items(images[:6]), model_version="m-1", round_id="r-0001")
    assert again.created == {}
    assert again.already_present == {i: before[i] for i in again.already_present}
    assert set(again.already_present) == {image.image_id for image in images[:6]}
    assert project.task_image_ids() == before


def test_pull_writes_one_record_per_annotated_task(project, store, truth, images):
    report = simulate_annotations(project, truth, error_rate=0.25, skip_rate=0.3,
                                  random_state=3)
    assert report.simulated and report.annotator == SIMULATOR_EMAIL
    assert report.annotated + report.skipped == 6 and report.skipped >= 1
    tasks = project.task_image_ids()
    result = project.pull()
    assert result.problems == []
    assert (result.new, result.updated, result.skipped) == (6, 0, report.skipped)
    records = read_all_records(store)
    assert set(records) == {image.image_id for image in images[:6]}
    wrong = set(report.wrong_image_ids)
    for image_id, record in records.items():
        assert record.source == "labelstudio" and record.simulated
        assert record.annotator == SIMULATOR_EMAIL
        assert record.ls_task_id == tasks[image_id]
        assert record.ls_project_id == project.project_id
        assert record.image_key == next(i.key for i in images if i.image_id == image_id)
        if record.status == "labeled":
            assert (record.label == truth[image_id]) == (image_id not in wrong)
        else:
            assert record.label is None
    assert sum(r.status == "skipped" for r in records.values()) == report.skipped


def test_pull_again_writes_nothing(project, store):
    before = {k: r.recorded_at for k, r in read_all_records(store).items()}
    for full in (False, True):
        result = project.pull(full=full)
        assert (result.new, result.updated, result.skipped, result.changed) == (0, 0, 0, [])
        # The incremental pull reads no task it saw in that state; the full one reads all 6.
        assert result.unchanged == (6 if full else 0)
    assert {k: r.recorded_at for k, r in read_all_records(store).items()} == before


def test_simulation_is_reproducible_and_skips_images_without_truth(
    project, images, truth, push_items
):
    items = push_items(images[6:10], seed=1)
    project.push(items, model_version="m-2", round_id="r-0002")
    partial = {image.image_id: truth[image.image_id] for image in images[6:8]}
    report = simulate_annotations(project, partial, random_state=0, limit=1)
    assert (report.annotated, len(report.task_ids)) == (1, 1)
    report = simulate_annotations(project, partial, random_state=0)
    assert (report.annotated, report.no_truth) == (1, 2)
    assert project.pull().new == 2


def test_an_edited_annotation_is_pulled_again_and_keeps_history(project, store, truth, labels):
    records = read_all_records(store)
    image_id, record = next((i, r) for i, r in sorted(records.items()) if r.status == "labeled")
    other = next(label for label in labels if label != record.label)
    project.client.annotations.update(id=record.ls_annotation_id,
                                      result=project.kind.result_from_label(other))
    result = project.pull()
    assert (result.new, result.updated, result.changed) == (0, 1, [image_id])
    edited = read_record(store, image_id)
    assert edited.label == other
    assert edited.ls_annotation_id == record.ls_annotation_id
    assert [h["label"] for h in edited.history] == [record.label]
    assert project.pull().changed == []


def test_an_annotation_that_does_not_fit_is_reported_not_written(
    project, store, images, push_items
):
    project.push(push_items(images[10:12], seed=2), model_version="m-3", round_id="r-0003")
    tasks = project.task_image_ids()
    bad, good = images[10], images[11]
    bad_result = [{"from_name": "label", "to_name": "image", "type": "choices",
                   "value": {"choices": ["not-a-digit"]}}]
    project.create_annotation(tasks[bad.image_id], bad_result)
    project.create_annotation(tasks[good.image_id], project.kind.result_from_label(good.label))
    result = project.pull()
    assert result.new == 1 and result.changed == [good.image_id]
    assert [(p.task_id, p.image_id) for p in result.problems] == [
        (tasks[bad.image_id], bad.image_id)]
    assert "not-a-digit" in result.problems[0].reason
    assert read_record(store, bad.image_id) is None
    good_record = read_record(store, good.image_id)
    assert good_record.label == good.label and not good_record.simulated
    assert good_record.annotator != SIMULATOR_EMAIL
    again = project.pull()  # still reported until fixed, never written
    assert len(again.problems) == 1 and again.changed == []


def test_a_wrong_token_names_the_token(settings, store):
    token = settings.labelstudio.api_key.get_secret_value()
    wrong = settings.model_copy(update={"labelstudio": settings.labelstudio.model_copy(
        update={"api_key": type(settings.labelstudio.api_key)("not-the-token-1234")})})
    with pytest.raises(ServiceUnavailable) as caught:
        LabelStudioProject(wrong, store).ensure_project()
    message = str(caught.value)
    assert "refused the API token (401)" in message and "labelstudio.api_key" in message
    assert "not-the-token-1234" not in message and token not in message


def test_an_unreachable_url_names_the_url(settings, store):
    url = "http://127.0.0.1:9"
    gone = settings.model_copy(update={"labelstudio": settings.labelstudio.model_copy(
        update={"url": url})})
    with pytest.raises(ServiceUnavailable) as caught:
        LabelStudioProject(gone, store).task_image_ids()
    message = str(caught.value)
    assert f"Label Studio at {url} is unreachable" in message
    assert "labelstudio.url" in message
    assert settings.labelstudio.api_key.get_secret_value() not in message
