"""`alpha status` against the real stack after two rounds: labels by status and class from
the bucket, the queue (depth, oldest task, tasks per model version) from Label Studio, the
latest model, the last rounds, and that no round is running."""

from __future__ import annotations

import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from alpha import cli
from alpha.records import read_all_records

pytestmark = pytest.mark.integration


def _cell_after(output: str, first: str) -> str:
    """The cell after `first` in a table row of the output."""
    match = re.search(rf"│ {re.escape(first)}\s+│ ([^│]+?)\s+│", output)
    assert match, f"no row {first!r} in:\n{output}"
    return match.group(1)


def test_status_shows_labels_queue_model_and_rounds(finished_rounds, monkeypatch):
    rounds = finished_rounds
    monkeypatch.setattr(cli, "console", Console(width=250, soft_wrap=True))
    result = CliRunner().invoke(cli.app, ["status", "--config", str(rounds.config)])
    assert result.exit_code == 0, result.output
    out = result.output

    records = read_all_records(rounds.ctx.store).values()
    for status in ("labeled", "skipped", "retracted"):
        assert int(_cell_after(out, status)) == sum(r.status == status for r in records)
    assert int(_cell_after(out, "skipped")) == 1
    first, second = (s["model"]["version"] for s in rounds.summaries)
    waiting = rounds.ctx.project.unannotated_tasks()
    assert len(waiting) == 12
    queue_row = re.search(r"│ (\d+)\s+│ (\d+) \(([^)]+)\)\s+│ ([^│]+?)\s+│", out)
    assert queue_row, out
    assert int(queue_row.group(1)) == 12 and int(queue_row.group(2)) == min(waiting)
    # After the retrain every queued task was re-predicted by the new model (the round's
    # queue upkeep), so uncertainty sampling serves the whole queue by one model.
    assert queue_row.group(4) == f"{second}: 12"
    assert first != second
    latest = re.search(rf"│ {second}\s+│[^│]+│ (\d+)\s+│ (\S+)\s+│", out)
    assert latest and int(latest.group(1)) == rounds.summaries[1]["labels"]["labeled"]
    assert latest.group(2) == f"{rounds.summaries[1]['model']['metrics']['accuracy']:.3f}"
    assert "│ round-0001 " in out and "│ round-0002 " in out
    assert "Last rounds (2 of 2)" in out and "No round is running." in out
    settings = rounds.ctx.settings
    for secret in (settings.s3.access_key_id, settings.s3.secret_access_key,
                   settings.labelstudio.api_key):
        assert secret.get_secret_value() not in out
