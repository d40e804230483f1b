"""Instance segmentation: a mask for every object (the `instance` task kind).

task.labels are the object classes ("nucleus", or "shirt", "bag", ...); every pixel that is
in no object is background, which is a label too ("nothing here"), so an image with no
object is a valid label (a seed mask of zeros; in Label Studio, an empty annotation is read
as one only where the task's pre-annotation says the image size: an empty result names
none). Annotators paint (or outline) each object as its own region, with
its class; pull keeps objects apart: an instance-id PNG (uint16, 0 = background) beside the
record and a segment list [{"id": k, "label": class}] in it. What is shared with the
panoptic kind (the model, objects, matching, consensus, scores, metrics) is in
alpha.kinds.objects; this module fixes the layout and the labeling page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from alpha.config import TrainSettings
from alpha.errors import ConfigError
from alpha.kinds import objects, semantic
from alpha.kinds.base import BatchScores, KindOptions, PreAnnotation, Reading, Target, Trained
from alpha.kinds.training import load_checkpoint as load_model
from alpha.kinds.training import save_checkpoint as save_model
from alpha.strategies.reductions import REDUCTIONS
from alpha.strategies.scores import SINGLE_MEASURES

NAME = "instance"
DATA_KEY = "image"
TO_NAME = semantic.TO_NAME
FROM_NAME = semantic.FROM_NAME  # the BrushLabels tag: one region per object
POLYGON_NAME = semantic.POLYGON_NAME
PRIMARY_METRIC = "ap50"
MIN_LABELS = 1
MAX_CLASSES = 254  # + background in one uint8 class map, 255 = unlabelled
MEASURES: tuple[str, ...] = (
    *SINGLE_MEASURES,
    *(f"{m}:{how}" for m in SINGLE_MEASURES for how in REDUCTIONS),
    *(f"{m}:{how}" for m in objects.OBJECT_MEASURES for how in objects.AGGREGATES),
)
"""Plain names: the image score (pixel and object parts blended); "margin:topk": a pixel
measure under a reduction; "objects:max": per-object uncertainty under an aggregate."""
TRAIN_DEFAULTS: dict[str, Any] = {
    "image_size": 64, "widths": (16, 32, 64), "epochs": 40, "min_steps": 150,
    "batch_size": 8, "learning_rate": 1e-2, "augment": True,
}
"""Objects need the pixels: tiles of 64 x 64 at their own size (no downscaling of nuclei a
few pixels wide), a 3-level U-Net, AdamW one-cycle to 1e-2, flips, max(40 epochs, 150
steps)."""


class Options(objects.ObjectOptions):
    """`[task.options]` of an instance segmentation task (alpha.kinds.objects.ObjectOptions)."""

    label_fields: ClassVar[tuple[str, ...]] = ()


def _options(options: KindOptions | dict | None) -> Options:
    return Options.coerce(options)


def layout(labels: Sequence[str]) -> objects.Layout:
    """Background (class 0, the pixels of no object) and the labels as things 1..n."""
    if not 1 <= len(labels) <= MAX_CLASSES:
        raise ConfigError(f"Instance segmentation takes 1 to {MAX_CLASSES} object classes, got "
                          f"{len(labels)}: change task.labels.")
    if "background" in labels:
        raise ConfigError("task.labels of an instance task name the object classes; "
                          "'background' is implied (every pixel in no object): remove it.")
    return objects.Layout(labels=tuple(labels), classes=("background", *labels),
                          things=frozenset(range(1, len(labels) + 1)), background=0)


def _tags(labels: Sequence[str]) -> dict[tuple[str, str], Sequence[str]]:
    return {("brushlabels", FROM_NAME): labels, ("polygonlabels", POLYGON_NAME): labels}


# ---- Label Studio ------------------------------------------------------------------------
def label_config(labels: list[str], options: KindOptions | None = None) -> str:
    """The semantic kind's page (brush and polygon labels of the classes); here every region
    is one object."""
    layout(labels)
    return semantic.label_config(labels)


def task_images(options: KindOptions | None = None) -> tuple[str, ...]:
    return ()


def pre_annotate(model: objects.ObjectUNet, temperature: float, images: np.ndarray,
                 sizes: Sequence[tuple[int, int]], labels: list[str],
                 options: KindOptions | None = None) -> list[PreAnnotation]:
    """One brush region per predicted object at each image's own size, scored by the
    object's confidence."""
    return objects.pre_annotations(model, images, sizes, layout(labels), _options(options),
                                   FROM_NAME, TO_NAME, NAME)


def read_annotations(results: Sequence[Any], labels: list[str],
                     options: KindOptions | None = None, predicted: Any = None,
                     size: tuple[int, int] | None = None) -> Reading:
    """Objects from the finished annotations (alpha.kinds.objects.read_annotations: one
    object per region, later regions win shared pixels, several annotators matched by IoU)."""
    return objects.read_annotations(results, layout(labels), _tags(labels), TO_NAME,
                                    _options(options), predicted, size)


def result_from_target(target: Target, labels: list[str], size: tuple[int, int]) -> list[dict]:
    return objects.result_from_target(target, layout(labels), size, FROM_NAME, TO_NAME, NAME)


# ---- targets -------------------------------------------------------------------------------
def target_problem(target: Target, labels: list[str]) -> str | None:
    return objects.target_problem(target, layout(labels))


def training_targets(targets: Sequence[Target], labels: list[str], size: tuple[int, int]
                     ) -> np.ndarray:
    """`(n, 3, H, W)`: class, boundary and instance id (alpha.kinds.objects)."""
    return objects.training_targets(targets, layout(labels), size)


def simulated_target(truth: Target, labels: list[str], wrong: bool, draw: float,
                     rng: np.random.Generator) -> Target:
    """SIMULATION: the truth, or a missed or grown object (alpha.kinds.objects)."""
    return objects.simulated_target(truth, layout(labels), wrong, draw, rng)


def input_size(train_settings: dict[str, Any]) -> tuple[int, int]:
    return semantic.input_size(train_settings)


# ---- the model ---------------------------------------------------------------------------
def train(images: np.ndarray, targets: np.ndarray, labels: list[str], settings: TrainSettings,
          options: KindOptions | None = None) -> Trained:
    """The object U-Net (alpha.kinds.objects.train), measured by mask AP."""
    return objects.train(images, targets, layout(labels), settings, _options(options))


def evaluate(model: objects.ObjectUNet, temperature: float, images: np.ndarray,
             targets: np.ndarray, labels: list[str], options: KindOptions | None = None
             ) -> dict[str, Any]:
    """ap50 (the primary metric), ap (0.5:0.95), count_error, pq, miou (objects.evaluate)."""
    return objects.evaluate(model, images, targets, layout(labels), _options(options))


def score_batch(model: objects.ObjectUNet, temperature: float, images: np.ndarray,
                options: KindOptions | None = None, *, samples: int = 0,
                gradients: bool = False, random_state: int = 0) -> BatchScores:
    """Pixel and object uncertainties per image (alpha.kinds.objects.score_batch)."""
    labels = [str(i) for i in range(model.num_classes)]  # names do not matter for scores
    return objects.score_batch(model, temperature, images, layout(labels), _options(options),
                               samples=samples, gradients=gradients, random_state=random_state)


def save_checkpoint(trained: Trained, labels: list[str], settings: TrainSettings) -> bytes:
    return save_model(NAME, trained.model, trained.temperature, labels, settings)


def load_checkpoint(data: bytes) -> tuple[objects.ObjectUNet, float, list[str], dict]:
    return load_model(data, NAME, objects.ObjectUNet)  # type: ignore[return-value]


def seed_target(mask: np.ndarray, classes: dict[int, str] | None, labels: list[str],
                options: KindOptions | None, name: str) -> Target:
    """An ingested instance-id mask (0 = background) and its classes as a target."""
    return objects.seed_target(mask, classes, layout(labels), _options(options).max_objects, name)
