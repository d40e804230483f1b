"""What `alpha status` and `alpha round` print, from a small project in a dict-backed bucket
and a fake flow (the real stack's run is tests/integration/test_status_cli.py)."""

from __future__ import annotations

import re

from rich.console import Console

from alpha.history import read_history
from alpha.labelstudio import QueueState
from alpha.records import LabelRecord, write_record
from alpha.rounds import write_round_record
from alpha.status import describe_round, status_view

SUMMARY = {
    "round": "round-0003", "project_url": "http://ls.example/projects/7/data",
    "labels": {"labeled": 42, "skipped": 2, "retracted": 1},
    "pull": {"new": 9, "updated": 1, "problems": ["task 5 (a): bad"]},
    "model": {"version": "m3", "trained": True, "primary_metric": "miou",
              "metrics": {"miou": 0.4567}},
    "selection": {"selected": 10, "pool_size": 300, "strategy": "cluster_margin"},
    "push": {"created": 10}, "queue": {"depth": 14},
}


def _text(renderable) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_describe_round_is_a_few_lines_for_people():
    text = describe_round(SUMMARY)
    assert text.splitlines()[0] == "round-0003 done."
    assert "labels: 42 (skipped 2, retracted 1); this round pulled 9 new, 1 updated" in text
    assert "model m3 (trained now): validation miou 0.457" in text
    assert "selected 10 of 300 unlabeled images by cluster_margin; pushed 10 tasks; 14 " \
           "waiting in the queue" in text
    assert "1 annotations could not be read" in text
    assert text.endswith("label them: http://ls.example/projects/7/data")
    missing = {**SUMMARY, "model": {**SUMMARY["model"], "trained": False, "metrics": {}}}
    assert "model m3 (kept): validation miou not measured (no validation split)" in \
        describe_round(missing)
    assert "{" not in text  # not a raw dict


def test_status_view_shows_the_bucket_and_says_why_the_queue_is_missing(store, settings):
    for i, status in enumerate(["labeled", "labeled", "skipped"]):
        write_record(store, LabelRecord(image_id=f"i{i}", image_key=f"k{i}", status=status,
                                        label="bright" if status == "labeled" else None,
                                        source="seed"))
    store.put_json(store.model_key("m1", "metrics.json"), {
        "created_at": "2026-12-01T09:00:00+00:00", "n_labels": 2, "primary_metric": "accuracy",
        "metrics": {"accuracy": None, "per_label": {}}})
    write_round_record(store, "round-0001", "summary", {
        "labels": {"labeled": 2}, "model": {"version": "m1", "primary_metric": "accuracy",
                                            "metrics": {"accuracy": None}}})
    write_round_record(store, "round-0002", "pull", {"changed": []})  # unfinished
    history = read_history(store, settings)

    text = _text(status_view(history, "Label Studio at http://x is unreachable"))
    assert re.search(r"│ labeled\s+│ 2\s+│", text) and re.search(r"│ skipped\s+│ 1\s+│", text)
    assert re.search(r"│ bright\s+│ 2\s+│ 0\s+│", text) and re.search(r"│ dark\s+│ 0\s+│", text)
    assert "Queue: not available (Label Studio at http://x is unreachable)" in text
    assert "│ m1 " in text and "not measured (no validation split)" in text
    assert "Round round-0002 is unfinished" in text

    queue = QueueState(depth=3, by_model_version={"m1": 2, "none": 1}, oldest_task_id=17,
                       oldest_created_at="2026-12-01T10:00:00Z")
    text = _text(status_view(history, queue))
    assert re.search(r"│ 3\s+│ 17 \(2026-12-01T10:00:00Z\)\s+│ m1: 2, none: 1\s+│", text)


def test_a_project_without_rounds_or_models_says_so(store, settings):
    text = _text(status_view(read_history(store, settings),
                             QueueState(depth=0, by_model_version={})))
    assert "Model: none trained yet" in text and "Rounds: no rounds yet" in text
    assert "No round is running." in text


def test_alpha_round_prints_the_summary_not_a_dict(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import flows.round
    from alpha import cli

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    monkeypatch.setenv("ALPHA_S3__ACCESS_KEY_ID", "k")
    monkeypatch.setenv("ALPHA_S3__SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("ALPHA_LABELSTUDIO__API_KEY", "token")
    monkeypatch.setattr(flows.round, "active_learning_round", lambda **_: SUMMARY)
    config = tmp_path / "alpha.toml"
    config.write_text('[task]\nlabels = ["a", "b"]\n')
    result = CliRunner().invoke(cli.app, ["round", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == describe_round(SUMMARY)
