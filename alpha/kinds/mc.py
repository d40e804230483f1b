"""Monte-Carlo predictions for Bayesian measures: fast MC dropout, full MC dropout, ensembles.

Full MC dropout runs the whole network T times, so BALD costs T forward passes. The fast
form runs the convolutional backbone once per image and samples only the layers after it,
where all of the network's dropout sits: the backbone is deterministic in eval mode (batch
norm uses its running statistics, no dropout), so each image's samples come from the same
distribution as full MC dropout's. Each of the T samples is one dropped-out network shared
by every image (one mask per layer, as in Gal's weight-sampling view) rather than a fresh
mask per image: the per-image distribution is the same, every image is scored by the same T
networks, and drawing T masks instead of T x n makes the random numbers, which dominate
the dense layers' cost on CPU, nearly free. The model must expose `features`, `embedding`
and `head` (as the classification kind's SmallCNN does).

Outputs use baal's layout `(n, classes, samples)` with temperature-scaled softmax, so the
measures in `alpha.strategies.measures` and baal's heuristics read them alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import nn

from alpha.config import TrainSettings

McMode = Literal["fast", "last", "full"]
MC_MODES: tuple[str, ...] = ("fast", "last", "full")


def _dropouts(modules: Sequence[nn.Module]) -> list[nn.Dropout]:
    return [m for module in modules for m in module.modules() if isinstance(m, nn.Dropout)]


@contextmanager
def _dropout_on(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Ordinary dropout (a fresh mask per image) in `modules`; the rest stays in eval mode."""
    layers = _dropouts(modules)
    try:
        for layer in layers:
            layer.train()
        yield
    finally:
        for layer in layers:
            layer.eval()


class _SharedMasks:
    """Dropout masks indexed by sample: sample t uses the same masks for every image.

    The dropout layers stay in eval mode (identity); a forward hook multiplies their input by
    the current sample's mask, drawn once per (layer, sample) from a seeded generator.
    """

    def __init__(self, modules: Sequence[nn.Module], random_state: int):
        self.generator = torch.Generator().manual_seed(random_state)
        self.masks: dict[tuple[int, int], torch.Tensor] = {}
        self.sample = 0
        self.layers = _dropouts(modules)

    def _hook(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor):
        x = inputs[0]
        key = (id(layer), self.sample)
        if key not in self.masks:
            keep = 1.0 - layer.p
            drawn = torch.rand(x.shape[1:], generator=self.generator) < keep
            self.masks[key] = drawn.to(x.dtype) / keep if keep > 0 else drawn.to(x.dtype)
        return x * self.masks[key]

    @contextmanager
    def active(self) -> Iterator[_SharedMasks]:
        handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def _check_model(model: nn.Module) -> None:
    missing = [name for name in ("features", "embedding", "head") if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} has no {', '.join(missing)}: MC dropout needs a model "
            "split into features -> embedding -> head, like SmallCNN."
        )


def mc_dropout(
    model: nn.Module,
    images: np.ndarray,
    samples: int = 20,
    temperature: float = 1.0,
    mode: McMode = "fast",
    batch_size: int = 256,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """MC-dropout probabilities `(n, classes, samples)` and deterministic embeddings `(n, d)`.

    `mode`: "fast" runs the backbone once and samples every layer after it (embedding and
    head) T times with masks shared across images; "last" samples only the last dropout +
    linear layer, with the embedding fixed; "full" runs the whole network T times with
    ordinary per-image dropout (the reference, as baal does it; T times the cost). The
    embeddings are the eval-mode ones, so diversity strategies see the same points whatever
    the mode.
    """
    _check_model(model)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if mode not in MC_MODES:
        raise ValueError(f"Unknown MC mode {mode!r}: choose one of {', '.join(MC_MODES)}.")
    images = np.ascontiguousarray(images, dtype=np.float32)
    model.eval()
    sampled = [model.embedding, model.head] if mode == "fast" else [model.head]
    shared = _SharedMasks(sampled, random_state)
    probs: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(random_state)
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size])
            features = model.features(x)
            embedding = model.embedding(features)
            draws = []
            for t in range(samples):
                shared.sample = t
                if mode == "full":
                    with _dropout_on([model]):
                        draws.append(model(x))
                else:
                    with shared.active():
                        draws.append(
                            model.head(model.embedding(features) if mode == "fast" else embedding)
                        )
            logits = torch.stack(draws, dim=2)
            probs.append(torch.softmax(logits.double() / temperature, dim=1).numpy())
            embeddings.append(embedding.numpy().astype(np.float32, copy=False))
    if not probs:
        return (
            np.empty((0, model.num_classes, samples), dtype=np.float64),
            np.empty((0, model.embedding_dim), dtype=np.float32),
        )
    return np.concatenate(probs), np.concatenate(embeddings)


def ensemble(
    members: Sequence[tuple[nn.Module, float]], images: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Probabilities `(n, classes, members)` of independently trained models (a deep ensemble).

    Each member is (model, its calibration temperature). Members differ in initialisation
    and data order, which explores the loss surface more widely than dropout does, at the
    cost of training each one (see `train_ensemble`).
    """
    from alpha.kinds.classification import predict

    if not members:
        raise ValueError("an ensemble needs at least one member")
    return np.stack(
        [predict(model, images, temperature, batch_size)[0] for model, temperature in members],
        axis=2,
    )


def train_ensemble(
    images: np.ndarray,
    targets: np.ndarray,
    num_classes: int,
    settings: TrainSettings,
    members: int = 5,
) -> list[tuple[nn.Module, float]]:
    """Train `members` classifiers that differ only in `random_state` (seed, split, order)."""
    from alpha.kinds.classification import train_classifier

    trained = [
        train_classifier(
            images,
            targets,
            num_classes,
            settings.model_copy(update={"random_state": settings.random_state + member}),
        )
        for member in range(members)
    ]
    return [(t.model, t.temperature) for t in trained]
