"""Semantic segmentation: a class for every pixel (the `semantic` task kind).

Everything semantic-specific lives here, behind alpha.kinds.base.Kind: the Label Studio
label config (brush and polygon labels over the image), the conversion between Label Studio
regions and class masks (with a per-pixel vote over several annotators), the pre-annotation
a task carries (one brush region per predicted class), the per-image uncertainty scores
(pixel measures reduced per image), and the model: a small U-Net trained from scratch.

Masks are uint8 `(H, W)` class indices at the image's own size, with IGNORE (255) for
unlabelled pixels; they never train (cross-entropy ignores them) and never count in a metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from alpha.config import TrainSettings
from alpha.consensus import mask_agreement, pixel_vote
from alpha.errors import AnnotationError, ConfigError, DataError
from alpha.heatmaps import heatmap_png
from alpha.kinds.base import BatchScores, KindOptions, PreAnnotation, Reading, Target, Trained
from alpha.kinds.training import fit_one_cycle, training_context
from alpha.kinds.training import load_checkpoint as load_model
from alpha.kinds.training import save_checkpoint as save_model
from alpha.masks import brush_region, mask_problem, read_regions
from alpha.strategies.diversity import gradient_embeddings
from alpha.strategies.measures import MEASURES as PIXEL_MEASURES
from alpha.strategies.reductions import REDUCTIONS, Reduction, inverse_frequency_weights, reduce_map
from alpha.strategies.scores import SINGLE_MEASURES

NAME = "semantic"
DATA_KEY = "image"
TO_NAME = "image"
FROM_NAME = "label"  # the BrushLabels tag
POLYGON_NAME = "polygon"  # the PolygonLabels tag
UNCERTAINTY_KEY = "uncertainty"  # the task data key (and Image name) of the uncertainty map
PRIMARY_METRIC = "miou"
IGNORE = 255
"""The stored value of an unlabelled pixel."""
MEASURES: tuple[str, ...] = (
    *SINGLE_MEASURES,
    *(f"{measure}:{how}" for measure in SINGLE_MEASURES for how in REDUCTIONS),
)
"""Score names without samples: each pixel measure under the configured reduction (plain
name) and under every reduction ("margin:topk"), so one pass compares reductions. With
Monte-Carlo samples `bald` and its variants join them."""
MAX_CLASSES = 255  # indices 0..254; 255 is IGNORE
TRAIN_DEFAULTS: dict[str, Any] = {
    "image_size": 120, "image_height": 90, "widths": (16, 32, 64, 128), "epochs": 25,
    "min_steps": 100, "batch_size": 8, "learning_rate": 1e-2, "augment": True,
}
"""The CamVid benchmark's recipe (bench/README.md), for every [train] field left unset: a
4-level U-Net at 120 x 90, AdamW one-cycle to 1e-2, batches of 8, horizontal flips,
max(25 epochs, 100 steps); the classification defaults (28 x 28, batches of 64) would
train a useless segmentation model."""

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
"""Label colours in class order (Tableau 20), repeated past 20 classes."""

_FIX = "fix the annotation in Label Studio"
_REGION_TYPES = (("brushlabels", FROM_NAME), ("polygonlabels", POLYGON_NAME))


class Options(KindOptions):
    """`[task.options]` of a semantic segmentation task."""

    reduction: Reduction = Field(
        default="topk",
        description="How a pixel uncertainty map becomes the image score the plain measure "
        "names carry: mean, topk (the top_percent most uncertain pixels), class_weighted "
        "(rare predicted classes count more), max or sum.",
    )
    top_percent: float = Field(default=10.0, gt=0, le=100, description="topk's share of pixels.")
    background: str | None = Field(
        default=None,
        description="The class that pixels no region covers get when annotations are read; "
        "unset, they stay unlabelled (ignored in training).",
    )
    ignore_index: int = Field(
        default=IGNORE, ge=0, le=255,
        description="The value meaning 'unlabelled' in masks you ingest (stored masks use 255).",
    )
    uncertainty_map: bool = Field(
        default=False,
        description="Show each task's pixel uncertainty (bright = the model is unsure) as a "
        "second image under the one annotators paint, so they check those parts first.",
    )
    score_batch_size: int = Field(
        default=16, ge=1,
        description="Images per forward pass inside score_batch and pre_annotate (bounds the "
        "memory of probability maps and Monte-Carlo samples).",
    )

    label_fields: ClassVar[tuple[str, ...]] = ("background",)


def _options(options: KindOptions | dict | None) -> Options:
    return Options.coerce(options)


# ---- Label Studio ------------------------------------------------------------------------
def label_config(labels: list[str], options: KindOptions | None = None) -> str:
    """The image with brush labels (`label`) and polygon labels (`polygon`) of the classes,
    each class in its own colour, so annotators paint or outline regions."""
    from xml.sax.saxutils import quoteattr

    _check_labels(labels)
    tags = "".join(
        f"<Label value={quoteattr(label)} background={quoteattr(PALETTE[i % len(PALETTE)])}/>"
        for i, label in enumerate(labels)
    )
    uncertainty = (
        '<Header value="Where the model is unsure (bright = unsure)" size="6"/>'
        f'<Image name="{UNCERTAINTY_KEY}" value="${UNCERTAINTY_KEY}"/>'
        if _options(options).uncertainty_map else ""
    )
    return (
        f'<View><Image name="{TO_NAME}" value="${DATA_KEY}" zoom="true"/>'
        f'<BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{tags}</BrushLabels>'
        f'<PolygonLabels name="{POLYGON_NAME}" toName="{TO_NAME}">{tags}</PolygonLabels>'
        f"{uncertainty}</View>"
    )


def task_images(options: KindOptions | None = None) -> tuple[str, ...]:
    """The uncertainty map's key when options.uncertainty_map is on."""
    return (UNCERTAINTY_KEY,) if _options(options).uncertainty_map else ()


def _check_labels(labels: Sequence[str]) -> None:
    if not 1 <= len(labels) <= MAX_CLASSES:
        raise ConfigError(
            f"Semantic segmentation takes 1 to {MAX_CLASSES} classes (255 marks unlabelled "
            f"pixels), got {len(labels)}: change task.labels."
        )


def _regions(mask: np.ndarray, labels: list[str], scores: np.ndarray | None = None) -> list[dict]:
    """One brush region per class present in `mask` (IGNORE pixels in none), in class order;
    with `scores` `(H, W)` each region's score is its pixels' mean."""
    regions = []
    for c in np.unique(mask):
        c = int(c)
        if c == IGNORE:
            continue
        if not 0 <= c < len(labels):
            raise ValueError(f"the mask holds class {c} but there are {len(labels)} labels")
        where = mask == c
        score = float(scores[where].mean()) if scores is not None else None
        regions.append(
            brush_region(where, labels[c], FROM_NAME, TO_NAME, score=score, region_id=f"{NAME}-{c}")
        )
    return regions


def result_from_target(target: Target, labels: list[str], size: tuple[int, int]) -> list[dict]:
    """Brush regions that paint `target.mask` (resized to `size` (width, height) by nearest
    neighbour when it differs); unlabelled pixels are in no region."""
    if target.mask is None:
        raise ValueError("a semantic target is a mask")
    return _regions(_resize_mask(np.asarray(target.mask), size), labels)


def pre_annotate(
    model: UNet, temperature: float, images: np.ndarray, sizes: Sequence[tuple[int, int]],
    labels: list[str], options: KindOptions | None = None,
) -> list[PreAnnotation]:
    """The model's guess for each image at its own size `sizes[i]` = (width, height): class
    probabilities upsampled bilinearly (one class at a time, so memory stays at a few planes
    of the full image), their argmax painted as one brush region per class, each scored by
    the mean confidence of its pixels; the task's score is the mean confidence of all. With
    options.uncertainty_map, the task's uncertainty image: 1 - confidence per pixel, scaled
    so 1 (bright) is a uniform guess over the classes."""
    opts = _options(options)
    if len(sizes) != len(images):
        raise ValueError(f"{len(images)} images but {len(sizes)} sizes")
    out: list[PreAnnotation] = []
    for start, probs in _probability_batches(model, temperature, images, opts.score_batch_size):
        for i, image_probs in enumerate(probs):
            width, height = (int(v) for v in sizes[start + i])
            confidence, classes = _upsampled_argmax(image_probs, (height, width))
            images = {}
            if opts.uncertainty_map:
                most_unsure = max(1.0 - 1.0 / len(labels), 1e-6)  # 1 - max prob of a uniform guess
                images[UNCERTAINTY_KEY] = heatmap_png((1.0 - confidence) / most_unsure)
            out.append(
                PreAnnotation(
                    result=_regions(classes, labels, confidence),
                    score=float(confidence.mean(dtype=np.float64)),
                    images=images,
                )
            )
    return out


@torch.inference_mode()
def _upsampled_argmax(probs: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(max probability, argmax class) `(H, W)` of `probs` `(classes, h, w)` upsampled to
    `size` (H, W); ties go to the lower class, as argmax does."""
    best = classes = None
    for c in range(probs.shape[0]):
        plane = probs[c][None, None]
        if tuple(plane.shape[-2:]) != size:
            plane = F.interpolate(plane, size=size, mode="bilinear", align_corners=False)
        plane = plane[0, 0]
        if best is None:
            best, classes = plane.clone(), torch.zeros(size, dtype=torch.uint8)
        else:
            better = plane > best
            best = torch.where(better, plane, best)
            classes[better] = c
    assert best is not None and classes is not None
    return best.numpy(), classes.numpy()


def read_annotations(
    results: Sequence[Any], labels: list[str], options: KindOptions | None = None,
    predicted: Any = None, size: tuple[int, int] | None = None,
) -> Reading:
    """One class mask from the finished annotations' results (oldest first).

    Each annotation becomes a mask at the image's size (original_width/height of its
    regions): brush regions decode from their RLE, polygons rasterise at pixel centres.
    Overlap rule: regions later in the result list win over earlier ones, as the editor
    draws them on top. Pixels no region covers are `options.background` when set, else
    unlabelled (255). Several annotations resolve pixel by pixel by majority among the
    annotators who labeled the pixel, ties to the latest (alpha.consensus.pixel_vote), with
    the mean pairwise IoU as agreement. `changed` is the share of pixels whose class differs
    from the pre-annotation `predicted` (its results, decoded the same way; nearest-resized
    when it was drawn at another size), None without one (None or an empty result) or when
    it does not fit the label config. The latest annotation's work is the one recorded.
    AnnotationError names what is wrong and where.
    """
    opts = _options(options)
    if not results:
        raise ValueError("read_annotations needs at least one annotation's results")
    background = _background(labels, opts)
    several = len(results) > 1
    masks = [
        _decode_result(result, labels, background,
                       f"Annotation {i + 1} of {len(results)}" if several else "The annotation")
        for i, result in enumerate(results)
    ]
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise AnnotationError(
            "The task's annotations were drawn on images of different sizes ("
            + ", ".join(f"{w}x{h}" for h, w in sorted(shapes))
            + f"): {_FIX} (redo the annotations on the current image)."
        )
    mask = pixel_vote(masks, IGNORE) if several else masks[0]
    changed = None
    if isinstance(predicted, dict) and "result" in predicted:  # a whole prediction
        predicted = predicted["result"]
    if predicted:  # None or [] : no pre-annotation to compare with
        try:
            before = _decode_result(predicted, labels, background, "The task's pre-annotation",
                                    size=(mask.shape[1], mask.shape[0]))
        except AnnotationError:  # a prediction of another label config says nothing here
            before = None
        if before is not None:
            before = _resize_mask(before, (mask.shape[1], mask.shape[0]))
            changed = float(np.mean(before != mask)) if mask.size else 0.0
    return Reading(
        target=Target(mask=mask),
        index=len(results) - 1,
        votes=None,
        agreement=mask_agreement(masks, IGNORE) if several else None,
        changed=changed,
    )


def _background(labels: list[str], options: Options) -> int | None:
    if options.background is None:
        return None
    if options.background not in labels:
        raise ConfigError(
            f"task.options.background {options.background!r} is not one of task.labels "
            f"({', '.join(labels)}): fix the settings."
        )
    return labels.index(options.background)


def _decode_result(
    result: Any, labels: list[str], background: int | None, what: str,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The uint8 class mask one annotation's (or prediction's) result paints (later regions
    win). With `size` (width, height) an empty result is allowed (a pre-annotation with no
    region) and regions keep their own size."""
    regions, drawn = read_regions(result, dict.fromkeys(_REGION_TYPES, labels), TO_NAME, what,
                                  labels, allow_empty=size is not None)
    width, height = drawn or size  # type: ignore[misc]
    mask = np.full((height, width), IGNORE if background is None else background, np.uint8)
    for region in regions:  # later regions win
        mask[region.pixels] = labels.index(region.label)
    return mask


# ---- targets -------------------------------------------------------------------------------
def target_problem(target: Target, labels: list[str]) -> str | None:
    """Why a stored mask cannot train (None: it can)."""
    problem = mask_problem(target.mask, "class indices")
    if problem is not None:
        return problem
    mask = np.asarray(target.mask)
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= len(labels))) & (values != IGNORE)]
    if len(bad):
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        return (f"has mask values {shown} that are neither class indices (0..{len(labels) - 1}) "
                f"nor {IGNORE} (unlabelled)")
    if values.size == 0 or (len(values) == 1 and values[0] == IGNORE):
        return f"has a mask that labels no pixel (every pixel is {IGNORE}, unlabelled)"
    return None


def training_targets(
    targets: Sequence[Target], labels: list[str], size: tuple[int, int]
) -> np.ndarray:
    """Masks `(n, H, W)` int64 at the model's `size` (width, height), resized by nearest
    neighbour (class indices must not blend)."""
    width, height = size
    out = np.empty((len(targets), height, width), dtype=np.int64)
    for i, target in enumerate(targets):
        if target.mask is None:
            raise ValueError(f"target {i} has no mask")
        out[i] = _resize_mask(np.asarray(target.mask), size)
    return out


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 class mask at `size` (width, height) by nearest neighbour."""
    from PIL import Image

    mask = np.asarray(mask)
    if mask.shape == (size[1], size[0]):
        return mask.astype(np.uint8, copy=False)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("a semantic mask holds class indices 0..255")
    image = Image.fromarray(mask.astype(np.uint8))
    return np.asarray(image.resize((int(size[0]), int(size[1])), Image.Resampling.NEAREST))


def simulated_target(
    truth: Target, labels: list[str], wrong: bool, draw: float, rng: np.random.Generator
) -> Target:
    """SIMULATION: `truth` itself, or when `wrong` a boundary error of 1-3 pixels, chosen by
    `draw` in [0, 1): below 0.5 the whole mask shifts (edges replicated), else one present
    class grows into its neighbours. Deterministic given `rng`."""
    if truth.mask is None:
        raise ValueError("a semantic target is a mask")
    if not wrong:
        return truth  # the same object: the simulator tells right from wrong by identity
    mask = np.asarray(truth.mask)
    step = int(rng.integers(1, 4))
    if draw < 0.5:
        dy, dx = [(step, 0), (-step, 0), (0, step), (0, -step)][int(rng.integers(4))]
        padded = np.pad(mask, step, mode="edge")
        height, width = mask.shape
        top, left = step - dy, step - dx
        return Target(mask=padded[top : top + height, left : left + width].copy())
    from scipy.ndimage import binary_dilation

    present = [int(c) for c in np.unique(mask) if c != IGNORE]
    if not present:
        return Target(mask=mask.copy())
    grown_class = present[int(rng.integers(len(present)))]
    grown = binary_dilation(mask == grown_class, iterations=step)
    out = mask.copy()
    out[grown] = grown_class
    return Target(mask=out)


def input_size(train_settings: dict[str, Any]) -> tuple[int, int]:
    """(width, height) the model was trained at."""
    width = int(train_settings.get("image_size", 28))
    return width, int(train_settings.get("image_height") or width)


# ---- the model ---------------------------------------------------------------------------
def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): one level per entry of `widths` (two 3x3
    conv + batch norm + ReLU each, 2x2 max pooling between levels), bilinear upsampling to
    each skip connection's exact size (so any input size works, e.g. 120x90), then channel
    dropout and a 1x1 classifier. All of the dropout sits before the classifier, so fast MC
    dropout runs the network once and samples only that head.

    `class_frequency` (a buffer, saved with the weights) holds the training labels' class
    frequencies, for the class_weighted reduction.
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64),
        dropout: float = 0.2,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.widths = tuple(int(w) for w in widths)
        self.dropout_p = float(dropout)
        if not self.widths:
            raise ValueError("a U-Net needs at least one level (widths)")
        channels = [in_channels, *self.widths]
        self.encoder = nn.ModuleList(_block(channels[i], channels[i + 1])
                                     for i in range(len(self.widths)))
        self.decoder = nn.ModuleList(
            _block(self.widths[i + 1] + self.widths[i], self.widths[i])
            for i in reversed(range(len(self.widths) - 1))
        )
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(self.widths[0], num_classes, kernel_size=1)
        self.register_buffer("class_frequency", torch.full((num_classes,), 1.0 / num_classes))

    @property
    def embedding_dim(self) -> int:
        return self.widths[-1]

    def arch(self) -> dict[str, Any]:
        """What is needed to rebuild this network from a checkpoint."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes,
                "widths": list(self.widths), "dropout": self.dropout_p}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the last feature map `(n, widths[0], H, W)`, the bottleneck `(n, widths[-1], h, w)`)."""
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, 2, ceil_mode=True)  # never below one pixel
            x = block(x)
            skips.append(x)
        bottleneck = x
        for block, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x, bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encode(x)[0]))


def holdout_split(
    n: int, val_fraction: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation image indices; everything trains (nothing held out) when there are
    too few images for both sides (at least 2 training images)."""
    indices = np.arange(n)
    n_val = math.ceil(n * val_fraction) if val_fraction > 0 else 0
    if n_val < 1 or n - n_val < 2:
        return indices, indices[:0]
    order = np.random.default_rng(random_state).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _check_training_data(images: np.ndarray, targets: np.ndarray, num_classes: int) -> None:
    if images.ndim != 4 or targets.ndim != 3 or len(images) != len(targets) or (
        images.shape[2:] != targets.shape[1:]
    ):
        raise ValueError(
            f"images must be (n, C, H, W) with one (H, W) mask each; got images {images.shape} "
            f"and targets {targets.shape}"
        )
    if len(images) < 2:
        raise DataError(
            f"Only {len(images)} labeled image(s) usable for training: label at least 2 "
            "images before training."
        )
    labelled = targets[targets != IGNORE]
    if labelled.size and (labelled.min() < 0 or labelled.max() >= num_classes):
        raise ValueError(f"mask values must lie in [0, {num_classes}) or be {IGNORE}")
    present = np.unique(labelled)
    if len(present) < 2:
        raise DataError(
            f"The {len(images)} labeled masks label "
            + ("no pixel" if not len(present) else f"only one class (index {present[0]})")
            + ": label pixels of at least 2 classes before training."
        )


def _class_frequency(targets: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(targets[targets != IGNORE].ravel(), minlength=num_classes)
    return counts / max(1, counts.sum())


def train(
    images: np.ndarray, targets: np.ndarray, labels: list[str], settings: TrainSettings,
    options: KindOptions | None = None,
) -> Trained:
    """Train a U-Net on masks `(n, H, W)` (IGNORE pixels ignored), measure it on a held-out
    split of images (settings.val_fraction), then (settings.refit) train it again on every
    label with the same recipe: AdamW under a one-cycle schedule for a fixed number of steps
    (max(epochs x batches per epoch, min_steps)), horizontal flips when settings.augment.
    The refit model keeps the held-out model's metrics: they describe the recipe, measured on
    images it did not train on. No temperature is fitted (1.0). Seeds are applied inside a
    forked RNG so training is reproducible without changing the caller's random state."""
    num_classes = len(labels)
    _check_labels(labels)
    images = np.ascontiguousarray(images, dtype=np.float32)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    _check_training_data(images, targets, num_classes)
    train_idx, val_idx = holdout_split(len(images), settings.val_fraction, settings.random_state)
    with training_context(settings):  # _fit seeds; the caller's RNG stays
        model, history = _fit(images, targets, train_idx, num_classes, settings)
        metrics = _evaluate(model, 1.0, images[val_idx], targets[val_idx], num_classes)
        refit = settings.refit and len(val_idx) > 0
        if refit:
            model, history = _fit(images, targets, np.arange(len(images)), num_classes,
                                  settings)
    used = np.arange(len(images)) if refit else train_idx
    frequency = _class_frequency(targets[used], num_classes)
    model.class_frequency.copy_(torch.from_numpy(frequency))
    metrics = {
        "miou": metrics.pop("miou"),
        "per_class": metrics.pop("per_class"),
        "pixel_accuracy": metrics.pop("pixel_accuracy"),
        "val_loss": metrics.pop("loss"),
        "n_train": int(len(used)),
        "n_val": int(len(val_idx)),
        "refit": refit,
        "class_frequency": [float(f) for f in frequency],
        **history,
    }
    return Trained(model=model, temperature=1.0, metrics=metrics)


def _fit(
    images: np.ndarray, targets: np.ndarray, train_idx: np.ndarray, num_classes: int,
    settings: TrainSettings,
) -> tuple[UNet, dict[str, Any]]:
    """The kinds' fixed one-cycle recipe (alpha.kinds.training) with cross-entropy over the
    labelled pixels and, when settings.augment, horizontal flips; the model in eval mode.
    Each call starts from the same seed."""
    torch.manual_seed(settings.random_state)  # the caller forks the RNG around this
    model = UNet(images.shape[1], num_classes, widths=settings.widths)

    def batch_loss(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x, y = images[batch], targets[batch]
        if settings.augment:  # horizontal flips: label-preserving for scenes
            flip = rng.random(len(batch)) < 0.5
            x, y = x.copy(), y.copy()
            x[flip], y[flip] = x[flip][..., ::-1], y[flip][..., ::-1]
        labelled = torch.from_numpy(y)
        total = F.cross_entropy(model(torch.from_numpy(x)), labelled, ignore_index=IGNORE,
                                reduction="sum")
        # the mean over labelled pixels; a batch with none gives 0, not NaN
        return total / max(1, int((labelled != IGNORE).sum()))

    return model, fit_one_cycle(model, train_idx, settings, batch_loss)


def _probability_batches(
    model: UNet, temperature: float, images: np.ndarray, batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, softmax probabilities `(b, classes, H, W)` float32) per sub-batch."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    model.eval()
    for start in range(0, len(images), batch_size):
        with torch.inference_mode():  # not across the yield: the caller's code runs between
            logits = model(torch.from_numpy(images[start : start + batch_size]))
            probs = torch.softmax(logits / temperature, dim=1)
        yield start, probs


def predict(
    model: UNet, images: np.ndarray, temperature: float = 1.0, batch_size: int = 16
) -> np.ndarray:
    """Class probability maps `(n, classes, H, W)` float32 (for small sets: tests, reports)."""
    parts = [p.numpy() for _, p in _probability_batches(model, temperature, images, batch_size)]
    if not parts:
        return np.empty((0, model.num_classes, *np.shape(images)[2:]), dtype=np.float32)
    return np.concatenate(parts)


def evaluate(
    model: nn.Module, temperature: float, images: np.ndarray, targets: np.ndarray,
    labels: list[str], options: KindOptions | None = None,
) -> dict[str, Any]:
    """mIoU (the primary metric), per-class IoU, pixel accuracy and mean cross-entropy."""
    return _evaluate(model, temperature, images, targets, len(labels))


def _evaluate(
    model: nn.Module, temperature: float, images: np.ndarray, targets: np.ndarray,
    num_classes: int, batch_size: int = 16,
) -> dict[str, Any]:
    """Metrics over labelled pixels (IGNORE pixels do not count), from torchmetrics'
    confusion matrix accumulated batch by batch.

    miou: the mean IoU over the classes present in the targets or the predictions (of the
    labelled pixels); a class neither has is left out rather than counted as 0 or 1.
    per_class: {class index: IoU} for those classes. pixel_accuracy: correct / labelled.
    """
    from torchmetrics.classification import MulticlassConfusionMatrix

    targets = np.asarray(targets, dtype=np.int64)
    n = int(len(targets))
    if n == 0 or not (targets != IGNORE).any():
        return {"miou": None, "per_class": {}, "pixel_accuracy": None, "loss": None, "n": n}
    matrix = MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=IGNORE)
    loss_sum, labelled = 0.0, 0
    with torch.inference_mode():
        for start, probs in _probability_batches(model, temperature, images, batch_size):
            y = torch.from_numpy(targets[start : start + len(probs)])
            matrix.update(probs.argmax(dim=1), y)
            keep = y != IGNORE
            picked = probs.permute(0, 2, 3, 1)[keep].double()  # (labelled, classes)
            true = picked[torch.arange(len(picked)), y[keep]]
            loss_sum += float(-torch.log(true.clamp_min(1e-12)).sum())
            labelled += int(keep.sum())
    cm = matrix.compute().double()
    tp = cm.diag()
    union = cm.sum(dim=0) + cm.sum(dim=1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), torch.zeros_like(tp))
    return {
        "miou": float(iou[present].mean()),
        "per_class": {int(c): float(iou[c]) for c in torch.nonzero(present).flatten()},
        "pixel_accuracy": float(tp.sum() / cm.sum()),
        "loss": loss_sum / labelled,
        "n": n,
    }


# ---- scores ------------------------------------------------------------------------------
def _dropout_masks(model: UNet, samples: int, random_state: int) -> torch.Tensor:
    """`(samples, channels)` channel-dropout masks (scaled by 1 / keep), one per Monte-Carlo
    sample, drawn from `random_state` alone: the same T masks for every batch and image."""
    generator = torch.Generator().manual_seed(random_state)
    keep = 1.0 - model.dropout_p
    drawn = torch.rand((samples, model.widths[0]), generator=generator) < keep
    return drawn.float() / keep if keep > 0 else drawn.float()


def _mc_probs(
    model: UNet, features: torch.Tensor, masks: torch.Tensor, temperature: float
) -> np.ndarray:
    """Fast MC dropout: probabilities `(n, classes, H, W, T)` float32 of the dropout + 1x1
    head sampled T times on the feature map computed once. Sample t drops the same channels
    for every image (as alpha.kinds.mc's shared masks do), which folds into the head's
    weights: one 1x1 convolution per sample."""
    n, _, height, width = features.shape
    # filled sample by sample in contiguous blocks, handed over as a view with T last
    out = np.empty((len(masks), n, model.num_classes, height, width), dtype=np.float32)
    weight, bias = model.head.weight, model.head.bias
    for t, mask in enumerate(masks):
        logits = F.conv2d(features, weight * mask.view(1, -1, 1, 1), bias)
        out[t] = torch.softmax(logits / temperature, dim=1).numpy()
    return np.moveaxis(out, 0, -1)


def score_batch(
    model: UNet, temperature: float, images: np.ndarray, options: KindOptions | None = None,
    *, samples: int = 0, gradients: bool = False, random_state: int = 0,
) -> BatchScores:
    """Per-image scores of a batch, reduced inside sub-batches of options.score_batch_size
    so no probability map outlives its sub-batch.

    Each pixel measure (least_confidence, margin, entropy, variation_ratio; bald too with
    samples >= 2, by fast MC dropout of the head, and then every measure reads the samples)
    becomes an image score under every reduction ("margin:topk", "margin:mean", ...) and,
    under its plain name, the configured options.reduction. class_weighted weighs each
    pixel by its predicted class's inverse training frequency. embeddings: the global
    average of the bottleneck; predicted: the class with the most predicted pixels;
    confidence: the mean of each pixel's top probability (from the model without dropout);
    gradients: BADGE's, from the pixel-mean probabilities and the embeddings.
    """
    opts = _options(options)
    images = np.ascontiguousarray(images, dtype=np.float32)
    measures = (*SINGLE_MEASURES, "bald") if samples >= 2 else SINGLE_MEASURES
    weights = inverse_frequency_weights(model.class_frequency.double().numpy())
    masks = _dropout_masks(model, samples, random_state) if samples >= 2 else None
    model.eval()
    parts = []
    for start in range(0, len(images), opts.score_batch_size):
        with torch.inference_mode():
            features, bottleneck = model.encode(torch.from_numpy(images[start:start +
                                                                        opts.score_batch_size]))
            probs = torch.softmax(model.head(features) / temperature, dim=1).numpy()
            embeddings = bottleneck.mean(dim=(2, 3)).numpy().astype(np.float32, copy=False)
            sampled = _mc_probs(model, features, masks, temperature) if masks is not None else None
        classes = probs.argmax(axis=1)  # (b, H, W)
        counts = np.stack([(classes == c).sum(axis=(1, 2)) for c in range(model.num_classes)],
                          axis=1)
        scores: dict[str, np.ndarray] = {}
        for measure in measures:
            pixel_map = PIXEL_MEASURES[measure](sampled if sampled is not None else probs)
            for how in REDUCTIONS:
                scores[f"{measure}:{how}"] = reduce_map(
                    pixel_map, how, top_percent=opts.top_percent, predicted=classes,
                    class_weights=weights,
                )
            scores[measure] = scores[f"{measure}:{opts.reduction}"]
        del sampled
        pixel_mean = probs.mean(axis=(2, 3), dtype=np.float64)
        parts.append(BatchScores(
            scores=scores,
            embeddings=embeddings,
            predicted=counts.argmax(axis=1).astype(np.int64),
            confidence=probs.max(axis=1).mean(axis=(1, 2), dtype=np.float64),
            gradients=gradient_embeddings(pixel_mean, embeddings) if gradients else None,
            n_classes=model.num_classes,
        ))
    if not parts:
        names = [f"{m}:{how}" for m in measures for how in REDUCTIONS] + list(measures)
        return BatchScores(
            scores={name: np.empty(0) for name in names},
            embeddings=np.empty((0, model.embedding_dim), dtype=np.float32),
            predicted=np.empty(0, dtype=np.int64), confidence=np.empty(0),
            gradients=(np.empty((0, model.num_classes * model.embedding_dim), np.float32)
                       if gradients else None),
            n_classes=model.num_classes,
        )
    return BatchScores.concatenate(parts)


# ---- checkpoints -------------------------------------------------------------------------
def save_checkpoint(trained: Trained, labels: list[str], settings: TrainSettings) -> bytes:
    """Weights (with the class frequencies the class-weighted reduction reads) and plain
    values only."""
    return save_model(NAME, trained.model, trained.temperature, labels, settings)


def load_checkpoint(data: bytes) -> tuple[UNet, float, list[str], dict]:
    """(model in eval mode, temperature, labels, train settings); DataError if unreadable."""
    return load_model(data, NAME, UNet)  # type: ignore[return-value]
