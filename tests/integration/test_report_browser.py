"""The report of a project after two real rounds, opened in headless Chromium: every plot
is drawn (its data elements have a size on the page), not only written to a file.

`alpha report` writes the page through the command line, from the bucket the rounds wrote;
the round itself left the same page in the bucket (`reports/index.html`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alpha.cli import app
from alpha.history import read_history
from alpha.report import PLOTS, REPORT_KEY

pytestmark = pytest.mark.integration

SCREENSHOT = Path("/work/scratch/report.png")

# Per plot: how many data elements (under groups with ids series-*) are drawn with a size.
DRAWN = """() => Array.from(document.querySelectorAll('figure.plot')).map(f => ({
  id: f.id,
  svgs: f.querySelectorAll('svg').length,
  drawn: Array.from(f.querySelectorAll('svg [id^="series-"]')).flatMap(g =>
      Array.from(g.querySelectorAll('path, use, rect')).concat([g]))
    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 || r.height > 0; })
    .length,
  text: Array.from(f.querySelectorAll('svg text')).map(t => t.textContent).join('|'),
}))"""


def test_every_plot_of_the_report_is_drawn_in_the_browser(finished_rounds, browser, tmp_path):
    rounds = finished_rounds
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--config", str(rounds.config), "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().replace("\n", "") == str(out.resolve())
    page_html = out.read_text()

    page = browser.new_page(viewport={"width": 1300, "height": 900})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.resolve().as_uri())
    plots = page.evaluate(DRAWN)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    shutil.copy(tmp_path / "report.png", SCREENSHOT)
    page.close()

    history = read_history(rounds.ctx.store, rounds.ctx.settings)
    assert [p["id"] for p in plots] == [plot(history).name for plot in PLOTS]
    for plot in plots:
        assert plot["svgs"] == 1 and plot["drawn"] > 0, plot
    by_id = {p["id"]: p for p in plots}
    # Class names, not indices, and both annotators by name.
    assert all(f"|{name}|" in f"|{by_id['labels-per-class']['text']}|"
               for name in rounds.ctx.settings.task.labels)
    assert "simulator@alpha.local" in by_id["throughput"]["text"]
    assert rounds.second_annotator in by_id["throughput"]["text"]
    assert requests == [out.resolve().as_uri()]  # nothing else fetched: self-contained

    second = history.rounds[1]
    assert second.pulled_overlapped == 3 and second.pulled_agreement == pytest.approx(
        (1 + 1 + 0.5) / 3)
    assert [p.queue_depth for p in history.rounds] == [10, 12]
    work = {w.annotator: w for w in history.annotators}
    assert sorted(work[rounds.second_annotator].lead_times) == [5.0, 20.0, 30.0, 40.0]
    assert work[rounds.second_annotator].skipped == 1

    in_bucket = rounds.ctx.store.get_bytes(rounds.ctx.store.key(*REPORT_KEY)).decode()
    assert "round-0002" in in_bucket and 'id="learning-curve"' in in_bucket
    settings = rounds.ctx.settings
    for secret in (settings.s3.access_key_id, settings.s3.secret_access_key,
                   settings.labelstudio.api_key):
        assert secret.get_secret_value() not in page_html
        assert secret.get_secret_value() not in in_bucket
