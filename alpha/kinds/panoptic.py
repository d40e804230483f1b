"""Panoptic segmentation: a class for every pixel, and an instance for every pixel of a
countable thing (the `panoptic` task kind).

task.labels are every class; `task.options.things` names the countable ones (car, person),
the others are stuff (road, sky), which have no instances. Annotators paint stuff with the
"stuff" brush (all regions of one stuff class are one segment) and each object as its own
region with the object tools, so a stuff class on an object region, or an object class on
the stuff brush, is refused with the fix. Pull stores a segment-id PNG (0 = unlabelled)
and the segment list in COCO panoptic's form, one segment per object and per stuff class
present. The metric is panoptic quality (PQ = SQ x RQ), for things and for stuff. The
model, objects, consensus and scores are shared with the instance kind
(alpha.kinds.objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from xml.sax.saxutils import quoteattr

import numpy as np
from pydantic import Field

from alpha.config import TrainSettings
from alpha.errors import ConfigError
from alpha.kinds import instance, objects, semantic
from alpha.kinds.base import BatchScores, KindOptions, PreAnnotation, Reading, Target, Trained
from alpha.kinds.training import load_checkpoint as load_model
from alpha.kinds.training import save_checkpoint as save_model

NAME = "panoptic"
DATA_KEY = "image"
TO_NAME = semantic.TO_NAME
FROM_NAME = semantic.FROM_NAME  # the objects' BrushLabels tag (thing classes)
POLYGON_NAME = semantic.POLYGON_NAME  # the objects' PolygonLabels tag
STUFF_NAME = "stuff"  # the stuff BrushLabels tag (stuff classes)
PRIMARY_METRIC = "pq"
MIN_LABELS = 2  # at least one stuff and one thing class
MAX_CLASSES = 255  # class indices 0..254 in the uint8 class map, 255 = unlabelled
MEASURES = instance.MEASURES
TRAIN_DEFAULTS: dict[str, Any] = dict(instance.TRAIN_DEFAULTS)


class Options(objects.ObjectOptions):
    """`[task.options]` of a panoptic task: the object options plus which labels are things."""

    things: list[str] = Field(
        default_factory=list,
        description="The countable classes (each object its own instance); every other label "
        "is stuff. Required: at least one, and at least one label left as stuff.")

    label_fields: ClassVar[tuple[str, ...]] = ("things",)


def _options(options: KindOptions | dict | None) -> Options:
    return Options.coerce(options)


def layout(labels: Sequence[str], options: KindOptions | dict | None) -> objects.Layout:
    """The labels as the model's classes, options.things the things, the rest stuff."""
    things = _options(options).things
    if not 2 <= len(labels) <= MAX_CLASSES:
        raise ConfigError(f"Panoptic segmentation takes 2 to {MAX_CLASSES} classes, got "
                          f"{len(labels)}: change task.labels.")
    unknown = [t for t in things if t not in labels]
    if unknown or not things or len(set(things)) == len(labels):
        raise ConfigError(
            "task.options.things must name at least one of task.labels and leave at least "
            "one as stuff"
            + (f" ({', '.join(map(repr, unknown))} not in task.labels)" if unknown else "")
            + ": set e.g. things = [\"car\", \"person\"].")
    return objects.Layout(labels=tuple(labels), classes=tuple(labels),
                          things=frozenset(labels.index(t) for t in things), background=None,
                          stuff_tag=STUFF_NAME)


def _tags(layout: objects.Layout) -> dict[tuple[str, str], Sequence[str]]:
    things = [layout.classes[c] for c in sorted(layout.things)]
    stuff = [layout.classes[c] for c in sorted(layout.stuff)]
    return {("brushlabels", STUFF_NAME): stuff, ("brushlabels", FROM_NAME): things,
            ("polygonlabels", POLYGON_NAME): things}


# ---- Label Studio ------------------------------------------------------------------------
def label_config(labels: list[str], options: KindOptions | None = None) -> str:
    """The image with a stuff brush (stuff classes), an object brush and object polygons
    (thing classes); each label keeps its colour in every tool."""
    lay = layout(labels, options)

    def tags(indices: Sequence[int]) -> str:
        return "".join(
            f"<Label value={quoteattr(labels[i])} "
            f"background={quoteattr(semantic.PALETTE[i % len(semantic.PALETTE)])}/>"
            for i in indices)

    stuff, things = tags(sorted(lay.stuff)), tags(sorted(lay.things))
    return (
        f'<View><Image name="{TO_NAME}" value="${DATA_KEY}" zoom="true"/>'
        '<Header value="Stuff (one region per class)" size="6"/>'
        f'<BrushLabels name="{STUFF_NAME}" toName="{TO_NAME}">{stuff}</BrushLabels>'
        '<Header value="Objects (one region per object)" size="6"/>'
        f'<BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{things}</BrushLabels>'
        f'<PolygonLabels name="{POLYGON_NAME}" toName="{TO_NAME}">{things}</PolygonLabels>'
        "</View>"
    )


def task_images(options: KindOptions | None = None) -> tuple[str, ...]:
    return ()


def pre_annotate(model: objects.ObjectUNet, temperature: float, images: np.ndarray,
                 sizes: Sequence[tuple[int, int]], labels: list[str],
                 options: KindOptions | None = None) -> list[PreAnnotation]:
    """A stuff region per stuff class and a region per object, at each image's own size."""
    return objects.pre_annotations(model, images, sizes, layout(labels, options),
                                   _options(options), FROM_NAME, TO_NAME, NAME)


def read_annotations(results: Sequence[Any], labels: list[str],
                     options: KindOptions | None = None, predicted: Any = None,
                     size: tuple[int, int] | None = None) -> Reading:
    """Segments from the finished annotations (alpha.kinds.objects.read_annotations)."""
    lay = layout(labels, options)
    return objects.read_annotations(results, lay, _tags(lay), TO_NAME, _options(options),
                                    predicted, size)


def result_from_target(target: Target, labels: list[str], size: tuple[int, int]) -> list[dict]:
    """A stuff-brush region per stuff segment and an object region per thing segment."""
    return objects.result_from_target(target, _stored_layout(target, labels), size, FROM_NAME,
                                      TO_NAME, NAME)


# ---- targets -------------------------------------------------------------------------------
def _stored_layout(target: Target, labels: list[str]) -> objects.Layout:
    """The layout a stored target was made under: its segments say which are things
    (`isthing`), so reading it needs no settings (an image may hold no object at all)."""
    things = {labels.index(s["label"]) for s in target.segments or []
              if s.get("isthing") and s.get("label") in labels}
    return objects.Layout(labels=tuple(labels), classes=tuple(labels), things=frozenset(things),
                          background=None, stuff_tag=STUFF_NAME)


def target_problem(target: Target, labels: list[str]) -> str | None:
    return objects.target_problem(target, _stored_layout(target, labels))


def training_targets(targets: Sequence[Target], labels: list[str], size: tuple[int, int]
                     ) -> np.ndarray:
    """`(n, 3, H, W)`: class (255 unlabelled), boundary, thing instance id."""
    width, height = size
    out = np.empty((len(targets), 3, height, width), dtype=np.int64)
    for i, target in enumerate(targets):  # each target says its own things
        out[i] = objects.training_targets([target], _stored_layout(target, labels), size)[0]
    return out


def simulated_target(truth: Target, labels: list[str], wrong: bool, draw: float,
                     rng: np.random.Generator) -> Target:
    return objects.simulated_target(truth, _stored_layout(truth, labels), wrong, draw, rng)


def input_size(train_settings: dict[str, Any]) -> tuple[int, int]:
    return semantic.input_size(train_settings)


# ---- the model ---------------------------------------------------------------------------
def train(images: np.ndarray, targets: np.ndarray, labels: list[str], settings: TrainSettings,
          options: KindOptions | None = None) -> Trained:
    return objects.train(images, targets, layout(labels, options), settings, _options(options))


def evaluate(model: objects.ObjectUNet, temperature: float, images: np.ndarray,
             targets: np.ndarray, labels: list[str], options: KindOptions | None = None
             ) -> dict[str, Any]:
    """pq (the primary metric), sq, rq, pq_things, pq_stuff, per-class PQ, ap50, miou."""
    return objects.evaluate(model, images, targets, objects.model_layout(model, labels),
                            _options(options))


def score_batch(model: objects.ObjectUNet, temperature: float, images: np.ndarray,
                options: KindOptions | None = None, *, samples: int = 0,
                gradients: bool = False, random_state: int = 0) -> BatchScores:
    labels = [str(i) for i in range(model.num_classes)]
    return objects.score_batch(model, temperature, images, objects.model_layout(model, labels),
                               _options(options), samples=samples, gradients=gradients,
                               random_state=random_state)


def save_checkpoint(trained: Trained, labels: list[str], settings: TrainSettings) -> bytes:
    return save_model(NAME, trained.model, trained.temperature, labels, settings)


def load_checkpoint(data: bytes) -> tuple[objects.ObjectUNet, float, list[str], dict]:
    return load_model(data, NAME, objects.ObjectUNet)  # type: ignore[return-value]


def seed_target(mask: np.ndarray, classes: dict[int, str] | None, labels: list[str],
                options: KindOptions | None, name: str) -> Target:
    """An ingested segment-id mask (0 = unlabelled) and its classes as a target; the ids of
    one stuff class merge into one segment."""
    return objects.seed_target(mask, classes, layout(labels, options),
                               _options(options).max_objects, name)
