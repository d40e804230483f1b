"""The report's data gathering (alpha.history) and page (alpha.report) on a project written
into a dict-backed bucket: known labels, rounds and models, so every number can be checked."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest

from alpha.history import annotator_work, read_history, record_evaluation, rounds_table
from alpha.labelstudio import LabelStudioProject
from alpha.records import AnnotationTime, LabelRecord, attach_mask, write_record
from alpha.report import PLOTS, render_report
from alpha.rounds import write_round_record

LABELS = ["dark", "bright", "striped"]
PLOT_IDS = ["learning-curve", "labels-per-class", "per-class-metric", "agreement",
            "throughput", "queue-depth", "changed", "model-versions"]


def _record(store, image_id: str, label: str | None, source: str = "seed", **extra
            ) -> LabelRecord:
    record = LabelRecord(image_id=image_id, image_key=store.key("images", f"{image_id}.png"),
                         status=extra.pop("status", "labeled"), label=label, source=source,
                         **extra)
    write_record(store, record)
    return record


def _model(store, version: str, created: str, n_labels: int, accuracy: float | None,
           per_label: dict[str, float]) -> None:
    store.put_json(store.model_key(version, "metrics.json"), {
        "version": version, "created_at": created, "n_labels": n_labels,
        "primary_metric": "accuracy", "kind": "classification",
        "metrics": {"accuracy": accuracy, "per_label": per_label}})


def _summary(round_id: str, labeled: int, version: str, accuracy: float | None,
             queue: int | None) -> dict:
    summary = {"round": round_id, "labels": {"labeled": labeled, "skipped": 1, "retracted": 0},
               "model": {"version": version, "trained": True, "primary_metric": "accuracy",
                         "metrics": {"accuracy": accuracy}},
               "selection": {"selected": 2, "pool_size": 10, "strategy": "margin"},
               "push": {"created": 2}, "project_url": "http://ls.example/projects/7/data"}
    if queue is not None:  # a summary written before the queue was recorded has none
        summary["queue"] = {"depth": queue}
    return summary


@pytest.fixture
def project(store):
    """Two rounds: round 1 trained on 4 seed labels; its pull brought nothing. Round 2 pulled
    3 labels from Label Studio (two annotated by two people), and its model was trained
    without a validation split (accuracy None)."""
    for i, label in enumerate(["dark", "dark", "bright", "striped"]):
        _record(store, f"seed-{i}", label)
    t = "2026-12-01T10:{:02d}:00.000000Z"
    _record(store, "ls-0", "bright", "labelstudio", agreement=1.0, changed=0.0,
            annotation_times=[AnnotationTime(annotator="ann@x", created_at=t.format(5),
                                             lead_time=30.0),
                              AnnotationTime(annotator="bob@x", created_at=t.format(6),
                                             lead_time=90.0)])
    _record(store, "ls-1", "bright", "labelstudio", agreement=0.5, changed=1.0,
            annotation_times=[AnnotationTime(annotator="ann@x", created_at=t.format(7),
                                             lead_time=30.0),
                              AnnotationTime(annotator="bob@x",
                                             created_at="2026-12-01T11:01:00Z")])
    _record(store, "ls-2", "striped", "labelstudio", changed=1.0,
            annotation_times=[AnnotationTime(annotator="ann@x", created_at=t.format(8))])
    _record(store, "ls-3", None, "labelstudio", status="skipped",
            annotation_times=[AnnotationTime(annotator="ann@x", created_at=t.format(9),
                                             cancelled=True)])
    _model(store, "m1", "2026-12-01T09:00:00+00:00", 4, 0.5, {"dark": 1.0, "bright": 0.0})
    _model(store, "m2", "2026-12-01T11:00:00+00:00", 7, None, {})
    write_round_record(store, "round-0001", "pull", {"changed": []})
    write_round_record(store, "round-0001", "summary", _summary("round-0001", 4, "m1", 0.5, None))
    write_round_record(store, "round-0002", "pull", {"changed": ["ls-0", "ls-1", "ls-2", "ls-3"]})
    write_round_record(store, "round-0002", "summary", _summary("round-0002", 7, "m2", None, 5))
    return store


def test_history_counts_what_was_written(project, settings):
    history = read_history(project, settings)
    assert history.labels == LABELS and history.primary_metric == "accuracy"
    assert history.class_counts == {"dark": {"seed": 2, "annotators": 0},
                                    "bright": {"seed": 1, "annotators": 2},
                                    "striped": {"seed": 1, "annotators": 1}}
    assert history.status_counts == {"labeled": 7, "skipped": 1}
    first, second = history.rounds
    assert (first.number, first.labeled, first.metric, first.queue_depth) == (1, 4, 0.5, None)
    assert (second.labeled, second.metric, second.queue_depth) == (7, None, 5)
    assert first.pulled == 0 and first.pulled_agreement is None and first.pulled_changed is None
    # round 2 pulled ls-0..3: agreement over the two overlapped, changed over the three labels
    assert second.pulled == 4 and second.pulled_overlapped == 2
    assert second.pulled_agreement == pytest.approx(0.75)
    assert second.pulled_changed == pytest.approx(2 / 3)
    assert [m.version for m in history.models] == ["m1", "m2"]
    assert history.models[0].per_label == {"dark": 1.0, "bright": 0.0}
    assert history.project_url == "http://ls.example/projects/7/data"
    assert history.unfinished_round is None and history.baseline == []


def test_throughput_counts_every_annotation_by_hour_and_lead_time(project, settings):
    from alpha.records import read_all_records

    work, per_hour = annotator_work(read_all_records(project))
    by_name = {w.annotator: w for w in work}
    assert (by_name["ann@x"].annotations, by_name["ann@x"].skipped) == (4, 1)
    assert by_name["ann@x"].labels_per_work_hour == pytest.approx(3600 / 30)
    assert by_name["bob@x"].labels_per_work_hour == pytest.approx(3600 / 90)
    ten, eleven = (datetime(2026, 12, 1, h, tzinfo=UTC) for h in (10, 11))
    assert per_hour == {(ten, "ann@x"): 4, (ten, "bob@x"): 1, (eleven, "bob@x"): 1}


def test_every_plot_is_drawn_from_a_full_history(project, settings):
    history = read_history(project, settings)
    page = render_report(history)
    figures = dict(re.findall(r'<figure class="plot" id="([a-z-]+)" data-drawn="(\w+)">', page))
    assert list(figures) == PLOT_IDS and len(PLOTS) == len(PLOT_IDS)
    # No round has agreement... except round 2; everything has data here.
    assert figures == dict.fromkeys(PLOT_IDS, "true")
    for name, body in re.findall(r'<figure class="plot" id="([a-z-]+)".*?>(.*?)</figure>',
                                 page, flags=re.S):
        assert "<svg" in body and 'id="series-' in body, name
    assert "dark" in page and "striped" in page  # class names, as text in the SVG
    assert "No validation images of striped (not shown)." in page  # m1 measured 2 of 3
    assert "round-0002" in page and "not measured" not in page
    assert "http://ls.example/projects/7/data" in page
    # Self-contained: nothing to fetch, every link inside the page but the Label Studio one.
    assert "<script" not in page and "<link" not in page and " src=" not in page
    links = re.findall(r'href="([^"]*)"', page)
    assert [h for h in links if not h.startswith("#")] == ["http://ls.example/projects/7/data"]


def test_a_round_without_a_validation_metric_is_named_not_drawn(project, settings):
    page = render_report(read_history(project, settings))
    assert "Without a validation value: round-0002." in page
    table = rounds_table(read_history(project, settings))
    assert [row["validation accuracy"] for row in table] == ["0.500", "-"]


def test_a_project_without_rounds_says_so(store, settings):
    page = render_report(read_history(store, settings))
    assert "No rounds yet" in page
    assert 'id="learning-curve" data-drawn="false"' in page and "no rounds yet" in page
    _record(store, "seed-0", "bright")
    page = render_report(read_history(store, settings))
    assert 'id="labels-per-class" data-drawn="true"' in page


def test_one_round_draws_its_point(store, settings):
    _record(store, "seed-0", "bright")
    _model(store, "m1", "2026-12-01T09:00:00+00:00", 1, 1.0, {"bright": 1.0})
    write_round_record(store, "round-0001", "summary", _summary("round-0001", 1, "m1", 1.0, 2))
    write_round_record(store, "round-0002", "selection", {"items": []})  # running now
    history = read_history(store, settings)
    assert len(history.rounds) == 1 and history.unfinished_round == "round-0002"
    page = render_report(history)
    assert 'id="learning-curve" data-drawn="true"' in page
    assert 'id="queue-depth" data-drawn="true"' in page
    assert "round-0002</code> has not finished" in page


def test_a_round_folder_made_by_hand_is_read_not_fatal(store, settings):
    write_round_record(store, "round-copy", "summary", {"labels": {"labeled": 3}})
    (point,) = read_history(store, settings).rounds
    assert (point.number, point.labeled, point.metric, point.model_version) == (0, 3, None, "?")
    assert 'id="learning-curve" data-drawn="false"' in render_report(read_history(store,
                                                                                  settings))


def test_a_simulation_draws_test_values_and_the_random_arm(project, settings):

    random_arm = project.with_prefix("proj-random")
    write_round_record(random_arm, "round-0001", "summary",
                       _summary("round-0001", 4, "r1", 0.4, 0))
    record_evaluation(random_arm, "round-0001", "accuracy", 0.30, 100)
    record_evaluation(project, "round-0001", "accuracy", 0.35, 100, baseline_prefix="proj-random")
    history = read_history(project, settings)
    assert history.baseline_name == "proj-random"
    assert [p.test_metric for p in history.rounds] == [0.35, None]
    assert [p.test_metric for p in history.baseline] == [0.30]
    page = render_report(history)
    assert 'id="series-test"' in page and 'id="series-random"' in page
    assert "simulation" in page


def test_semantic_labels_per_class_count_the_images_each_class_is_in(store, settings):
    semantic = settings.model_copy(update={"task": settings.task.model_copy(
        update={"kind": "semantic", "labels": ["sky", "road", "car"]})})
    masks = [np.array([[0, 0], [1, 1]], np.uint8), np.array([[0, 2], [255, 255]], np.uint8)]
    for i, mask in enumerate(masks):
        record = LabelRecord(image_id=f"s{i}", image_key=store.key("images", f"s{i}.png"),
                             status="labeled", source="seed" if i == 0 else "labelstudio")
        attach_mask(store, record, mask)
        write_record(store, record)
    history = read_history(store, semantic)
    assert history.primary_metric == "miou"
    assert history.class_counts == {"sky": {"seed": 1, "annotators": 1},
                                    "road": {"seed": 1, "annotators": 0},
                                    "car": {"seed": 0, "annotators": 1}}
    assert "images whose mask has the class" in render_report(history)


def test_the_report_holds_no_secret(project, settings):
    page = render_report(read_history(project, settings))
    for secret in (settings.s3.access_key_id, settings.s3.secret_access_key,
                   settings.labelstudio.api_key):
        assert f">{secret.get_secret_value()}<" not in page
        assert f'"{secret.get_secret_value()}"' not in page


def test_the_round_report_names_a_missing_metric_and_the_classes(settings):
    from flows.round import _report

    summary = {"round": "round-0001", "labels": {"labeled": 3, "skipped": 0, "retracted": 0,
                                                 "overlapped": 0, "mean_changed": None},
               "pull": {}, "queue": {"depth": 4}, "project_url": "http://ls/projects/1/data",
               "model": {"version": "m1", "trained": True, "primary_metric": "accuracy",
                         "metrics": {"accuracy": None,
                                     "per_label": {"striped": 0.25, "bright": None}}},
               "selection": {"selected": 1, "pool_size": 5, "strategy": "margin"},
               "push": {"created": 1, "already_present": 0}}
    text = _report(SimpleNamespace(settings=settings), summary, "s3://test/proj/reports/x.html")
    assert "validation accuracy not measured (no validation split)" in text
    assert "classes: dark, bright, striped" in text
    assert "tasks waiting in the queue: **4**" in text
    assert "s3://test/proj/reports/x.html" in text
    # per-class rows by name in the task's class order, a missing value named too
    assert "| bright | not measured (no validation split) |\n| striped | **0.250** |" in text


def test_pull_keeps_when_and_how_long_each_annotation_took(store, settings):
    client = SimpleNamespace(_client_wrapper=SimpleNamespace(httpx_client=None))
    project = LabelStudioProject(settings, store, client=client)
    project._project_id = 3
    choice = [{"type": "choices", "from_name": "label", "to_name": "image",
               "value": {"choices": ["bright"]}}]
    task = {"id": 11, "data": {"image": store.s3_uri(store.key("images", "a.png"))},
            "predictions": [], "annotations": [
                {"id": 1, "completed_by": 5, "result": choice, "lead_time": 12.5,
                 "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:01Z"},
                {"id": 2, "completed_by": {"id": 6}, "result": [], "was_cancelled": True,
                 "lead_time": None, "created_at": "2026-12-01T10:05:00Z",
                 "updated_at": "2026-12-01T10:05:00Z"}]}
    record, _ = project._record_for(task, {5: "ann@x", 6: "bob@x"}, simulator=None)
    assert record.label == "bright" and record.annotator == "ann@x"
    assert [t.model_dump() for t in record.annotation_times] == [
        {"annotator": "ann@x", "created_at": "2026-12-01T10:00:00Z", "lead_time": 12.5,
         "cancelled": False},
        {"annotator": "bob@x", "created_at": "2026-12-01T10:05:00Z", "lead_time": None,
         "cancelled": True}]
    old = record.model_copy(update={"annotation_times": []})
    assert old.same_label_as(record)  # timing alone is not a label change: nothing rewritten
