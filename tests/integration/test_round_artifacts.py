"""What a round publishes on the real Prefect server, read back with the Prefect client: the
table of every round so far, the round's summary in markdown (class names, the Label Studio
project, the report in the bucket) and a progress bar that reached 100 %."""

from __future__ import annotations

import json
import re

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from alpha.report import REPORT_KEY
from flows.artifacts import artifact_key

pytestmark = pytest.mark.integration


def _artifacts(flow_run_id) -> dict[str, list]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    by_type: dict[str, list] = {}
    for artifact in found:
        by_type.setdefault(artifact.type, []).append(artifact)
    return by_type


def _rows(artifact) -> list[dict]:
    """A table artifact's rows (the server keeps the table as JSON text)."""
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_each_round_publishes_the_rounds_table_summary_and_progress(finished_rounds):
    rounds = finished_rounds
    settings = rounds.ctx.settings
    first, second = (_artifacts(run_id) for run_id in rounds.flow_run_ids)

    (table,) = second["table"]
    rows = _rows(table)
    versions = [s["model"]["version"] for s in rounds.summaries]
    assert [row["round"] for row in rows] == ["round-0001", "round-0002"]
    assert [row["model"] for row in rows] == versions
    assert [row["labels"] for row in rows] == [s["labels"]["labeled"] for s in rounds.summaries]
    assert [row["pushed"] for row in rows] == [10, 10]
    assert [row["queue"] for row in rows] == [10, 12]
    assert rows[0]["agreement"] == "-" and rows[1]["agreement"] == "83%"  # (1 + 1 + 0.5) / 3
    accuracy = rounds.summaries[1]["model"]["metrics"]["accuracy"]
    assert rows[1]["validation accuracy"] == f"{accuracy:.3f}"
    assert table.key == artifact_key("rounds", settings.s3.prefix)
    assert [row["round"] for row in _rows(first["table"][0])] == ["round-0001"]

    (markdown,) = second["markdown"]
    text = markdown.data
    assert f"classes: {', '.join(settings.task.labels)}" in text
    assert f"]({rounds.summaries[1]['project_url']})" in text
    report_uri = rounds.ctx.store.s3_uri(rounds.ctx.store.key(*REPORT_KEY))
    assert f"`{report_uri}`" in text
    assert "tasks waiting in the queue: **12**" in text
    classes = re.findall(r"^\| ([^|]+) \| ", text, flags=re.M)
    assert classes[0] == "class" and set(classes[1:]) <= set(settings.task.labels)
    assert classes[1:], "per-class rows (by class name) are missing"

    pool_sizes = [s["selection"]["pool_size"] for s in rounds.summaries]
    for run, pool in zip((first, second), pool_sizes, strict=True):
        bars = {a.description.split(": ", 1)[1]: float(a.data) for a in run["progress"]}
        assert all(v == pytest.approx(100.0) for v in bars.values()), bars  # each step ended
        named = {re.sub(r"\d+ of \d+", "N of N", name) for name in bars}
        assert named == {"finish-round done", "scoring the pool: N of N",
                         "training steps: N of N", "pushing tasks: N of N"}, bars
        assert f"scoring the pool: {pool} of {pool}" in bars
        assert "pushing tasks: 10 of 10" in bars

    everything = " ".join(f"{a.data} {a.description}" for run in (first, second)
                          for found in run.values() for a in found)
    secrets = settings.secret_values()  # S3 keys (Label Studio's too), tokens, Prefect's auth
    assert len(secrets) >= 7
    leaked = [secret in everything for secret in secrets]
    assert not any(leaked), f"secret number {leaked.index(True)} is in an artifact"
