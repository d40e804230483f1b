"""A SIMULATED annotator: answers Label Studio tasks from known ground truth.

This stands in for people so the whole loop (push, annotate, pull, retrain) can run in
tests, demos and benchmarks without anyone clicking. It is never a real annotator and says
so everywhere: its report is a `SimulationReport` with `simulated=True`, and it annotates as
a dedicated Label Studio user (`simulator@alpha.local`, "Simulated annotator"), so the UI
shows who made each annotation and `pull` marks the resulting label records
`simulated=True`.

Real annotators make mistakes and skip hard images; `error_rate` and `skip_rate` imitate
that, drawn from a seeded generator so a run can be repeated exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from alpha.labelstudio import SIMULATOR_EMAIL, LabelStudioProject


@dataclass
class SimulationReport:
    """What the simulated annotator did (all of it simulated, none of it human)."""

    simulated: bool = True
    annotator: str = SIMULATOR_EMAIL
    annotated: int = 0
    wrong: int = 0
    skipped: int = 0
    no_truth: int = 0
    task_ids: list[int] = field(default_factory=list)
    wrong_image_ids: list[str] = field(default_factory=list)


def simulate_annotations(
    project: LabelStudioProject,
    truth: Mapping[str, str],
    error_rate: float = 0.0,
    skip_rate: float = 0.0,
    random_state: int = 0,
    limit: int | None = None,
) -> SimulationReport:
    """SIMULATION: annotate the project's unannotated tasks from `truth` (image_id -> label).

    Each task is skipped (a cancelled annotation) with probability `skip_rate`, otherwise
    labeled, wrongly with probability `error_rate` (a uniformly drawn other label). Tasks whose
    image has no truth are left alone and counted in `no_truth`. At most `limit` tasks are
    answered (skips included), in the order annotators are served.
    """
    if not 0.0 <= error_rate <= 1.0 or not 0.0 <= skip_rate <= 1.0:
        raise ValueError("error_rate and skip_rate must be between 0 and 1")
    rng = np.random.default_rng(random_state)
    labels = project.labels
    kind = project.kind
    user_id = project.simulator_user_id()
    report = SimulationReport()
    for task_id, image_id in project.unannotated_tasks().items():
        if limit is not None and len(report.task_ids) >= limit:
            break
        true_label = truth.get(image_id) if image_id is not None else None
        if true_label is None:
            report.no_truth += 1
            continue
        skip_draw, error_draw, choice_draw = rng.random(3)
        if skip_draw < skip_rate:
            project.create_annotation(task_id, [], was_cancelled=True, completed_by=user_id)
            report.skipped += 1
        else:
            label = true_label
            others = [name for name in labels if name != true_label]
            if others and error_draw < error_rate:
                label = others[int(choice_draw * len(others))]
                report.wrong += 1
                report.wrong_image_ids.append(str(image_id))
            project.create_annotation(task_id, kind.result_from_label(label),
                                      completed_by=user_id)
            report.annotated += 1
        report.task_ids.append(task_id)
    return report
