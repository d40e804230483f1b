"""The project report: one self-contained HTML page of plots (`alpha report`).

The page needs no network to view: each plot is matplotlib's SVG inlined in the HTML, text
kept as text (`svg.fonttype = none`), so class names can be searched and read. The drawn
data of every plot sits in SVG groups whose id starts with `series-`, which is how the
browser test tells a drawn plot from empty axes. A plot with nothing to draw yet is
replaced by a sentence saying why, never by empty axes.

Only names, counts and metrics enter the page: settings are never dumped into it, so no
key or token can leak through it.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from alpha.config import Settings
from alpha.history import ProjectHistory, read_history, rounds_table
from alpha.store import Store

REPORT_KEY = ("reports", "index.html")
"""Where a round leaves the report in the bucket: `{prefix}/reports/index.html`."""

COLORS = {"validation": "#1f77b4", "test": "#2ca02c", "random": "#d62728",
          "seed": "#9ecae1", "annotators": "#3182bd", "first": "#ff7f0e"}


@dataclass
class Plot:
    """One section of the page: a title, a caption that says what to read from it, and
    either an SVG or the reason there is nothing to draw yet."""

    name: str
    title: str
    caption: str
    svg: str | None = None
    empty: str | None = None


def _svg(figure: Figure, name: str) -> str:
    """The figure as inline SVG. The hash salt makes clip-path and marker ids unique per
    figure: several SVGs share one document, and a repeated id would clip the wrong plot."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"alpha-{name}"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight",
                       metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def _figure(width: float = 6.4, height: float = 3.4) -> tuple[Figure, Axes]:
    """A figure of its own (not pyplot's global one: rounds may draw in threads)."""
    figure = Figure(figsize=(width, height))
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(alpha=0.3)
    return figure, axes


def _tag(bars, gid: str) -> None:
    """Name each drawn bar `{gid}-{i}`: a bar container is not drawn itself, its patches are,
    and the SVG keeps a patch's gid as its group's id."""
    for index, bar in enumerate(bars):
        bar.set_gid(f"{gid}-{index}")


def _bars_by_round(axes: Axes, rounds: list[int], values: list[float], gid: str,
                   color: str) -> None:
    _tag(axes.bar([str(r) for r in rounds], values, color=color, width=0.6), gid)
    axes.margins(x=0.5 / len(rounds))  # one or two rounds: bars, not walls
    axes.set_xlabel("round")


# ---- the plots --------------------------------------------------------------------------
def learning_curve(history: ProjectHistory) -> Plot:
    metric = history.primary_metric
    plot = Plot("learning-curve", f"Learning curve ({metric})",
                f"The model's {metric} after each round against the labels it had: validation "
                "(held out from the labels), and on a test split with random selection "
                "beside it where a simulation measured them.")
    series = [("validation", [(p.labeled, p.metric) for p in history.rounds]),
              ("test", [(p.labeled, p.test_metric) for p in history.rounds]),
              ("random", [(p.labeled, p.test_metric) for p in history.baseline])]
    series = [(name, [(x, y) for x, y in points if y is not None]) for name, points in series]
    series = [(name, points) for name, points in series if points]
    if not series:
        plot.empty = ("no rounds yet" if not history.rounds else
                      f"no round has a validation {metric} yet (trained with "
                      "train.val_fraction = 0)")
        return plot
    figure, axes = _figure()
    labels = {"validation": f"validation {metric}", "test": f"test {metric} (alpha)",
              "random": f"test {metric} (random selection)"}
    for name, points in series:
        xs, ys = zip(*points, strict=True)
        (line,) = axes.plot(xs, ys, marker="o", color=COLORS[name], label=labels[name])
        line.set_gid(f"series-{name}")
    for point in history.rounds:
        if point.metric is not None:
            axes.annotate(f"r{point.number}", (point.labeled, point.metric),
                          textcoords="offset points", xytext=(4, 4), fontsize=8)
    missing = [p.round_id for p in history.rounds if p.metric is None]
    if missing:
        plot.caption += f" Without a validation value: {', '.join(missing)}."
    axes.set_xlabel("labeled images")
    axes.set_ylabel(metric)
    axes.legend(loc="lower right", fontsize=8)
    plot.svg = _svg(figure, plot.name)
    return plot


def labels_per_class(history: ProjectHistory) -> Plot:
    what = "images whose mask has the class" if history.kind != "classification" else "images"
    plot = Plot("labels-per-class", "Labels per class",
                f"Labeled {what} per class, from the seed set and from annotators.")
    if history.unreadable_masks:
        plot.caption += f" {history.unreadable_masks} masks could not be read and are left out."
    names = list(history.class_counts)
    if not any(sum(c.values()) for c in history.class_counts.values()):
        plot.empty = "no labels yet"
        return plot
    figure, axes = _figure(height=max(2.4, 0.3 * len(names) + 1))
    left = np.zeros(len(names))
    for source in ("seed", "annotators"):
        values = np.array([history.class_counts[n][source] for n in names], dtype=float)
        if values.sum():
            _tag(axes.barh(names, values, left=left, color=COLORS[source], label=source),
                 f"series-{source}")
        left += values
    axes.invert_yaxis()
    axes.set_xlabel(what)
    axes.legend(fontsize=8)
    plot.svg = _svg(figure, plot.name)
    return plot


def per_class_metric(history: ProjectHistory) -> Plot:
    metric = "IoU" if history.primary_metric == "miou" else "accuracy (recall)"
    plot = Plot("per-class-metric", f"Validation {metric} per class",
                "The latest model's value per class; the dot is the first model's.")
    models = [m for m in history.models if m.per_label]
    if not models:
        plot.empty = "no model with per-class validation values yet"
        return plot
    latest, first = models[-1], models[0]
    names = [n for n in history.labels if n in latest.per_label]
    names += [n for n in latest.per_label if n not in names]
    unmeasured = [n for n in history.labels if n not in latest.per_label]
    if unmeasured:
        plot.caption += f" No validation images of {', '.join(unmeasured)} (not shown)."
    figure, axes = _figure(height=max(2.4, 0.3 * len(names) + 1))
    _tag(axes.barh(names, [latest.per_label[n] for n in names], color=COLORS["validation"],
                   label=f"latest ({latest.version})"), "series-latest")
    if first is not latest:
        shown = [n for n in names if n in first.per_label]
        (dots,) = axes.plot([first.per_label[n] for n in shown], shown, "o",
                            color=COLORS["first"], label=f"first ({first.version})")
        dots.set_gid("series-first")
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.set_xlabel(metric)
    axes.legend(fontsize=8, loc="lower right")
    plot.svg = _svg(figure, plot.name)
    return plot


def agreement_per_round(history: ProjectHistory) -> Plot:
    plot = Plot("agreement", "Annotator agreement per round",
                "Mean agreement among the annotators of images annotated more than once, over "
                "the labels each round's pull brought in.")
    rounds = [p for p in history.rounds if p.pulled_agreement is not None]
    if not rounds:
        plot.empty = "no image annotated by more than one annotator yet"
        return plot
    figure, axes = _figure()
    _bars_by_round(axes, [p.number for p in rounds], [p.pulled_agreement for p in rounds],
                   "series-agreement", COLORS["annotators"])
    for index, point in enumerate(rounds):
        axes.annotate(f"{point.pulled_overlapped} images", (index, point.pulled_agreement),
                      ha="center", textcoords="offset points", xytext=(0, 3), fontsize=8)
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("mean agreement")
    plot.svg = _svg(figure, plot.name)
    return plot


def throughput(history: ProjectHistory) -> Plot:
    plot = Plot("throughput", "Annotator throughput",
                "Annotations finished per clock hour (UTC), per annotator, skips included.")
    rates = [f"{w.annotator}: {w.labels_per_work_hour:.0f} per hour of work "
             f"(mean {np.mean(w.lead_times):.0f} s each)"
             for w in history.annotators if w.labels_per_work_hour is not None]
    if rates:
        plot.caption += " From the time spent per annotation (lead time): " + "; ".join(rates) + "."
    if not history.per_hour:
        plot.empty = "no annotation with a time pulled yet"
        return plot
    hours = sorted({hour for hour, _ in history.per_hour})
    people = sorted({name for _, name in history.per_hour})
    figure, axes = _figure()
    bottom = np.zeros(len(hours))
    ticks = [h.strftime("%m-%d %H:00") for h in hours]
    for index, name in enumerate(people):
        values = np.array([history.per_hour.get((h, name), 0) for h in hours], dtype=float)
        _tag(axes.bar(ticks, values, bottom=bottom, label=name, color=f"C{index}", width=0.6),
             f"series-annotator-{index}")
        bottom += values
    axes.margins(x=0.5 / len(hours))
    axes.set_ylabel("annotations per hour")
    axes.tick_params(axis="x", labelrotation=30)
    axes.legend(fontsize=8)
    plot.svg = _svg(figure, plot.name)
    return plot


def queue_depth(history: ProjectHistory) -> Plot:
    plot = Plot("queue-depth", "Queue depth",
                "Tasks in the Label Studio project nobody had annotated or skipped, at the end "
                "of each round (after its push).")
    rounds = [p for p in history.rounds if p.queue_depth is not None]
    if not rounds:
        plot.empty = ("no rounds yet" if not history.rounds
                      else "no round recorded its queue depth yet")
        return plot
    figure, axes = _figure()
    (line,) = axes.plot([p.number for p in rounds], [p.queue_depth for p in rounds], marker="o",
                        color=COLORS["annotators"])
    line.set_gid("series-queue")
    axes.set_xticks([p.number for p in rounds])
    axes.set_xlabel("round")
    axes.set_ylabel("tasks waiting")
    axes.set_ylim(0, max(p.queue_depth for p in rounds) * 1.15 + 1)
    plot.svg = _svg(figure, plot.name)
    return plot


def changed_per_round(history: ProjectHistory) -> Plot:
    what = "pixels" if history.kind != "classification" else "choices"
    plot = Plot("changed", "What annotators changed of the pre-annotations",
                f"Mean share of the model's pre-annotation ({what}) the annotators changed, "
                "over the labels each round's pull brought in: the work pre-filling did not "
                "save.")
    rounds = [p for p in history.rounds if p.pulled_changed is not None]
    if not rounds:
        plot.empty = "no label compared with a pre-annotation yet"
        return plot
    figure, axes = _figure()
    _bars_by_round(axes, [p.number for p in rounds], [p.pulled_changed for p in rounds],
                   "series-changed", COLORS["first"])
    axes.set_ylim(0, 1)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylabel("changed")
    plot.svg = _svg(figure, plot.name)
    return plot


def model_versions(history: ProjectHistory) -> Plot:
    plot = Plot("model-versions", "Model versions",
                "Each saved model: when it was trained and how many labels it saw.")
    models = [m for m in history.models if m.created_at]
    if not models:
        plot.empty = "no model trained yet"
        return plot
    figure, axes = _figure()
    times = [datetime.fromisoformat(m.created_at) for m in models]  # type: ignore[arg-type]
    (line,) = axes.plot(times, [m.n_labels for m in models], marker="o", drawstyle="steps-post",
                        color=COLORS["validation"])
    line.set_gid("series-models")
    for when, model in zip(times, models, strict=True):
        axes.annotate(model.version, (when, model.n_labels), textcoords="offset points",
                      xytext=(4, -10), fontsize=7)
    axes.set_ylabel("labels seen")
    axes.set_ylim(0, max(m.n_labels for m in models) * 1.15 + 1)
    if len(times) == 1:  # one point: an hour either side, not matplotlib's years
        axes.set_xlim(times[0] - timedelta(hours=1), times[0] + timedelta(hours=1))
    figure.autofmt_xdate()
    plot.svg = _svg(figure, plot.name)
    return plot


PLOTS: tuple[Callable[[ProjectHistory], Plot], ...] = (
    learning_curve, labels_per_class, per_class_metric, agreement_per_round, throughput,
    queue_depth, changed_per_round, model_versions,
)


# ---- the page ---------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1400px;color:#222;padding:0 16px}
h1{margin-bottom:4px} .sub{color:#666;margin-top:0}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#f4f6f8;border-radius:8px;padding:10px 16px;min-width:140px}
.card b{display:block;font-size:1.4em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:20px}
figure.plot{margin:0;border:1px solid #e3e6ea;border-radius:8px;padding:12px;background:#fff}
figure.plot svg{width:100%;height:auto}
figcaption{color:#555;font-size:.9em} .empty{color:#999;font-style:italic;padding:40px 0}
table{border-collapse:collapse;margin:12px 0;font-size:.9em}
td,th{border-bottom:1px solid #e3e6ea;padding:4px 10px;text-align:left}
"""


def _card(label: str, value: object) -> str:
    return f'<div class="card">{html.escape(label)}<b>{html.escape(str(value))}</b></div>'


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values())
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(plot: Plot) -> str:
    inner = plot.svg if plot.svg is not None else (
        f'<div class="empty">{html.escape(plot.empty or "nothing to show")}</div>')
    drawn = "true" if plot.svg is not None else "false"
    return (f'<figure class="plot" id="{plot.name}" data-drawn="{drawn}">'
            f"<h2>{html.escape(plot.title)}</h2>{inner}"
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")


def render_report(history: ProjectHistory, now: datetime | None = None) -> str:
    """The report page for a project's history, as one HTML string."""
    now = now or datetime.now(UTC)
    latest = history.rounds[-1] if history.rounds else None
    metric = history.primary_metric
    value = "-" if latest is None or latest.metric is None else f"{latest.metric:.3f}"
    cards = "".join([
        _card("rounds", len(history.rounds)),
        _card("labeled images", history.status_counts.get("labeled", 0)),
        _card("skipped / retracted", f"{history.status_counts.get('skipped', 0)} / "
                                     f"{history.status_counts.get('retracted', 0)}"),
        _card(f"latest validation {metric}", value),
        _card("queue depth", "-" if latest is None or latest.queue_depth is None
              else latest.queue_depth),
        _card("model versions", len(history.models)),
    ])
    link = (f' &middot; <a href="{html.escape(history.project_url)}">Label Studio project</a>'
            if history.project_url else "")
    notes = []
    if not history.rounds:
        notes.append("<p><b>No rounds yet</b>: run <code>alpha round</code> to train the first "
                     "model and queue images for annotation.</p>")
    if history.unfinished_round:
        notes.append(f"<p>Round <code>{html.escape(history.unfinished_round)}</code> has not "
                     "finished (running, or crashed: the next round resumes it).</p>")
    if history.baseline_name:
        notes.append("<p>Test values come from a <b>simulation</b> (labels by the simulated "
                     f"annotator); random selection ran under prefix "
                     f"<code>{html.escape(history.baseline_name)}</code>.</p>")
    models = [{"version": m.version, "trained": m.created_at or "-", "labels": m.n_labels,
               f"validation {metric}": "-" if m.metric is None else f"{m.metric:.3f}"}
              for m in history.models]
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>alpha report: {html.escape(history.prefix)}</title><style>{CSS}</style>"
        "</head><body>"
        f"<h1>alpha report: {html.escape(history.prefix)}</h1>"
        f'<p class="sub">{html.escape(history.kind)} &middot; classes: '
        f"{html.escape(', '.join(history.labels))}{link} &middot; generated "
        f"{now:%Y-%m-%d %H:%M} UTC</p>"
        + "".join(notes) + f'<div class="cards">{cards}</div>'
        + '<div class="grid">' + "".join(_section(p(history)) for p in PLOTS) + "</div>"
        + "<h2>Rounds</h2>" + (_table(rounds_table(history)) or "<p>no rounds yet</p>")
        + "<h2>Model versions</h2>" + (_table(models) or "<p>no model trained yet</p>")
        + "</body></html>"
    )


def build_report(store: Store, settings: Settings) -> str:
    """The report page of the project in `settings`, from the bucket."""
    return render_report(read_history(store, settings))


def default_report_path(prefix: str) -> Path:
    """`./alpha-report-{prefix}.html`, the prefix made a plain file name."""
    return Path(f"alpha-report-{re.sub(r'[^A-Za-z0-9_.-]+', '-', prefix).strip('-')}.html")


def write_report(store: Store, settings: Settings, out: Path) -> Path:
    """Write the report page to `out` (folders made as needed); return its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(store, settings), encoding="utf-8")
    return out


def publish_report(store: Store, history: ProjectHistory) -> str:
    """Write the report page of `history` into the bucket at `{prefix}/reports/index.html`
    (the same page `alpha report` writes locally); return its s3:// URI."""
    key = store.key(*REPORT_KEY)
    store.put_bytes(key, render_report(history).encode("utf-8"),
                    content_type="text/html; charset=utf-8")
    return store.s3_uri(key)
