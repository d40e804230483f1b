"""People's labels are never lost or duplicated, on the real Label Studio and S3: overlapping
annotations, annotations deleted after a pull, deleted tasks, duplicate tasks, a crashed push,
and a project re-created after Label Studio lost its database."""

from __future__ import annotations

import pytest

from alpha.labelstudio import LabelStudioProject
from alpha.records import read_all_records, read_record

pytestmark = pytest.mark.integration


def _annotate(project: LabelStudioProject, task_id: int, label: str) -> int:
    return project.create_annotation(task_id, project.kind.result_from_label(label))


def _tasks_per_image(project: LabelStudioProject) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in project._list_tasks("id,data"):
        image_id = project._image_id_of(task["data"])
        counts[image_id] = counts.get(image_id, 0) + 1
    return counts


def test_overlapping_annotations_give_the_majority_and_the_agreement(
    project, store, images, push_items, labels
):
    image = images[0]
    task_id = project.push(push_items([image]), "m-1", "r-1").created[image.image_id]
    a, b = labels[1], labels[2]
    first = _annotate(project, task_id, a)
    _annotate(project, task_id, b)
    last = _annotate(project, task_id, a)
    result = project.pull()
    assert (result.new, result.problems) == (1, [])
    record = read_record(store, image.image_id)
    assert record.label == a and record.votes == {a: 2, b: 1}
    assert record.agreement == pytest.approx(2 / 3)
    assert record.ls_annotation_id == last  # the latest annotation with the winning label

    # One of the two majority votes is deleted: a tie, which the latest annotation (b) wins.
    project.client.annotations.delete(id=first)
    result = project.pull()
    assert result.changed == [image.image_id]
    record = read_record(store, image.image_id)
    assert record.votes == {a: 1, b: 1} and record.agreement == 0.5
    assert record.label == a  # the last of the tied annotations is `last`, labeled a
    assert [h["votes"] for h in record.history] == [{a: 2, b: 1}]


def test_deleted_annotations_retract_the_label_and_keep_its_history(
    project, store, images, push_items, labels
):
    image = images[1]
    task_id = project.push(push_items([image]), "m-1", "r-1").created[image.image_id]
    annotation = _annotate(project, task_id, labels[3])
    assert project.pull().new == 1
    project.client.annotations.delete(id=annotation)

    result = project.pull()
    assert result.retracted == 1 and result.changed == [image.image_id]
    record = read_record(store, image.image_id)
    assert record.status == "retracted" and record.label is None
    assert [h["label"] for h in record.history] == [labels[3]]
    assert project.pull().retracted == 0  # once

    _annotate(project, task_id, labels[4])  # annotated again: a label again
    assert project.pull().updated == 1
    record = read_record(store, image.image_id)
    assert (record.status, record.label) == ("labeled", labels[4])
    assert [h["status"] for h in record.history] == ["labeled", "retracted"]


def test_a_task_deleted_in_label_studio_keeps_its_pulled_label(
    project, store, images, push_items, labels
):
    image = images[2]
    task_id = project.push(push_items([image]), "m-1", "r-1").created[image.image_id]
    _annotate(project, task_id, labels[5])
    project.pull()
    project.client.tasks.delete(id=task_id)
    result = project.pull()
    assert result.problems == [] and result.retracted == 0
    record = read_record(store, image.image_id)
    assert (record.status, record.label) == ("labeled", labels[5])


def test_duplicate_tasks_are_removed_keeping_the_annotated_one(
    project, images, push_items, labels
):
    image = images[3]
    twin = {"data": {"image": store_uri(project, image.key), "image_id": image.image_id}}
    for _ in range(3):
        project.client.projects.import_tasks(id=project.project_id, request=[twin])
    tasks = sorted(t["id"] for t in project._list_tasks("id,data")
                   if project._image_id_of(t["data"]) == image.image_id)
    _annotate(project, tasks[-1], labels[6])  # someone already worked on the newest copy

    result = project.push(push_items([image, images[4]]), "m-1", "r-2")
    assert result.duplicates_removed == 2
    assert set(result.created) == {images[4].image_id}
    assert result.already_present == {image.image_id: tasks[-1]}
    counts = _tasks_per_image(project)
    assert counts[image.image_id] == 1 and counts[images[4].image_id] == 1


def test_a_push_after_a_crashed_one_waits_for_it_and_creates_nothing_twice(
    project, store, images, push_items
):
    items = push_items(images[5:9])
    store.put_json(project._intent_key(), {"what": "a push killed mid-import"})
    first = project.push(items, "m-1", "r-3")
    assert len(first.created) == 4
    assert not store.exists(project._intent_key())
    again = project.push(items, "m-1", "r-3")
    assert again.created == {} and set(again.already_present) == set(first.created)
    assert all(_tasks_per_image(project)[i.image_id] == 1 for i in items)


def test_relabel_refills_a_project_recreated_after_label_studio_lost_it(
    project, settings, store, images, push_items, labels
):
    before = read_all_records(store)
    labeled = {i: r for i, r in before.items() if r.status == "labeled"}
    assert len(labeled) >= 3
    project.client.projects.delete(id=project.project_id)  # the database is gone

    fresh = LabelStudioProject(settings, store)
    restored = fresh.restore(before.values())
    assert fresh.project_id != project.project_id
    assert set(restored.created) == set(labeled)
    assert fresh.restore(before.values()).created == {}  # twice: nothing new

    result = fresh.pull()
    assert result.problems == [] and result.new == 0
    after = read_all_records(store)
    for image_id, old in labeled.items():
        new = after[image_id]
        assert (new.status, new.label, new.annotator) == ("labeled", old.label, old.annotator)
        assert new.restored and new.ls_project_id == fresh.project_id
        assert new.history[-1]["ls_task_id"] == old.ls_task_id
    # Selection never sends a labeled image again: push finds its restored task.
    again = fresh.push(push_items([images[i] for i in range(len(images))
                                   if images[i].image_id in labeled]), "m-2", "r-4")
    assert again.created == {} and set(again.already_present) == set(labeled)
    project._project_id = fresh.project_id  # so the module's teardown deletes this one


def store_uri(project: LabelStudioProject, key: str) -> str:
    return project.store.s3_uri(key)
