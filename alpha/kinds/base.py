"""The interface every task kind implements, and the values that cross it.

A kind owns everything whose shape differs between classification and the segmentation
kinds: the model, its loss and metric, the Label Studio label config, the conversion between
Label Studio results and training targets, the pre-annotation a task carries, and the
reduction of a pixel (or object) map to one score per image. The loop owns the order of the
steps, the bucket, Label Studio's queue and the strategies, and never looks inside a target
or a prediction: it only moves the values below.

A kind is a module whose top-level names satisfy `Kind` (a module can implement a Protocol),
registered by name in `alpha.kinds.KIND_MODULES`. `BatchScores` (what scoring keeps of each
image) is defined beside the strategies that read it and re-exported here.

Optional names: `MIN_LABELS` (how many task.labels the kind needs; 2 where absent) and
`seed_target(mask, classes, labels, options, name)` for kinds whose ingested masks hold
segment ids named by a classes CSV (instance, panoptic) rather than class indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import numpy as np
from pydantic import BaseModel, ConfigDict

from alpha.strategies.scores import BatchScores

if TYPE_CHECKING:  # torch is imported by the kinds themselves, not by settings validation
    from torch import nn


__all__ = ["BatchScores", "Kind", "KindOptions", "PreAnnotation", "Reading", "Target", "Trained"]


class KindOptions(BaseModel):
    """A kind's own settings, read from `[task.options]`; kinds subclass it (no options: this).

    Unknown keys are refused so a misspelt option is named at start, not silently ignored.
    """

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def coerce(cls, options: KindOptions | dict | None) -> Self:
        """These options from whatever a caller holds: this model itself, another kind's
        options or a plain dict (validated), or None (the defaults)."""
        if isinstance(options, cls):
            return options
        if isinstance(options, KindOptions):
            options = options.model_dump()
        return cls.model_validate(options or {})


@dataclass
class Trained:
    """A trained model in eval mode, its calibration temperature (1.0 where a kind does not
    calibrate) and its validation metrics (the kind's PRIMARY_METRIC among them)."""

    model: nn.Module
    temperature: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    """A kind-owned training target as it is stored: a label name for choice kinds, or a
    mask `(H, W)` at the image's own size (uint8 class indices for semantic segmentation,
    with the kind's IGNORE value for "unlabelled"; instance ids for instance kinds, with
    `segments` naming each id's class). Masks live as PNGs beside the label record."""

    label: str | None = None
    mask: np.ndarray | None = None
    segments: list[dict[str, Any]] | None = None


@dataclass
class Reading:
    """What the annotations of one task amount to.

    target: the consensus target. index: which annotation's work is recorded (its annotator
    and id go into the record). votes/agreement: only with several finished annotations
    (agreement in [0, 1]: the winning share of votes for choices, mean pairwise IoU for
    masks). changed: the fraction of the pre-annotation the annotator changed (pixels whose
    class changed for masks; 0 or 1 for a choice), None without a pre-annotation.
    """

    target: Target
    index: int
    votes: dict[str, int] | None = None
    agreement: float | None = None
    changed: float | None = None


@dataclass
class PreAnnotation:
    """A Label Studio prediction's content for one task: its results (choices, brush RLE
    regions, polygons, each with its own score) and the task's score, the model's confidence
    (lower = more uncertain; Label Studio's uncertainty sampling serves the lowest first)."""

    result: list[dict[str, Any]]
    score: float
    images: dict[str, bytes] = field(default_factory=dict)
    """Extra PNG images the task shows beside its image, by task data key (the label
    config's `<Image value="$key">`), e.g. the semantic kind's uncertainty map. The loop
    stores each in the bucket and puts its `s3://` URI in the task's data."""


class Kind(Protocol):
    """What the loop asks of a task kind. Images are float32 `(n, C, H, W)` in [0, 1] at the
    model's input size; `labels` are the task's class names in index order."""

    NAME: str
    DATA_KEY: str  # the task data field holding the image URL
    PRIMARY_METRIC: str  # the metric in Trained.metrics that says how good a model is
    MEASURES: tuple[str, ...]  # the score names score_batch returns without samples
    TRAIN_DEFAULTS: dict[str, Any]  # TrainSettings values where [train] sets none
    Options: ClassVar[type[KindOptions]]

    def label_config(self, labels: list[str], options: KindOptions) -> str:
        """The Label Studio labeling interface for these classes."""
        ...

    def task_images(self, options: KindOptions) -> tuple[str, ...]:
        """Task data keys of the extra images the label config shows beside the image (each
        PreAnnotation.images fills them; a task made without a prediction, such as a
        restored labeled task, shows its own image there)."""
        ...

    def input_size(self, train_settings: dict[str, Any]) -> tuple[int, int]:
        """(width, height) the model takes, from the train settings it was trained with."""
        ...

    def target_problem(self, target: Target, labels: list[str]) -> str | None:
        """Why this stored target cannot train a model (None: it can)."""
        ...

    def training_targets(
        self, targets: Sequence[Target], labels: list[str], size: tuple[int, int]
    ) -> np.ndarray:
        """Stored targets as one training array: `(n,)` class indices for classification,
        `(n, H, W)` at the model's `size` (width, height) for masks."""
        ...

    def train(
        self, images: np.ndarray, targets: np.ndarray, labels: list[str], settings: Any,
        options: KindOptions,
    ) -> Trained:
        """Train, measure on a held-out split, return the model (eval mode) and metrics."""
        ...

    def evaluate(
        self, model: nn.Module, temperature: float, images: np.ndarray, targets: np.ndarray,
        labels: list[str], options: KindOptions | None = None,
    ) -> dict[str, Any]:
        """The kind's metrics (PRIMARY_METRIC first) of a model on labeled images, read the
        way the task's `options` say (e.g. how objects are decoded)."""
        ...

    def save_checkpoint(self, trained: Trained, labels: list[str], settings: Any) -> bytes:
        ...

    def load_checkpoint(self, data: bytes) -> tuple[nn.Module, float, list[str], dict]:
        """(model in eval mode, temperature, labels, train settings); DataError if unreadable."""
        ...

    def score_batch(
        self, model: nn.Module, temperature: float, images: np.ndarray, options: KindOptions,
        *, samples: int = 0, gradients: bool = False, random_state: int = 0,
    ) -> BatchScores:
        """Scores, embeddings and predicted classes of one batch. `samples` >= 2 draws that
        many Monte-Carlo dropout samples (the same masks for every batch of one seed) and adds
        the Bayesian measures; `gradients` adds BADGE's gradient embeddings."""
        ...

    def pre_annotate(
        self, model: nn.Module, temperature: float, images: np.ndarray,
        sizes: Sequence[tuple[int, int]], labels: list[str], options: KindOptions,
    ) -> list[PreAnnotation]:
        """The model's guess for each image as Label Studio results, at each image's own
        pixel size `sizes[i]` = (width, height) (Label Studio draws masks at that size)."""
        ...

    def result_from_target(
        self, target: Target, labels: list[str], size: tuple[int, int]
    ) -> list[dict[str, Any]]:
        """Label Studio results that say `target` (restored tasks, the simulated annotator)."""
        ...

    def read_annotations(
        self, results: Sequence[Any], labels: list[str], options: KindOptions,
        predicted: Any = None, size: tuple[int, int] | None = None,
    ) -> Reading:
        """One target from the finished annotations' results (oldest first; at least one),
        compared with the task's pre-annotation results `predicted` where it had one.
        `size` is the image's (width, height) where the task says it: what a result with
        no region covers, for kinds where that means something (no object).
        AnnotationError names what does not fit the label config."""
        ...

    def simulated_target(
        self, truth: Target, labels: list[str], wrong: bool, draw: float,
        rng: np.random.Generator,
    ) -> Target:
        """SIMULATION: what the simulated annotator answers for ground truth `truth`;
        `wrong` asks for a plausible mistake (another label; edges moved a few pixels)."""
        ...
