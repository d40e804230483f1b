"""What `alpha status` and `alpha round` print: the project at a glance, for a terminal.

The bucket says what was labeled, trained and done in each round (alpha.history); Label
Studio says what waits in the queue now. When Label Studio cannot be reached the rest is
still shown, with the reason in place of the queue.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from alpha.history import ProjectHistory, rounds_table
from alpha.labelstudio import QueueState

LAST_ROUNDS = 5


def _fmt(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def labels_table(history: ProjectHistory) -> RenderableType:
    """Labels by status, and labeled images per class (seed set and annotators)."""
    table = Table("status", "images", title="Labels")
    for status in ("labeled", "skipped", "retracted"):
        table.add_row(status, str(history.status_counts.get(status, 0)))
    per_class = Table("class", "seed", "annotators", title="Labeled per class"
                      + (" (images with the class)" if history.kind != "classification" else ""))
    for name, counts in history.class_counts.items():
        per_class.add_row(name, str(counts["seed"]), str(counts["annotators"]))
    return Group(table, per_class)


def queue_table(queue: QueueState | str) -> RenderableType:
    """The queue's depth, its oldest task and the model versions of its pre-annotations;
    or why it could not be read."""
    if isinstance(queue, str):
        return Text(f"Queue: not available ({queue})", style="yellow")
    table = Table("waiting tasks", "oldest task", "pre-annotated by", title="Queue")
    versions = ", ".join(f"{v}: {n}" for v, n in queue.by_model_version.items()) or "-"
    oldest = (f"{queue.oldest_task_id} ({queue.oldest_created_at})"
              if queue.oldest_task_id is not None else "-")
    table.add_row(str(queue.depth), oldest, versions)
    return table


def model_table(history: ProjectHistory) -> RenderableType:
    """The latest model: version, when, labels seen, primary metric and per-class values."""
    if not history.models:
        return Text("Model: none trained yet (run `alpha round`).")
    model = history.models[-1]
    table = Table("version", "trained", "labels", f"validation {history.primary_metric}",
                  "per class", title="Latest model")
    names = [n for n in history.labels if n in model.per_label]  # in the task's class order
    per_class = ", ".join(f"{name} {model.per_label[name]:.2f}" for name in names)
    table.add_row(model.version, model.created_at or "-", str(model.n_labels),
                  _fmt(model.metric) if model.metric is not None
                  else "not measured (no validation split)", per_class or "-")
    return table


def rounds_view(history: ProjectHistory) -> RenderableType:
    """The last rounds, and whether one is unfinished (running now, or crashed)."""
    parts: list[RenderableType] = []
    rows = rounds_table(history)[-LAST_ROUNDS:]
    if rows:
        table = Table(*rows[0], title=f"Last rounds ({len(rows)} of {len(history.rounds)})")
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        parts.append(table)
    else:
        parts.append(Text("Rounds: no rounds yet (run `alpha round`)."))
    if history.unfinished_round:
        parts.append(Text(f"Round {history.unfinished_round} is unfinished: running now, or it "
                          "crashed and the next `alpha round` resumes it.", style="yellow"))
    else:
        parts.append(Text("No round is running."))
    return Group(*parts)


def status_view(history: ProjectHistory, queue: QueueState | str) -> RenderableType:
    """Everything `alpha status` prints."""
    title = Text(f"alpha: {history.prefix} ({history.kind}; classes "
                 f"{', '.join(history.labels)})", style="bold")
    return Group(title, labels_table(history), queue_table(queue), model_table(history),
                 rounds_view(history))


def describe_round(summary: dict[str, Any]) -> str:
    """A round's summary in a few lines for people (what `alpha round` prints)."""
    labels, model = summary["labels"], summary["model"]
    metric = model.get("primary_metric") or "accuracy"
    value = (model.get("metrics") or {}).get(metric)
    pull, selection, push = summary["pull"], summary["selection"], summary["push"]
    queue = summary.get("queue") or {}
    lines = [
        f"{summary['round']} done.",
        f"  labels: {labels['labeled']} (skipped {labels['skipped']}, retracted "
        f"{labels['retracted']}); this round pulled {pull['new']} new, {pull['updated']} "
        f"updated",
        f"  model {model['version']} ({'trained now' if model['trained'] else 'kept'}): "
        f"validation {metric} "
        + (f"{value:.3f}" if value is not None else "not measured (no validation split)"),
        f"  selected {selection['selected']} of {selection['pool_size']} unlabeled images by "
        f"{selection['strategy']}; pushed {push['created']} tasks"
        + (f"; {queue['depth']} waiting in the queue" if "depth" in queue else ""),
    ]
    if pull.get("problems"):
        lines.append(f"  {len(pull['problems'])} annotations could not be read: see "
                     "`alpha pull`")
    lines.append(f"  label them: {summary['project_url']}")
    return "\n".join(lines)
