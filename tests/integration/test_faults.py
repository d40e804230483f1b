"""Kill push and pull at random points against the real stack, re-run, count (a few
repetitions of bench/faults.py, which runs 50 of each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_killed_pushes_and_pulls_lose_and_duplicate_nothing(tmp_path):
    out = tmp_path / "faults.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faults.py"), "--push-kills", "3",
         "--pull-kills", "3", "--tasks", "300", "--annotated", "24", "--seed", "7",
         "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    push, pull = report["push"]["totals"], report["pull"]["totals"]
    assert push["images"] == 3 * 300 and push["exactly_once"] == 900
    assert push["lost"] == push["duplicated"] == 0
    assert pull["annotated_tasks"] == 3 * 24 and pull["records"] == 3 * 24
    assert pull["lost"] == pull["wrong_label"] == pull["extra"] == 0
    # The kills must really have interrupted the steps, or this proves nothing.
    assert report["push"]["killed_mid_run"] >= 1 and report["pull"]["killed_mid_run"] >= 1
