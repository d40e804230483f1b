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

from alpha.kinds.base import Target
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
    truth: Mapping[str, str | Target],
    error_rate: float = 0.0,
    skip_rate: float = 0.0,
    random_state: int = 0,
    limit: int | None = None,
) -> SimulationReport:
    """SIMULATION: annotate the project's unannotated tasks from `truth` (image_id -> label
    name, or the kind's Target: a ground-truth mask for segmentation).

    Each task is skipped (a cancelled annotation) with probability `skip_rate`, otherwise
    labeled, with a mistake with probability `error_rate` (the kind's: a uniformly drawn
    other label; mask edges moved by a few pixels). Tasks whose
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
        found = truth.get(image_id) if image_id is not None else None
        if found is None:
            report.no_truth += 1
            continue
        true = Target(label=found) if isinstance(found, str) else found
        skip_draw, error_draw, choice_draw = rng.random(3)
        if skip_draw < skip_rate:
            project.create_annotation(task_id, [], was_cancelled=True, completed_by=user_id)
            report.skipped += 1
        else:
            answer = kind.simulated_target(true, labels, error_draw < error_rate, choice_draw,
                                           rng)
            if answer is not true:
                report.wrong += 1
                report.wrong_image_ids.append(str(image_id))
            size = (0, 0) if answer.mask is None else answer.mask.shape[::-1]
            project.create_annotation(task_id, kind.result_from_target(answer, labels, size),
                                      completed_by=user_id)
            report.annotated += 1
        report.task_ids.append(task_id)
    return report
