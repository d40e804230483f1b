"""What the instance and panoptic kinds share: segment targets, the object model, turning
its output into objects, object regions in Label Studio, object consensus and object scores.

A target is a segment mask: uint16 ids `(H, W)` at the image's own size, 0 = no segment,
and `segments` = [{"id": k, "label": name}, ...] naming each id's class (COCO panoptic's
segment list, by label name). For the instance kind id-0 pixels are background (a label:
"no object here"); for the panoptic kind they are unlabelled, and each stuff class present
is one segment too. A `Layout` says how a kind's labels map to the model's semantic classes
and which of them are countable things.

The model is the semantic kind's U-Net with one more output channel: a boundary logit per
pixel (the inner edge of every thing segment). Objects are the connected components of the
thing pixels away from boundaries, grown back over their thing pixels by a watershed on
the boundary probability (scikit-image), each taking the thing class most of its
probability mass says. That is small enough to train from scratch on 2 cores, and it
separates touching objects that a plain class map merges.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from alpha.config import TrainSettings
from alpha.consensus import majority_vote, pixel_vote
from alpha.errors import AnnotationError, DataError
from alpha.kinds.base import BatchScores, KindOptions, PreAnnotation, Reading, Target, Trained
from alpha.kinds.semantic import UNet, holdout_split
from alpha.kinds.training import fit_one_cycle, training_context
from alpha.masks import Region, brush_region, mask_problem, read_regions
from alpha.strategies.diversity import gradient_embeddings
from alpha.strategies.measures import MEASURES as PIXEL_MEASURES
from alpha.strategies.reductions import REDUCTIONS, Reduction, inverse_frequency_weights, reduce_map
from alpha.strategies.scores import SINGLE_MEASURES

IGNORE = 255
"""A class-map pixel no segment labels (panoptic void); never trains, never counts."""
MAX_OBJECTS = 1000
"""The most thing segments one image may hold (ids are uint16; a mask with more is surely
not an instance mask but a photo or a class map)."""
AGGREGATES: tuple[str, ...] = ("mean", "max", "sum")
OBJECT_MEASURES: tuple[str, ...] = ("objects", "object_class", "object_boundary",
                                    "object_existence")
_FIX = "fix the annotation in Label Studio"


class ObjectOptions(KindOptions):
    """`[task.options]` the instance and panoptic kinds share."""

    reduction: Reduction = Field(
        default="topk", description="How the pixel uncertainty map becomes the pixel part of "
        "the image score: mean, topk, class_weighted, max or sum (as for semantic tasks).")
    top_percent: float = Field(default=10.0, gt=0, le=100, description="topk's share of pixels.")
    aggregate: Literal["mean", "max", "sum"] = Field(
        default="mean", description="How per-object uncertainties become the object part of "
        "the image score: mean (unsure objects on average), max (the worst object), sum "
        "(many unsure objects).")
    object_weight: float = Field(
        default=0.5, ge=0, le=1, description="The object part's weight in the image score; "
        "the pixel part gets 1 - object_weight.")
    min_object_pixels: int = Field(
        default=4, ge=1, description="Predicted objects smaller than this are dropped (noise).")
    max_objects: int = Field(
        default=500, ge=1, le=MAX_OBJECTS,
        description="The most objects one image may hold, in a label or a prediction.")
    boundary_threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Boundary probability above which a thing pixel "
        "separates objects instead of seeding one.")
    score_batch_size: int = Field(default=16, ge=1,
                                  description="Images per forward pass when scoring.")


@dataclass(frozen=True)
class Layout:
    """How a kind's task labels map to the model's semantic classes.

    labels: the task's labels. classes: the model's semantic classes in channel order.
    things: indices into `classes` of countable things. background: the class of pixels in
    no segment (the instance kind's "background", index 0), or None where they are
    unlabelled (panoptic). stuff_tag: the Label Studio tool stuff is painted with (None:
    there is no stuff to paint)."""

    labels: tuple[str, ...]
    classes: tuple[str, ...]
    things: frozenset[int]
    background: int | None
    stuff_tag: str | None = None

    def class_of(self, label: str) -> int:
        return self.classes.index(label)

    @property
    def stuff(self) -> frozenset[int]:
        return frozenset(range(len(self.classes))) - self.things


# ---- targets ---------------------------------------------------------------------------------
def segment(ident: int, label: str, layout: Layout) -> dict[str, Any]:
    """One entry of a segment list: its id, class name, and whether it is a thing (an
    object) or stuff, so a stored target says it without the settings it was made under."""
    return {"id": int(ident), "label": label, "isthing": layout.class_of(label) in layout.things}


def target_problem(target: Target, layout: Layout, max_objects: int = MAX_OBJECTS) -> str | None:
    """Why a stored segment target cannot train (None: it can)."""
    problem = mask_problem(target.mask, "segment ids")
    if problem is not None:
        return problem
    mask = np.asarray(target.mask)
    if target.segments is None:
        return "has a mask but no segment list naming each id's class"
    seen: set[int] = set()
    things = 0
    for segment in target.segments:
        ident, label = segment.get("id"), segment.get("label")
        if not isinstance(ident, int) or isinstance(ident, bool) or not 0 < ident <= 65535:
            return f"has a segment with id {ident!r}, not a positive integer"
        if ident in seen:
            return f"names segment id {ident} twice"
        seen.add(ident)
        if label not in layout.labels:
            return f"has segment {ident} of class {label!r}, which is not one of task.labels"
        things += layout.class_of(label) in layout.things
    present = {int(v) for v in np.unique(mask)} - {0}
    unnamed = sorted(present - seen)
    if unnamed:
        shown = ", ".join(map(str, unnamed[:8])) + (", ..." if len(unnamed) > 8 else "")
        return f"has mask ids {shown} that no segment names (objects without a class)"
    if things > max_objects:
        return f"has {things} objects, more than the limit of {max_objects} (options.max_objects)"
    if layout.background is None and not present:
        return "has a mask that labels no pixel (no segment)"
    return None


def seed_target(mask: np.ndarray, classes: dict[int, str] | None, layout: Layout,
                max_objects: int, name: str) -> Target:
    """The target a segment-id mask (0 = no segment) and its classes {id: label} make, for
    ingest. Stuff ids of one class merge into one segment (stuff has no instances).
    AnnotationError naming `name` and the fix: ids without a class, more objects than
    `max_objects`, no classes at all."""
    mask = np.asarray(mask)
    present = [int(v) for v in np.unique(mask) if v]
    if present and not classes:
        raise AnnotationError(
            f"Mask {name!r} holds {len(present)} segment ids but no class for any: add "
            f"`{name},id,label` rows to classes.csv in the mask folder.")
    classes = classes or {}
    unnamed = [i for i in present if i not in classes]
    if unnamed:
        shown = ", ".join(map(str, unnamed[:8])) + (", ..." if len(unnamed) > 8 else "")
        raise AnnotationError(
            f"Mask {name!r} holds ids {shown} that classes.csv gives no class: add a "
            f"`{name},id,label` row for each (an object without a class cannot train).")
    things = [i for i in present if layout.class_of(classes[i]) in layout.things]
    if len(things) > max_objects:
        raise AnnotationError(
            f"Mask {name!r} holds {len(things)} objects, more than the limit of {max_objects} "
            "(task.options.max_objects): check that it is an instance-id mask, or raise the "
            "limit.")
    if layout.background is None and not present:
        raise AnnotationError(f"Mask {name!r} labels no pixel (every id is 0, unlabelled): "
                              "label some pixels, or delete the mask to leave its image in "
                              "the pool.")
    ids = np.zeros(mask.shape, dtype=np.uint16)
    segments: list[dict[str, Any]] = []
    stuff_ids: dict[str, int] = {}
    for old in present:
        label = classes[old]
        if layout.class_of(label) in layout.things or label not in stuff_ids:
            segments.append(segment(len(segments) + 1, label, layout))
            if layout.class_of(label) not in layout.things:
                stuff_ids[label] = len(segments)
        ids[mask == old] = stuff_ids.get(label, len(segments))
    return Target(mask=ids, segments=segments)


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An id mask at `size` (width, height) by nearest neighbour at pixel centres (ids must
    not blend); the dtype is kept."""
    ids = np.asarray(ids)
    width, height = int(size[0]), int(size[1])
    if ids.shape == (height, width):
        return ids
    rows = np.minimum(((np.arange(height) + 0.5) * ids.shape[0] / height).astype(np.intp),
                      ids.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * ids.shape[1] / width).astype(np.intp),
                      ids.shape[1] - 1)
    return ids[rows[:, None], cols[None, :]]


def class_lookup(segments: Sequence[dict], layout: Layout, max_id: int) -> np.ndarray:
    """`(max_id + 1,)` uint8: the class of each id (id 0 and unnamed ids: the background
    class, or IGNORE where there is none)."""
    fill = IGNORE if layout.background is None else layout.background
    lut = np.full(max_id + 1, fill, dtype=np.uint8)
    for segment in segments:
        if segment["id"] <= max_id:
            lut[segment["id"]] = layout.class_of(segment["label"])
    return lut


def training_targets(targets: Sequence[Target], layout: Layout, size: tuple[int, int]
                     ) -> np.ndarray:
    """`(n, 3, H, W)` int64 at the model's `size` (width, height), per image: the semantic
    class of every pixel (IGNORE where unlabelled), the boundary (1 on the inner edge of
    each thing segment: pixels touching another id), and the thing instance id (0 for
    background and stuff), from ids resized by nearest neighbour."""
    from skimage.segmentation import find_boundaries

    width, height = size
    out = np.empty((len(targets), 3, height, width), dtype=np.int64)
    for i, target in enumerate(targets):
        if target.mask is None or target.segments is None:
            raise ValueError(f"target {i} has no segment mask")
        ids = resize_ids(np.asarray(target.mask), size).astype(np.int64)
        lut = class_lookup(target.segments, layout, int(ids.max(initial=0)))
        classes = lut[ids]
        thing_ids = np.where(np.isin(classes, list(layout.things)), ids, 0)
        out[i, 0] = classes
        out[i, 1] = find_boundaries(thing_ids, mode="inner") & (thing_ids > 0)
        out[i, 2] = thing_ids
    return out


# ---- the model -------------------------------------------------------------------------------
class ObjectUNet(UNet):
    """The semantic U-Net with a boundary logit beside the class logits: `forward` gives
    `(n, semantic classes + 1, H, W)`, the last channel the boundary. `num_classes` counts
    the task's labels (what a checkpoint names); `background` adds the instance kind's
    background class in front of them; `things` are the class channels that are objects."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64),
                 dropout: float = 0.2, background: bool = True, things: Sequence[int] = ()):
        semantic = num_classes + int(background)
        super().__init__(in_channels, semantic, widths, dropout)
        self.num_classes = num_classes
        self.semantic_classes = semantic
        self.background = bool(background)
        self.things = tuple(int(t) for t in things)
        self.head = nn.Conv2d(self.widths[0], semantic + 1, kernel_size=1)

    def arch(self) -> dict[str, Any]:
        return {**super().arch(), "num_classes": self.num_classes,
                "background": self.background, "things": list(self.things)}


def model_layout(model: ObjectUNet, labels: Sequence[str]) -> Layout:
    """The layout a trained model predicts in."""
    classes = (("background",) if model.background else ()) + tuple(labels)
    return Layout(labels=tuple(labels), classes=classes, things=frozenset(model.things),
                  background=0 if model.background else None)


def train(images: np.ndarray, targets: np.ndarray, layout: Layout, settings: TrainSettings,
          options: ObjectOptions | None = None) -> Trained:
    """Train on targets `(n, 3, H, W)` (training_targets): cross-entropy over the labelled
    pixels' classes plus the boundary's binary cross-entropy (boundary pixels weighted 3x:
    they are few), the kinds' one-cycle recipe, horizontal flips when settings.augment;
    measured on a held-out split (settings.val_fraction) and refit on every label when
    settings.refit, as the semantic kind does. Metrics: `evaluate`'s, objects decoded as
    `options` say."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    if images.ndim != 4 or targets.ndim != 4 or targets.shape[1] != 3 or (
        len(images) != len(targets) or images.shape[2:] != targets.shape[2:]
    ):
        raise ValueError(f"images must be (n, C, H, W) with (n, 3, H, W) targets; got "
                         f"{images.shape} and {targets.shape}")
    if len(images) < 2:
        raise DataError(f"Only {len(images)} labeled image(s) usable for training: label at "
                        "least 2 images before training.")
    if not (targets[:, 2] > 0).any():
        raise DataError(f"The {len(images)} labeled images hold no object: label some objects "
                        "before training.")
    train_idx, val_idx = holdout_split(len(images), settings.val_fraction, settings.random_state)
    with training_context(settings):
        model, history = _fit(images, targets, train_idx, layout, settings)
        metrics = evaluate(model, images[val_idx], targets[val_idx], layout, options)
        refit = settings.refit and len(val_idx) > 0
        if refit:
            model, history = _fit(images, targets, np.arange(len(images)), layout, settings)
    used = np.arange(len(images)) if refit else train_idx
    classes = targets[used, 0]
    counts = np.bincount(classes[classes != IGNORE].ravel(), minlength=len(layout.classes))
    model.class_frequency.copy_(torch.from_numpy(counts / max(1, counts.sum())))
    metrics = {**metrics, "n_train": int(len(used)), "n_val": int(len(val_idx)),
               "refit": refit, **history}
    return Trained(model=model, temperature=1.0, metrics=metrics)


def _fit(images: np.ndarray, targets: np.ndarray, train_idx: np.ndarray, layout: Layout,
         settings: TrainSettings) -> tuple[ObjectUNet, dict[str, Any]]:
    torch.manual_seed(settings.random_state)  # the caller forks the RNG around this
    model = ObjectUNet(images.shape[1], len(layout.labels), widths=settings.widths,
                       background=layout.background is not None, things=sorted(layout.things))
    semantic = model.semantic_classes

    def batch_loss(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x, y = images[batch], targets[batch]
        if settings.augment:
            flip = rng.random(len(batch)) < 0.5
            x, y = x.copy(), y.copy()
            x[flip], y[flip] = x[flip][..., ::-1], y[flip][..., ::-1]
        logits = model(torch.from_numpy(x))
        classes, boundary = torch.from_numpy(y[:, 0]), torch.from_numpy(y[:, 1]).float()
        labelled = classes != IGNORE
        count = max(1, int(labelled.sum()))
        class_loss = F.cross_entropy(logits[:, :semantic], classes, ignore_index=IGNORE,
                                     reduction="sum") / count
        edge = F.binary_cross_entropy_with_logits(
            logits[:, semantic], boundary, pos_weight=torch.tensor(3.0), reduction="none")
        return class_loss + (edge * labelled).sum() / count

    return model, fit_one_cycle(model, train_idx, settings, batch_loss)


@dataclass
class Prediction:
    """The model's output for one image at some size (H, W): class probabilities
    `(semantic classes, H, W)` float32 and the boundary probability `(H, W)`."""

    probs: np.ndarray
    boundary: np.ndarray


def predictions(model: ObjectUNet, images: np.ndarray, batch_size: int = 16,
                sizes: Sequence[tuple[int, int]] | None = None) -> Iterator[Prediction]:
    """One Prediction per image, upsampled bilinearly to `sizes[i]` (width, height) when
    given (pre-annotations are drawn at the image's own size)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    model.eval()
    semantic = model.semantic_classes
    for start in range(0, len(images), batch_size):
        with torch.inference_mode():
            logits = model(torch.from_numpy(images[start:start + batch_size]))
            for i, one in enumerate(logits):
                if sizes is not None:
                    width, height = (int(v) for v in sizes[start + i])
                    if tuple(one.shape[-2:]) != (height, width):
                        one = F.interpolate(one[None], size=(height, width), mode="bilinear",
                                            align_corners=False)[0]
                yield Prediction(probs=torch.softmax(one[:semantic], dim=0).numpy(),
                                 boundary=torch.sigmoid(one[semantic]).numpy())


@dataclass
class Objects:
    """The objects decoded from one Prediction: ids uint16 `(H, W)` (0 = none, 1..k),
    semantic uint8 `(H, W)`, every pixel's class (an object's class on its pixels, the most
    likely stuff class elsewhere),
    `classes[k-1]` the class index of object k, `confidence[k-1]` its score in [0, 1]
    (class certainty x existence), and per-object uncertainties in [0, 1]: class (which
    thing it is), boundary (the pixels along its edge), existence (whether it is one).
    `doubtful` are the existence uncertainties of blobs the model half-sees but did not
    make objects (the objects it may have missed)."""

    ids: np.ndarray
    semantic: np.ndarray
    classes: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    class_uncertainty: list[float] = field(default_factory=list)
    boundary_uncertainty: list[float] = field(default_factory=list)
    existence_uncertainty: list[float] = field(default_factory=list)
    doubtful: list[float] = field(default_factory=list)


def decode(prediction: Prediction, layout: Layout, options: ObjectOptions) -> Objects:
    """Objects from a Prediction: the pixels the thing classes together claim, split where the
    boundary probability exceeds options.boundary_threshold, each component a seed grown
    back over its thing pixels by a watershed on the boundary probability (seeds smaller
    than options.min_object_pixels are fragments and seed nothing); objects below that size
    are dropped, the options.max_objects most confident kept."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries, watershed

    probs, boundary = prediction.probs, prediction.boundary
    things, stuff = sorted(layout.things), sorted(layout.stuff)
    thing_prob = probs[things].sum(axis=0)
    # a thing pixel is one the thing classes together claim: with several thing classes the
    # argmax over all classes would hand many object pixels to a stuff class
    is_thing = thing_prob > 0.5
    seeds, _ = ndimage.label(is_thing & (boundary < options.boundary_threshold))
    # a seed too small to be an object is a fragment: its pixels go to the object the
    # watershed grows into them, not to an object of their own
    sizes = np.bincount(seeds.ravel())
    small = sizes < options.min_object_pixels
    small[0] = False
    if small.any():
        seeds[small[seeds]] = 0
    grown = watershed(boundary, seeds, mask=is_thing) if seeds.any() else seeds
    confidence_map = probs.max(axis=0)
    edges = find_boundaries(grown, mode="inner")
    found = []
    for k, where in enumerate(ndimage.find_objects(grown), start=1):
        if where is None:
            continue
        inside = grown[where] == k
        size = int(inside.sum())
        if size < options.min_object_pixels:
            continue
        mass = probs[things][(slice(None), *where)][:, inside].sum(axis=1)  # (things,)
        best = int(mass.argmax())
        class_certainty = float(mass[best] / max(mass.sum(), 1e-12))
        existence = float(thing_prob[where][inside].mean())
        ring = inside & edges[where]
        ring_confidence = confidence_map[where][ring] if ring.any() else confidence_map[where][
            inside]
        found.append((class_certainty * existence, k, things[best], class_certainty, existence,
                      float(1.0 - ring_confidence.mean())))
    found.sort(key=lambda item: -item[0])
    found = found[: options.max_objects]
    ids = np.zeros(grown.shape, dtype=np.uint16)
    semantic = np.asarray(stuff, dtype=np.uint8)[probs[stuff].argmax(axis=0)]
    objects = Objects(ids=ids, semantic=semantic)
    for new, (score, old, cls, certainty, existence, edge) in enumerate(
        sorted(found, key=lambda item: item[1]), start=1
    ):
        ids[grown == old] = new
        semantic[grown == old] = cls
        objects.classes.append(cls)
        objects.confidence.append(score)
        objects.class_uncertainty.append(1.0 - certainty)
        objects.boundary_uncertainty.append(edge)
        objects.existence_uncertainty.append(1.0 - abs(2.0 * existence - 1.0))
    # blobs of some thing probability that became no object: objects it may have missed
    doubtful, _ = ndimage.label((thing_prob > 0.25) & (ids == 0))
    for where in ndimage.find_objects(doubtful):
        if where is None:
            continue
        values = thing_prob[where][doubtful[where] > 0]
        if len(values) >= options.min_object_pixels:
            objects.doubtful.append(float(1.0 - abs(2.0 * values.mean() - 1.0)))
    return objects


def aggregate(values: Sequence[float], how: str) -> float:
    """One image score from per-object scores (0 for an image with none)."""
    if not len(values):
        return 0.0
    if how == "mean":
        return float(np.mean(values))
    if how == "max":
        return float(np.max(values))
    if how == "sum":
        return float(np.sum(values))
    raise ValueError(f"Unknown aggregate {how!r}: choose one of {', '.join(AGGREGATES)}.")


def object_measures(objects: Objects) -> dict[str, list[float]]:
    """Per-object uncertainties by measure name: each component, and `objects`, their mean
    per object plus the missed-object doubts (existence only)."""
    combined = [float(np.mean(parts)) for parts in zip(
        objects.class_uncertainty, objects.boundary_uncertainty, objects.existence_uncertainty,
        strict=True)]
    return {
        "objects": combined + objects.doubtful,
        "object_class": list(objects.class_uncertainty),
        "object_boundary": list(objects.boundary_uncertainty),
        "object_existence": list(objects.existence_uncertainty) + objects.doubtful,
    }


def score_batch(model: ObjectUNet, temperature: float, images: np.ndarray, layout: Layout,
                options: ObjectOptions, *, samples: int = 0, gradients: bool = False,
                random_state: int = 0) -> BatchScores:
    """Per-image scores of a batch, reduced inside sub-batches of options.score_batch_size.

    Pixel part: each pixel measure of the class probabilities ("margin:topk", ... under
    every reduction; bald too with samples >= 2, by fast MC dropout of the head). Object
    part: the decoded objects' uncertainties under every aggregate ("objects:mean",
    "object_boundary:max", ...). A plain measure name ("margin") is the image score
    selection ranks by: (1 - options.object_weight) x the pixel measure under
    options.reduction + options.object_weight x "objects" under options.aggregate.
    predicted: the thing class with the most object pixels (the background, or the most
    painted class, where there is no object); confidence: the mean object confidence blended
    with the mean pixel confidence by the same weight.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    measures = (*SINGLE_MEASURES, "bald") if samples >= 2 else SINGLE_MEASURES
    weights = inverse_frequency_weights(model.class_frequency.double().numpy())
    masks = _dropout_masks(model, samples, random_state) if samples >= 2 else None
    semantic = model.semantic_classes
    w = options.object_weight
    model.eval()
    parts = []
    for start in range(0, len(images), options.score_batch_size):
        with torch.inference_mode():
            features, bottleneck = model.encode(torch.from_numpy(
                images[start:start + options.score_batch_size]))
            logits = model.head(features)
            probs = torch.softmax(logits[:, :semantic] / temperature, dim=1).numpy()
            boundary = torch.sigmoid(logits[:, semantic]).numpy()
            embeddings = bottleneck.mean(dim=(2, 3)).numpy().astype(np.float32, copy=False)
            sampled = _mc_probs(model, features, masks, temperature) if masks is not None else None
        classes = probs.argmax(axis=1)
        scores: dict[str, np.ndarray] = {}
        for measure in measures:
            pixel_map = PIXEL_MEASURES[measure](sampled if sampled is not None else probs)
            for how in REDUCTIONS:
                scores[f"{measure}:{how}"] = reduce_map(
                    pixel_map, how, top_percent=options.top_percent, predicted=classes,
                    class_weights=weights)
        del sampled
        decoded = [decode(Prediction(p, b), layout, options) for p, b in zip(probs, boundary,
                                                                             strict=True)]
        per_object = [object_measures(objects) for objects in decoded]
        for name in OBJECT_MEASURES:
            for how in AGGREGATES:
                scores[f"{name}:{how}"] = np.array([aggregate(m[name], how) for m in per_object])
        object_part = scores[f"objects:{options.aggregate}"]
        for measure in measures:
            scores[measure] = (1 - w) * scores[f"{measure}:{options.reduction}"] + w * object_part
        pixel_confidence = probs.max(axis=1).mean(axis=(1, 2), dtype=np.float64)
        object_confidence = np.array([np.mean(o.confidence) if o.confidence else pc
                                      for o, pc in zip(decoded, pixel_confidence, strict=True)])
        pixel_mean = probs.mean(axis=(2, 3), dtype=np.float64)
        parts.append(BatchScores(
            scores=scores, embeddings=embeddings,
            predicted=np.array([_main_class(o, c, layout) for o, c in zip(decoded, classes,
                                                                          strict=True)]),
            confidence=(1 - w) * pixel_confidence + w * object_confidence,
            gradients=gradient_embeddings(pixel_mean, embeddings) if gradients else None,
            n_classes=semantic,
        ))
    if not parts:
        names = ([f"{m}:{how}" for m in measures for how in REDUCTIONS]
                 + [f"{m}:{how}" for m in OBJECT_MEASURES for how in AGGREGATES] + list(measures))
        return BatchScores(
            scores={name: np.empty(0) for name in names},
            embeddings=np.empty((0, model.embedding_dim), dtype=np.float32),
            predicted=np.empty(0, dtype=np.int64), confidence=np.empty(0),
            gradients=(np.empty((0, semantic * model.embedding_dim), np.float32)
                       if gradients else None),
            n_classes=semantic)
    return BatchScores.concatenate(parts)


def _main_class(objects: Objects, classes: np.ndarray, layout: Layout) -> int:
    if objects.classes:
        sizes = np.bincount(objects.ids.ravel(), minlength=len(objects.classes) + 1)[1:]
        by_class = np.bincount(objects.classes, weights=sizes, minlength=len(layout.classes))
        return int(by_class.argmax())
    return int(np.bincount(classes.ravel(), minlength=len(layout.classes)).argmax())


def _dropout_masks(model: ObjectUNet, samples: int, random_state: int) -> torch.Tensor:
    """`(samples, channels)` channel-dropout masks scaled by 1 / keep, from random_state."""
    generator = torch.Generator().manual_seed(random_state)
    keep = 1.0 - model.dropout_p
    drawn = torch.rand((samples, model.widths[0]), generator=generator) < keep
    return drawn.float() / keep if keep > 0 else drawn.float()


def _mc_probs(model: ObjectUNet, features: torch.Tensor, masks: torch.Tensor,
              temperature: float) -> np.ndarray:
    """Class probabilities `(n, classes, H, W, T)` of the head sampled with T dropout masks
    on features computed once (the boundary channel is left out)."""
    semantic = model.semantic_classes
    weight, bias = model.head.weight[:semantic], model.head.bias[:semantic]
    out = np.empty((len(masks), features.shape[0], semantic, *features.shape[2:]),
                   dtype=np.float32)
    for t, mask in enumerate(masks):
        logits = F.conv2d(features, weight * mask.view(1, -1, 1, 1), bias)
        out[t] = torch.softmax(logits / temperature, dim=1).numpy()
    return np.moveaxis(out, 0, -1)


# ---- Label Studio regions ------------------------------------------------------------------
def regions_of(ids: np.ndarray, segments: Sequence[dict], layout: Layout, from_name: str,
               to_name: str, scores: dict[int, float] | None = None, prefix: str = "object"
               ) -> list[dict]:
    """One brush region per segment present in `ids` (H, W): things with `from_name`, each
    object its own region; stuff with layout.stuff_tag. `scores` by segment id."""
    regions = []
    for segment in segments:
        where = ids == segment["id"]
        if not where.any():
            continue
        thing = layout.class_of(segment["label"]) in layout.things
        tag = from_name if thing or layout.stuff_tag is None else layout.stuff_tag
        regions.append(brush_region(
            where, segment["label"], tag, to_name,
            score=scores.get(segment["id"]) if scores else None,
            region_id=f"{prefix}-{segment['id']}" if thing else f"stuff-{segment['label']}"))
    return regions


def pre_annotations(model: ObjectUNet, images: np.ndarray, sizes: Sequence[tuple[int, int]],
                    layout: Layout, options: ObjectOptions, from_name: str, to_name: str,
                    prefix: str) -> list[PreAnnotation]:
    """The model's objects (and stuff) at each image's own size, one region per object,
    each scored by its confidence; the task's score is score_batch's confidence blend."""
    if len(sizes) != len(images):
        raise ValueError(f"{len(images)} images but {len(sizes)} sizes")
    out = []
    for prediction in predictions(model, images, options.score_batch_size, sizes):
        objects = decode(prediction, layout, options)
        segments = [segment(k, layout.classes[c], layout)
                    for k, c in enumerate(objects.classes, start=1)]
        ids = objects.ids.astype(np.int64)
        semantic = objects.semantic
        next_id = len(segments) + 1
        for c in sorted(layout.stuff):
            if c == layout.background:
                continue
            where = (semantic == c) & (ids == 0)
            if where.any():
                ids[where] = next_id
                segments.append(segment(next_id, layout.classes[c], layout))
                next_id += 1
        scores = dict(enumerate(objects.confidence, start=1))
        pixel_confidence = float(prediction.probs.max(axis=0).mean(dtype=np.float64))
        object_confidence = float(np.mean(objects.confidence)) if objects.confidence \
            else pixel_confidence
        w = options.object_weight
        out.append(PreAnnotation(
            result=regions_of(ids, segments, layout, from_name, to_name, scores, prefix),
            score=(1 - w) * pixel_confidence + w * object_confidence))
    return out


def segments_from_regions(regions: Sequence[Region], size: tuple[int, int], layout: Layout,
                          max_objects: int, what: str) -> tuple[np.ndarray, list[dict]]:
    """(ids uint16 (H, W), segments) of one annotation's regions. Each thing region is one
    object; the stuff regions of a class merge into one segment. Overlap rule: a region
    later in the result wins the pixels it shares with earlier ones (the editor draws it on
    top); an object left with no pixel (empty, or painted over entirely) is dropped."""
    width, height = size
    ids = np.zeros((height, width), dtype=np.uint16)
    labels: dict[int, str] = {}
    stuff_ids: dict[str, int] = {}
    objects = 0
    for region in regions:
        if layout.class_of(region.label) in layout.things:
            objects += 1
            if objects > max_objects:
                raise AnnotationError(
                    f"{what} has more than {max_objects} objects (options.max_objects): "
                    f"{_FIX} (or raise the limit if the images really hold that many).")
            ident = len(labels) + 1
        else:
            ident = stuff_ids.setdefault(region.label, len(labels) + 1)
        labels[ident] = region.label
        ids[region.pixels] = ident
    present = set(np.unique(ids).tolist()) - {0}
    kept = sorted(i for i in labels if i in present)
    renumber = np.zeros(max(labels, default=0) + 1, dtype=np.uint16)
    for new, old in enumerate(kept, start=1):
        renumber[old] = new
    return renumber[ids], [segment(new, labels[old], layout) for new, old in
                           enumerate(kept, start=1)]


def parse_annotation(result: Any, layout: Layout, tags: dict[tuple[str, str], Sequence[str]],
                     to_name: str, max_objects: int, what: str,
                     size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[dict]]:
    """The segment target one annotation's (or prediction's) result draws. With `size`
    (width, height) an empty result is allowed: no object anywhere."""
    regions, drawn = read_regions(result, tags, to_name, what, layout.labels,
                                  allow_empty=size is not None)
    return segments_from_regions(regions, drawn or size, layout, max_objects, what)  # type: ignore[arg-type]


# ---- matching and consensus ----------------------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(objects of a, objects of b)` IoU of the nonzero ids of two id masks of one shape
    (ids 1..k in each, as segments_from_regions gives)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    na, nb = int(a.max(initial=0)), int(b.max(initial=0))
    joint = np.bincount((a * (nb + 1) + b).ravel(), minlength=(na + 1) * (nb + 1))
    joint = joint.reshape(na + 1, nb + 1)
    area_a, area_b = joint.sum(axis=1), joint.sum(axis=0)
    inter = joint[1:, 1:].astype(np.float64)
    union = area_a[1:, None] + area_b[None, 1:] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Pairs (id in a, id in b, IoU) matched one to one by the largest total IoU
    (Hungarian), keeping pairs with IoU >= threshold."""
    from scipy.optimize import linear_sum_assignment

    iou = iou_matrix(a, b)
    if not iou.size:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r) + 1, int(c) + 1, float(iou[r, c])) for r, c in zip(rows, cols, strict=True)
            if iou[r, c] >= threshold]


def object_ids(ids: np.ndarray, segments: Sequence[dict], layout: Layout) -> np.ndarray:
    """The thing ids of a segment mask renumbered 1..k in segment order (stuff -> 0), and the
    renumbering kept in segment order so `things_of` names their classes."""
    out = np.zeros(ids.shape, dtype=np.int64)
    for new, segment in enumerate(things_of(segments, layout), start=1):
        out[ids == segment["id"]] = new
    return out


def things_of(segments: Sequence[dict], layout: Layout) -> list[dict]:
    return [s for s in segments if layout.class_of(s["label"]) in layout.things]


def match_quality(a: np.ndarray, b: np.ndarray) -> float:
    """How well two object masks agree: the matched pairs' IoU summed over all objects of
    both, matched pairs counted once (1.0 for identical objects or none on either side)."""
    pairs = match(a, b)
    total = int(a.max(initial=0)) + int(b.max(initial=0)) - len(pairs)
    return 1.0 if total == 0 else sum(iou for _, _, iou in pairs) / total


def vote(annotations: Sequence[tuple[np.ndarray, list[dict]]], layout: Layout
         ) -> tuple[np.ndarray, list[dict], float]:
    """One segment target from several annotators' (oldest first), and their agreement.

    Objects are matched across annotators by IoU (>= 0.5, one to one, each annotator's
    objects against the objects found so far); an object is kept when most annotators drew
    it (half, when the latest annotation is among them: ties go to the latest, as for
    choices), with the pixels most of its annotators gave it (ties to the latest) and the
    class most of them gave it. Stuff follows the semantic kind's per-pixel vote. Kept
    objects are painted in the order first drawn, later ones winning shared pixels.
    Agreement: the mean over annotator pairs of `match_quality`."""
    n = len(annotations)
    thing_masks = [object_ids(ids, segments, layout) for ids, segments in annotations]
    thing_labels = [[s["label"] for s in things_of(segments, layout)]
                    for _, segments in annotations]
    clusters: list[list[tuple[int, int]]] = []  # members: (annotation, object id)
    for a, mask in enumerate(thing_masks):
        if clusters:
            reference = np.zeros(mask.shape, dtype=np.int64)
            for c, members in enumerate(clusters):
                last_a, last_id = members[-1]
                reference[(thing_masks[last_a] == last_id) & (reference == 0)] = c + 1
            matched = {obj: cluster - 1 for cluster, obj, _ in match(reference, mask)}
        else:
            matched = {}
        for obj in range(1, int(mask.max(initial=0)) + 1):
            if obj in matched:
                clusters[matched[obj]].append((a, obj))
            else:
                clusters.append([(a, obj)])
    ids = np.zeros(annotations[0][0].shape, dtype=np.uint16)
    segments: list[dict] = []
    if layout.stuff_tag is not None:
        stuff = [np.where(np.isin(class_lookup(seg, layout, int(i.max(initial=0)))[i],
                                  list(layout.stuff)),
                          class_lookup(seg, layout, int(i.max(initial=0)))[i], IGNORE)
                 for i, seg in annotations]
        voted = pixel_vote(stuff, IGNORE)
        for c in sorted(layout.stuff):
            if (voted == c).any():
                segments.append(segment(len(segments) + 1, layout.classes[c], layout))
                ids[voted == c] = len(segments)
    for members in clusters:
        has_latest = any(a == n - 1 for a, _ in members)
        if not (2 * len(members) > n or (2 * len(members) == n and has_latest)):
            continue
        masks = [(thing_masks[a] == obj).astype(np.uint8) for a, obj in members]
        keep = pixel_vote(masks, IGNORE) == 1
        if not keep.any():
            continue
        label = majority_vote([thing_labels[a][obj - 1] for a, obj in members]).label
        segments.append(segment(len(segments) + 1, label, layout))
        ids[keep] = len(segments)
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s["id"] in present]
    pairs = [match_quality(thing_masks[i], thing_masks[j]) for i in range(n)
             for j in range(i + 1, n)]
    return ids, segments, float(np.mean(pairs)) if pairs else 1.0


def changed_share(before: tuple[np.ndarray, list[dict]], after: tuple[np.ndarray, list[dict]],
                  layout: Layout) -> float:
    """The share of pixels whose object or class the annotator changed: predicted objects
    are matched to annotated ones (IoU >= 0.5); a pixel is unchanged where both say the
    same class and, for things, the matched object."""
    (ids_b, seg_b), (ids_a, seg_a) = before, after
    if ids_b.shape != ids_a.shape:
        ids_b = resize_ids(ids_b, (ids_a.shape[1], ids_a.shape[0]))
    classes_b = class_lookup(seg_b, layout, int(ids_b.max(initial=0)))[ids_b]
    classes_a = class_lookup(seg_a, layout, int(ids_a.max(initial=0)))[ids_a]
    things_b, things_a = object_ids(ids_b, seg_b, layout), object_ids(ids_a, seg_a, layout)
    mapping = np.full(int(things_b.max(initial=0)) + 1, -1, dtype=np.int64)
    mapping[0] = 0
    for b, a, _ in match(things_b, things_a):
        mapping[b] = a
    same = (classes_b == classes_a) & (mapping[things_b] == things_a)
    return float(1.0 - same.mean()) if same.size else 0.0


def read_annotations(results: Sequence[Any], layout: Layout,
                     tags: dict[tuple[str, str], Sequence[str]], to_name: str,
                     options: ObjectOptions, predicted: Any = None,
                     size: tuple[int, int] | None = None) -> Reading:
    """One segment target from the finished annotations' results (oldest first); several
    resolve by `vote`. An empty result means "no object" when the task's pre-annotation
    or `size` (the image's (width, height) in the task's data) says the image size, and is
    an error otherwise (it says no size). `changed`: the
    changed_share against the pre-annotation (an empty one predicted no object, so every
    object drawn is a change), None without one."""
    if not results:
        raise ValueError("read_annotations needs at least one annotation's results")
    if isinstance(predicted, dict) and "result" in predicted:
        predicted = predicted["result"]
    size = _drawn_size(predicted) or size
    several = len(results) > 1
    drawn = [parse_annotation(result, layout, tags, to_name, options.max_objects,
                              f"Annotation {i + 1} of {len(results)}" if several
                              else "The annotation", size=size)
             for i, result in enumerate(results)]
    shapes = {ids.shape for ids, _ in drawn}
    if len(shapes) > 1:
        raise AnnotationError(
            "The task's annotations were drawn on images of different sizes ("
            + ", ".join(f"{w}x{h}" for h, w in sorted(shapes))
            + f"): {_FIX} (redo the annotations on the current image).")
    if several:
        ids, segments, agreement = vote(drawn, layout)
    else:
        (ids, segments), agreement = drawn[0], None
    changed = None
    if isinstance(predicted, list):  # [] is a pre-annotation too: "no object here"
        try:
            before = parse_annotation(predicted, layout, tags, to_name, MAX_OBJECTS,
                                      "The task's pre-annotation", size=(ids.shape[1],
                                                                         ids.shape[0]))
        except AnnotationError:  # a prediction of another label config says nothing here
            before = None
        if before is not None:
            changed = changed_share(before, (ids, segments), layout)
    return Reading(target=Target(mask=ids, segments=segments), index=len(results) - 1,
                   agreement=agreement, changed=changed)


def _drawn_size(predicted: Any) -> tuple[int, int] | None:
    """The (width, height) a pre-annotation's regions were drawn at, if it says."""
    if isinstance(predicted, list):
        for region in predicted:
            if isinstance(region, dict):
                width, height = region.get("original_width"), region.get("original_height")
                if isinstance(width, int) and isinstance(height, int) and width > 0 < height:
                    return width, height
    return None


def result_from_target(target: Target, layout: Layout, size: tuple[int, int], from_name: str,
                       to_name: str, prefix: str) -> list[dict]:
    """Brush regions that say `target` at `size` (width, height): one per object, one per
    stuff segment."""
    if target.mask is None or target.segments is None:
        raise ValueError("a segment target is an id mask with its segment list")
    ids = resize_ids(np.asarray(target.mask), size)
    return regions_of(ids, target.segments, layout, from_name, to_name, prefix=prefix)


def simulated_target(truth: Target, layout: Layout, wrong: bool, draw: float,
                     rng: np.random.Generator) -> Target:
    """SIMULATION: `truth` itself, or when `wrong` a plausible mistake chosen by `draw`:
    below 0.5 one object is missed (its pixels become background or unlabelled), else one
    object grows 1-3 pixels into the pixels of no object."""
    if not wrong:
        return truth
    from scipy.ndimage import binary_dilation

    ids = np.asarray(truth.mask).copy()
    segments = list(truth.segments or [])
    things = [s for s in segments if layout.class_of(s["label"]) in layout.things
              and (ids == s["id"]).any()]
    if not things:
        return Target(mask=ids, segments=segments)
    chosen = things[int(rng.integers(len(things)))]
    if draw < 0.5:
        ids[ids == chosen["id"]] = 0
        segments = [s for s in segments if s["id"] != chosen["id"]]
    else:
        grown = binary_dilation(ids == chosen["id"], iterations=int(rng.integers(1, 4)))
        ids[grown & (ids == 0)] = chosen["id"]
    return Target(mask=ids, segments=segments)


# ---- metrics ---------------------------------------------------------------------------------
def evaluate(model: ObjectUNet, images: np.ndarray, targets: np.ndarray, layout: Layout,
             options: ObjectOptions | None = None) -> dict[str, Any]:
    """Object metrics of a model on images with targets `(n, 3, H, W)` (training_targets),
    objects decoded at the model's size:

    ap50, ap: COCO mask AP at IoU 0.5 and over 0.5:0.95 (torchmetrics MeanAveragePrecision,
    pycocotools backend), None where no image holds an object; count_error: the mean
    absolute difference between predicted and true object counts per image; pq, sq, rq,
    pq_things, pq_stuff, per_class_pq: panoptic quality (torchmetrics PanopticQuality) over
    things and stuff (the instance kind's background is its one stuff class); miou: the
    semantic classes' mean IoU over labelled pixels."""
    from torchmetrics.detection import PanopticQuality

    options = options or ObjectOptions()
    targets = np.asarray(targets, dtype=np.int64)
    n = int(len(targets))
    if n == 0:
        return {"ap50": None, "ap": None, "pq": None, "count_error": None, "miou": None, "n": 0}
    things, stuff = sorted(layout.things), sorted(layout.stuff)
    void = len(layout.classes)  # a category neither things nor stuff: torchmetrics' void
    detections: list[dict] = []
    truths: list[dict] = []
    quality = PanopticQuality(things=set(things), stuffs=set(stuff), return_sq_and_rq=True,
                              return_per_class=True, allow_unknown_preds_category=True)
    seen: set[int] = set()  # classes in a target or a prediction: PQ averages over these
    confusion = np.zeros((len(layout.classes), len(layout.classes)), dtype=np.int64)
    count_errors, any_object = [], False
    for i, prediction in enumerate(predictions(model, images, options.score_batch_size)):
        objects = decode(prediction, layout, options)
        true_classes, true_ids = targets[i, 0], targets[i, 2]
        semantic = objects.semantic.astype(np.int64)
        labelled = true_classes != IGNORE
        confusion += np.bincount(true_classes[labelled] * len(layout.classes)
                                 + semantic[labelled], minlength=confusion.size
                                 ).reshape(confusion.shape)
        true_objects = [int(k) for k in np.unique(true_ids) if k]
        any_object |= bool(true_objects)
        count_errors.append(abs(len(objects.classes) - len(true_objects)))
        for k, c in enumerate(objects.classes, start=1):
            detections.append({"image_id": i, "mask": objects.ids == k, "category_id": c,
                               "score": objects.confidence[k - 1]})
        for k in true_objects:
            where = true_ids == k
            truths.append({"image_id": i, "mask": where,
                           "category_id": int(np.bincount(true_classes[where]).argmax())})
        pred_category = semantic  # objects' classes on their pixels, stuff elsewhere
        true_category = np.where(labelled, true_classes, void)
        seen.update(int(c) for c in np.unique(true_category) if c != void)
        seen.update(int(c) for c in np.unique(pred_category[labelled]) if c != void)
        quality.update(
            torch.from_numpy(np.stack([pred_category, objects.ids.astype(np.int64)], -1))[None],
            torch.from_numpy(np.stack([true_category, true_ids], -1))[None])
    ap = (mask_ap(truths, detections, targets.shape[2:], n, sorted(layout.things))
          if any_object else None)
    pq, sq, rq, per_class = _panoptic(quality, things, stuff, seen)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    return {
        "ap50": ap[0] if ap is not None else None,
        "ap": ap[1] if ap is not None else None,
        "count_error": float(np.mean(count_errors)),
        "pq": pq, "sq": sq, "rq": rq,
        "pq_things": _mean([per_class[c] for c in things if c in per_class]),
        "pq_stuff": _mean([per_class[c] for c in stuff if c in per_class]),
        "per_class_pq": per_class,
        "miou": float((tp[present] / union[present]).mean()) if present.any() else None,
        "n": n,
    }


def mask_ap(truths: Sequence[dict], detections: Sequence[dict], shape: tuple[int, int],
            n_images: int, categories: Sequence[int]) -> tuple[float, float]:
    """(AP at IoU 0.5, AP over IoU 0.5:0.95) of mask detections, by pycocotools' COCOeval
    (the COCO definition: 101-point interpolation, up to 100 detections per image, classes
    averaged). Each entry: image_id, mask (bool `shape` (H, W)), category_id, and score for
    detections. No detection at all scores 0."""
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def encoded(entry: dict, ident: int) -> dict:
        rle = coco_mask.encode(np.asfortranarray(entry["mask"].astype(np.uint8)))
        out = {"id": ident, "image_id": entry["image_id"], "category_id": entry["category_id"],
               "segmentation": rle, "area": float(coco_mask.area(rle)),
               "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": 0}
        if "score" in entry:
            out["score"] = float(entry["score"])
        return out

    if not detections:
        return 0.0, 0.0
    height, width = shape
    truth = COCO()
    truth.dataset = {"images": [{"id": i, "height": height, "width": width}
                                for i in range(n_images)],
                     "categories": [{"id": int(c)} for c in categories],
                     "annotations": [encoded(t, j + 1) for j, t in enumerate(truths)]}
    with _quiet():
        truth.createIndex()
        found = truth.loadRes([encoded(d, j + 1) for j, d in enumerate(detections)])
        evaluation = COCOeval(truth, found, iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
    # precision: (IoU thresholds 0.5:0.95, recall points, classes, areas, max detections);
    # area "all", 100 detections, as COCOeval.summarize reads stats[0] and stats[1]
    precision = evaluation.eval["precision"][:, :, :, 0, -1]

    def mean_of(values: np.ndarray) -> float:
        valid = values[values > -1]  # -1: a class with no truth
        return float(valid.mean()) if valid.size else 0.0

    return mean_of(precision[0]), mean_of(precision)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pycocotools prints its progress with print(), which Prefect's log_prints turns into
    log lines (redirecting stdout does not reach a patched print): silence it here."""
    import builtins

    original = builtins.print
    builtins.print = lambda *args, **kwargs: None
    try:
        yield
    finally:
        builtins.print = original


def _panoptic(quality: Any, things: list[int], stuff: list[int], seen: set[int]
              ) -> tuple[float | None, float | None, float | None, dict[int, float]]:
    """(PQ, SQ, RQ averaged over the classes seen, {class: PQ}) from torchmetrics' per-class
    rows `(classes, 3)`, things then stuff, each in index order. A class in no target and
    no prediction reads 0 there; like COCO's pq_compute it is left out instead."""
    values = quality.compute().numpy().reshape(-1, 3)
    order = sorted(things) + sorted(stuff)
    rows = [i for i, c in enumerate(order) if c in seen]
    per_class = {order[i]: float(values[i, 0]) for i in rows}
    if not rows:
        return None, None, None, per_class
    pq, sq, rq = (float(values[rows, j].mean()) for j in range(3))
    return pq, sq, rq, per_class


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None
