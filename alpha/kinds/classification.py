"""Image classification: one label per image (the `classification` task kind).

Everything classification-specific lives here, behind alpha.kinds.base.Kind: the Label
Studio label config, the conversion between Label Studio results and label names (with
majority vote over several annotators), the pre-annotation a task carries, the per-image
uncertainty scores, and the model (a small CNN trained from scratch, calibrated with
temperature scaling so its probabilities can be trusted as uncertainty).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import train_test_split
from torch import nn

from alpha.config import TrainSettings
from alpha.consensus import majority_vote
from alpha.errors import AnnotationError, DataError
from alpha.kinds.base import BatchScores, KindOptions, PreAnnotation, Reading, Target, Trained
from alpha.kinds.mc import mc_dropout
from alpha.kinds.training import fit_one_cycle, training_context
from alpha.kinds.training import load_checkpoint as load_model
from alpha.kinds.training import save_checkpoint as save_model
from alpha.strategies.scores import SINGLE_MEASURES

NAME = "classification"
FROM_NAME = "label"
TO_NAME = "image"
DATA_KEY = "image"
RESULT_TYPE = "choices"
TRAIN_DEFAULTS: dict[str, Any] = {}
"""None: TrainSettings' own defaults are the classification recipe."""
PRIMARY_METRIC = "accuracy"
MEASURES = SINGLE_MEASURES
"""Scores of one prediction per image; with Monte-Carlo samples `bald` joins them."""
Options = KindOptions  # classification has no options of its own

# Below 0.5, a small validation set the model gets all right drives the fit towards 0,
# which saturates every probability and makes uncertainty scores tie.
TEMPERATURE_BOUNDS = (0.5, 20.0)


# ---- Label Studio ------------------------------------------------------------------------
def task_images(options: KindOptions | None = None) -> tuple[str, ...]:
    """None: a classification task shows only its image."""
    return ()


def label_config(labels: list[str], options: KindOptions | None = None) -> str:
    """The Label Studio labeling interface: the image and one single-choice list of labels."""
    from xml.sax.saxutils import quoteattr

    choices = "".join(f"<Choice value={quoteattr(label)}/>" for label in labels)
    return (
        f'<View><Image name="{TO_NAME}" value="${DATA_KEY}" zoom="true"/>'
        f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">'
        f"{choices}</Choices></View>"
    )


def result_from_label(label: str) -> list[dict]:
    """A Label Studio result that selects `label` (for pre-annotations and simulated labels)."""
    return [
        {
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": RESULT_TYPE,
            "value": {"choices": [label]},
        }
    ]


def label_from_result(result: Any, labels: list[str]) -> str:
    """The label an annotator chose; AnnotationError when the result does not fit the config.

    A result that cannot be read as exactly one known label is refused rather than guessed,
    so a changed label config or a bad annotation never turns into a wrong training label.
    Every region must be what `label_config` declares (a `choices` result from `label` on
    `image`): a rectangle, a brush mask or a text box in a classification project means the
    annotation was made for another config, and no part of it is trusted.
    """
    fix = "fix the annotation in Label Studio or the task's label config"
    if not isinstance(result, list):
        raise AnnotationError(
            f"The annotation's result is {_brief(result)}, not a list of regions: {fix}."
        )
    if not result:
        raise AnnotationError(
            "The annotation has an empty result (no label chosen): choose a label in Label "
            "Studio, or skip the task if none fits."
        )
    if not all(isinstance(item, dict) for item in result):
        raise AnnotationError(f"The annotation's result holds {_brief(result)}: {fix}.")
    ours = [item for item in result if item.get("from_name") == FROM_NAME]
    foreign = sorted({f"{item.get('from_name')}: {item.get('type')}" for item in result
                      if item.get("from_name") != FROM_NAME})
    if not ours:
        raise AnnotationError(
            f"The annotation has no {FROM_NAME!r} choices, only results the label config does "
            f"not declare ({', '.join(foreign)}): {fix}."
        )
    if foreign:
        raise AnnotationError(
            f"The annotation has results the label config does not declare "
            f"({', '.join(foreign)}) besides its {FROM_NAME!r} choices: {fix}."
        )
    chosen: list[Any] = []
    for item in ours:
        if item.get("type") != RESULT_TYPE:
            raise AnnotationError(
                f"The annotation's {FROM_NAME!r} result has type {item.get('type')!r}, but the "
                f"label config declares {RESULT_TYPE!r}: {fix}."
            )
        if item.get("to_name", TO_NAME) != TO_NAME:
            raise AnnotationError(
                f"The annotation's {FROM_NAME!r} result points at {item.get('to_name')!r}, not "
                f"at {TO_NAME!r}: {fix}."
            )
        value = item.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise AnnotationError(
                f"The annotation's {FROM_NAME!r} result has a malformed value "
                f"{_brief(value)} (expected {{'choices': [a label]}}): {fix}."
            )
        chosen += choices
    if not chosen:
        raise AnnotationError(f"The annotation selects no label: {fix}.")
    if len(chosen) > 1:
        raise AnnotationError(
            f"The annotation selects {len(chosen)} labels ({', '.join(map(str, chosen))}) "
            f"but classification takes exactly one: {fix}."
        )
    label = chosen[0]
    if label not in labels:
        raise AnnotationError(
            f"The annotation's label {label!r} is not one of the task's labels "
            f"({', '.join(labels)}): add it to task.labels or {fix}."
        )
    return label


def _brief(value: Any, limit: int = 80) -> str:
    """A value for a message, cut short: an annotation may hold a whole brush mask."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def pre_annotation(probs: np.ndarray, labels: list[str]) -> PreAnnotation:
    """The model's best guess `probs` `(classes,)` as a choice, scored by its probability,
    so annotators correct rather than pick; the task's score is the same confidence."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(labels),):
        raise ValueError(f"probs has shape {probs.shape} but there are {len(labels)} labels")
    best = int(probs.argmax())
    item = result_from_label(labels[best])[0]
    item["score"] = float(probs[best])
    return PreAnnotation(result=[item], score=float(probs[best]))


def prediction(probs: np.ndarray, labels: list[str], score: float, model_version: str) -> dict:
    """A Label Studio prediction (pre-annotation) with an explicit task score."""
    return {"model_version": model_version, "score": float(score),
            "result": pre_annotation(probs, labels).result}


def result_from_target(target: Target, labels: list[str], size: tuple[int, int]) -> list[dict]:
    if target.label is None:
        raise ValueError("a classification target is a label name")
    return result_from_label(target.label)


def read_annotations(
    results: Sequence[Any], labels: list[str], options: KindOptions | None = None,
    predicted: Any = None, size: tuple[int, int] | None = None,
) -> Reading:
    """Several annotations (overlap) resolve by majority, ties to the latest
    (alpha.consensus); votes and agreement are kept only when there were several.
    `changed` says whether the chosen label differs from the pre-annotation's choice."""
    chosen = [label_from_result(result, labels) for result in results]
    consensus = majority_vote(chosen)
    several = len(chosen) > 1
    changed = None
    if predicted:
        try:
            changed = float(label_from_result(predicted, labels) != consensus.label)
        except AnnotationError:  # a prediction of another label config says nothing here
            changed = None
    return Reading(
        target=Target(label=consensus.label), index=consensus.index,
        votes=consensus.votes if several else None,
        agreement=consensus.agreement if several else None, changed=changed,
    )


def target_problem(target: Target, labels: list[str]) -> str | None:
    if target.label is None:
        return "labeled but has no label"
    if target.label not in labels:
        return f"label {target.label!r} is not one of task.labels"
    return None


def training_targets(
    targets: Sequence[Target], labels: list[str], size: tuple[int, int]
) -> np.ndarray:
    """Class indices `(n,)`."""
    return np.array([labels.index(t.label) for t in targets], dtype=np.int64)


def simulated_target(
    truth: Target, labels: list[str], wrong: bool, draw: float, rng: np.random.Generator
) -> Target:
    """SIMULATION: the true label, or when `wrong` another one chosen by `draw` in [0, 1)."""
    others = [name for name in labels if name != truth.label]
    if wrong and others:
        return Target(label=others[int(draw * len(others))])
    return truth


def input_size(train_settings: dict[str, Any]) -> tuple[int, int]:
    side = int(train_settings.get("image_size", 28))
    return side, int(train_settings.get("image_height") or side)


# ---- the model ---------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A small conv net that trains in seconds on CPU from a few hundred labels.

    The embedding layer is exposed so diversity strategies can use the same forward pass.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        embedding_dim: int = 128,
        widths: tuple[int, ...] = (32, 64, 128),
        dropout: float = 0.25,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        self.embedding_dim = embedding_dim
        self.widths = tuple(widths)
        blocks: list[nn.Module] = []
        channels, side = in_channels, image_size
        for width in widths:
            blocks += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if side >= 2:  # never pool below one pixel, whatever the image size
                blocks.append(nn.MaxPool2d(2))
                side //= 2
            channels = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.embedding = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels * 4, embedding_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding_dim, num_classes))

    def arch(self) -> dict[str, Any]:
        """What is needed to rebuild this network from a checkpoint."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "embedding_dim": self.embedding_dim,
            "widths": list(self.widths),
        }

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


TrainedClassifier = Trained  # what train_classifier returns (the kinds' common type)


def _split(
    n: int, targets: np.ndarray, val_fraction: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices; stratified when every class can appear on both sides.

    Without enough data for both sides (at least 2 training images) everything trains and
    nothing is held out: a tiny first round should still give a model.
    """
    indices = np.arange(n)
    n_val = math.ceil(n * val_fraction) if val_fraction > 0 else 0
    if n_val < 1 or n - n_val < 2:
        return indices, indices[:0]
    counts = np.bincount(targets)
    present = int((counts > 0).sum())
    stratify = (
        targets if counts[counts > 0].min() >= 2 and min(n_val, n - n_val) >= present else None
    )
    train, val = train_test_split(
        indices, test_size=n_val, random_state=random_state, stratify=stratify
    )
    return np.sort(train), np.sort(val)


def _logits(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        parts = [
            model(torch.from_numpy(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
    if not parts:
        return torch.empty((0, model.num_classes))
    return torch.cat(parts)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """One scalar T minimising validation NLL of softmax(logits / T) (Guo et al., 2017).

    Optimised in log space so T stays positive, then clamped so a tiny validation set cannot
    make the model absurdly sure or unsure.
    """
    if len(logits) == 0:
        return 1.0
    logits = logits.detach().double()
    targets = targets.long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    value = float(log_t.detach().exp())
    if not math.isfinite(value):
        return 1.0
    return float(min(max(value, TEMPERATURE_BOUNDS[0]), TEMPERATURE_BOUNDS[1]))


def _check_training_data(images: np.ndarray, targets: np.ndarray, num_classes: int) -> None:
    if images.ndim != 4 or len(images) != len(targets):
        raise ValueError(
            f"images must be (n, C, H, W) with one target each; got {images.shape} images "
            f"and {len(targets)} targets"
        )
    if len(images) < 2:
        raise DataError(
            f"Only {len(images)} labeled image(s) usable for training: label at least 2 "
            "images (of at least 2 classes) before training."
        )
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes}), got {targets.min()}..")
    present = np.unique(targets)
    if len(present) < 2:
        raise DataError(
            f"All {len(images)} labeled images have the same class (index {present[0]}): "
            "label images of at least 2 classes before training."
        )


def train_classifier(
    images: np.ndarray, targets: np.ndarray, num_classes: int, settings: TrainSettings
) -> TrainedClassifier:
    """Train a SmallCNN on labeled images, calibrate and measure it on a held-out split,
    then (settings.refit) train it again on every label with the same recipe.

    Every training runs a fixed one-cycle schedule rather than early stopping: with a few
    hundred labels, stopping on a validation set of a few dozen images picked noisy epochs
    and moved test accuracy by several points between otherwise equal runs (the label
    efficiency benchmark measured 73.7 +- 1.2% at 300 Fashion-MNIST labels with early
    stopping against 76.0 +- 0.5% with the schedule, and 77.6 +- 0.2% after the refit).
    The refit model keeps the held-out model's temperature and metrics: they describe the
    recipe, measured on images it did not train on. Seeds are applied inside a forked RNG so
    training is reproducible without changing the caller's global random state.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    _check_training_data(images, targets, num_classes)
    train_idx, val_idx = _split(len(images), targets, settings.val_fraction, settings.random_state)
    with training_context(settings):  # _fit seeds; the caller's RNG stays
        model, history = _fit(images, targets, train_idx, num_classes, settings)
        val_images, val_targets = images[val_idx], targets[val_idx]
        if len(val_idx):
            logits = _logits(model, val_images)
            temperature = fit_temperature(logits, torch.from_numpy(val_targets))
            metrics = _evaluate(model, val_images, val_targets, temperature, num_classes)
            metrics["val_loss_uncalibrated"] = float(
                F.cross_entropy(logits.double(), torch.from_numpy(val_targets))
            )
        else:
            temperature = 1.0
            metrics = {"accuracy": None, "per_class": {}, "loss": None, "n": 0}
        refit = settings.refit and len(val_idx) > 0
        if refit:
            model, history = _fit(images, targets, np.arange(len(images)), num_classes, settings)
    metrics = {
        "accuracy": metrics.pop("accuracy"),
        "per_class": metrics.pop("per_class"),
        "val_loss": metrics.pop("loss"),
        "val_loss_uncalibrated": metrics.pop("val_loss_uncalibrated", None),
        "n_train": int(len(images) if refit else len(train_idx)),
        "n_val": int(len(val_idx)),
        "refit": refit,
        **history,
    }
    return TrainedClassifier(model=model, temperature=temperature, metrics=metrics)


def _fit(
    images: np.ndarray,
    targets: np.ndarray,
    train_idx: np.ndarray,
    num_classes: int,
    settings: TrainSettings,
) -> tuple[SmallCNN, dict[str, Any]]:
    """The kinds' fixed one-cycle recipe (alpha.kinds.training) with cross-entropy and, when
    settings.augment, small shifts; returns the final model in eval mode. Each call starts
    from the same seed, so the held-out and the refit training are reproducible."""
    torch.manual_seed(settings.random_state)  # the caller forks the RNG around this
    model = SmallCNN(images.shape[1], num_classes, settings.image_size, widths=settings.widths)

    def batch_loss(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x, y = torch.from_numpy(images[batch]), torch.from_numpy(targets[batch])
        if settings.augment:
            x = _shift(x, rng)
        return F.cross_entropy(model(x), y)

    return model, fit_one_cycle(model, train_idx, settings, batch_loss)


def _shift(x: torch.Tensor, rng: np.random.Generator, pad: int = 2) -> torch.Tensor:
    """Shift each image by up to `pad` pixels (zero fill): label-preserving for any image
    kind, unlike flips. Off by default: on centred Fashion-MNIST it did not help (bench)."""
    offsets = torch.from_numpy(rng.integers(0, 2 * pad + 1, size=(len(x), 2)))
    rows = offsets[:, :1, None] + torch.arange(x.shape[2])[None, :, None]  # (b, h, 1)
    cols = offsets[:, 1:, None] + torch.arange(x.shape[3])[None, None, :]  # (b, 1, w)
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (b, h + 2pad, w + 2pad, c)
    shifted = padded[torch.arange(len(x))[:, None, None], rows, cols]  # (b, h, w, c)
    return shifted.permute(0, 3, 1, 2).contiguous()


def predict(
    model: nn.Module, images: np.ndarray, temperature: float, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities (float64) and embeddings (float32) for a batch of images.

    Softmax runs in float64: with a small temperature float32 would round the runner-up
    probabilities to 0 and erase the uncertainty ordering.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    model.eval()
    probs: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            emb = model.embed(torch.from_numpy(images[start : start + batch_size]))
            logits = model.head(emb).double() / temperature
            probs.append(torch.softmax(logits, dim=1).numpy())
            embeddings.append(emb.numpy().astype(np.float32, copy=False))
    if not probs:
        return (
            np.empty((0, model.num_classes), dtype=np.float64),
            np.empty((0, model.embedding_dim), dtype=np.float32),
        )
    return np.concatenate(probs), np.concatenate(embeddings)


def train(
    images: np.ndarray, targets: np.ndarray, labels: list[str], settings: TrainSettings,
    options: KindOptions | None = None,
) -> Trained:
    return train_classifier(images, targets, len(labels), settings)


def score_batch(
    model: SmallCNN, temperature: float, images: np.ndarray, options: KindOptions | None = None,
    *, samples: int = 0, gradients: bool = False, random_state: int = 0,
) -> BatchScores:
    """Every measure of the batch's calibrated probabilities (and `bald` with samples >= 2,
    by fast MC dropout: the backbone runs once, only the layers after it are sampled), the
    embeddings, the predicted class and its probability, and BADGE's gradient embeddings
    when asked. The probabilities themselves are dropped here, batch by batch."""
    if samples >= 2:
        probs, embeddings = mc_dropout(model, images, samples, temperature,
                                       random_state=random_state)
    else:
        probs, embeddings = predict(model, images, temperature)
    return BatchScores.from_probs(probs, embeddings, gradients=gradients)


def pre_annotate(
    model: SmallCNN, temperature: float, images: np.ndarray, sizes: Sequence[tuple[int, int]],
    labels: list[str], options: KindOptions | None = None,
) -> list[PreAnnotation]:
    probs, _ = predict(model, images, temperature)
    return [pre_annotation(p, labels) for p in probs]


def evaluate(
    model: nn.Module, temperature: float, images: np.ndarray, targets: np.ndarray,
    labels: list[str], options: KindOptions | None = None,
) -> dict[str, Any]:
    """Accuracy (the primary metric), per-class accuracy and calibrated NLL."""
    return _evaluate(model, images, targets, temperature, len(labels))


def _evaluate(
    model: nn.Module,
    images: np.ndarray,
    targets: np.ndarray,
    temperature: float,
    num_classes: int,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall, by class index) and calibrated NLL."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return {"accuracy": None, "per_class": {}, "loss": None, "n": 0}
    probs, _ = predict(model, images, temperature)
    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(targets, predicted, labels=list(range(num_classes)))
    support = matrix.sum(axis=1)
    per_class = {
        c: float(matrix[c, c] / support[c]) for c in range(num_classes) if support[c] > 0
    }
    loss = -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None)).mean()
    return {
        "accuracy": float(accuracy_score(targets, predicted)),
        "per_class": per_class,
        "loss": float(loss),
        "n": int(len(targets)),
    }


# ---- checkpoints -------------------------------------------------------------------------
def save_checkpoint(trained: Trained, labels: list[str], settings: TrainSettings) -> bytes:
    return save_model(NAME, trained.model, trained.temperature, labels, settings)


def load_checkpoint(data: bytes) -> tuple[SmallCNN, float, list[str], dict]:
    """(model in eval mode, temperature, labels, train settings); DataError if unreadable."""
    return load_model(data, NAME, SmallCNN)  # type: ignore[return-value]
