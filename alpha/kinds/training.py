"""What every kind's training shares: mini-batches, the fixed one-cycle schedule, torch's
thread count and RNG around a training, and the checkpoint format.

A kind supplies the network and the loss of one batch; the recipe is the same for all, so a
benchmark compares labels and kinds, not optimisers. Because every kind trains here,
`reporting_steps` can follow any kind's training without each kind's `train` forwarding a
callback.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from alpha.config import TrainSettings
from alpha.errors import DataError

CHECKPOINT_FORMAT = 1


@dataclass
class _StepCounter:
    """Steps over every fit of one training: a kind may fit more than once (held-out, then
    refit on every label), and each fit adds its steps to the total when it starts."""

    progress: Callable[[int, int], None]
    done: int = 0
    total: int = 0


_STEPS: ContextVar[_StepCounter | None] = ContextVar("alpha_training_steps", default=None)


@contextmanager
def reporting_steps(progress: Callable[[int, int], None] | None) -> Iterator[None]:
    """Call `progress(done, total)` after each optimiser step of the trainings inside
    (`done` counts on across fits; `total` grows by each fit's steps as it starts). It
    only observes: the model, its metrics and every random draw are the same without it."""
    if progress is None:
        yield
        return
    token = _STEPS.set(_StepCounter(progress))
    try:
        yield
    finally:
        _STEPS.reset(token)


def batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Mini-batches, skipping a trailing batch of one (batch norm cannot train on one image)."""
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) > 1 or len(order) == 1:
            yield batch


def steps(n_train: int, settings: TrainSettings) -> int:
    """settings.epochs over the data, or settings.min_steps batches when that is more.

    A fixed epoch count gives a model trained on 80 images a few dozen steps and one trained
    on 8,000 thousands; with few labels the model is then undertrained rather than short of
    data, and a strategy comparison measures the optimiser instead of the labels.
    """
    per_epoch = max(1, sum(1 for _ in batches(np.arange(n_train), settings.batch_size)))
    return max(settings.epochs * per_epoch, settings.min_steps)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to `threads` (None: left as they are) and restored
    afterwards: torch's setting is process-wide, so whoever sets it puts it back."""
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)


@contextmanager
def training_context(settings: TrainSettings) -> Iterator[None]:
    """settings.threads for torch, and a forked RNG (the fit seeds itself; the caller's
    random state stays as it was), both restored afterwards."""
    with torch_threads(settings.threads), torch.random.fork_rng(devices=[]):
        yield


def fit_one_cycle(
    model: nn.Module,
    train_idx: np.ndarray,
    settings: TrainSettings,
    batch_loss: Callable[[np.ndarray, np.random.Generator], torch.Tensor],
) -> dict[str, Any]:
    """AdamW under a one-cycle learning rate (warm-up, then annealing to near zero) for a
    fixed number of steps (see `steps`) over shuffled mini-batches of `train_idx`;
    `batch_loss(batch indices, rng)` is the kind's loss of one batch (it may augment with
    rng). Leaves the model in eval mode; returns the steps and the last epoch's mean loss.
    The caller seeds torch before building the model; the batch order is seeded here."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    total = steps(len(train_idx), settings)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=total, pct_start=0.15
    )
    rng = np.random.default_rng(settings.random_state)
    counter = _STEPS.get()
    if counter is not None:
        counter.total += total
    step, last_losses = 0, deque(maxlen=max(1, len(train_idx) // settings.batch_size))
    model.train()
    while step < total:
        for batch in batches(rng.permutation(train_idx), settings.batch_size):
            optimizer.zero_grad()
            loss = batch_loss(batch, rng)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            last_losses.append(loss.item())
            if counter is not None:
                counter.done += 1
                counter.progress(counter.done, counter.total)
            if step == total:
                break
    model.eval()
    return {"steps": total, "train_loss": float(np.mean(last_losses))}  # ~ the last epoch


def save_checkpoint(kind: str, model: nn.Module, temperature: float, labels: list[str],
                    settings: TrainSettings) -> bytes:
    """Weights plus plain values only, so it loads with torch.load(weights_only=True).
    `model.arch()` gives what rebuilds the network."""
    if model.num_classes != len(labels):
        raise ValueError(f"model has {model.num_classes} classes but {len(labels)} labels given")
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "kind": kind,
            "arch": model.arch(),
            "state_dict": model.state_dict(),
            "temperature": float(temperature),
            "labels": list(labels),
            "train_settings": settings.model_dump(mode="json"),
        },
        buffer,
    )
    return buffer.getvalue()


def load_checkpoint(data: bytes, kind: str, build: Callable[..., nn.Module]
                    ) -> tuple[nn.Module, float, list[str], dict]:
    """(model in eval mode, temperature, labels, train settings) from checkpoint bytes of
    `kind`, the network rebuilt by `build(**arch)`; DataError when they are not that."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if checkpoint.get("kind") != kind or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"kind {checkpoint.get('kind')!r}, format {checkpoint.get('format')!r}"
            )
        model = build(**checkpoint["arch"])
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as error:
        raise DataError(
            f"The model checkpoint cannot be loaded ({type(error).__name__}: {error}): "
            "train a new model (run a round)."
        ) from None
    model.eval()
    return (
        model,
        float(checkpoint["temperature"]),
        list(checkpoint["labels"]),
        dict(checkpoint["train_settings"]),
    )
