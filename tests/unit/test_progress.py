"""Progress of the long steps: training reports every optimiser step of every fit without
changing what it trains, pre-annotations report per batch, and the terminal bars exist only
where a command opened them."""

from __future__ import annotations

import io

import numpy as np
import torch
from rich.console import Console

from alpha.kinds.classification import train_classifier
from alpha.kinds.training import reporting_steps
from alpha.loop import PRE_ANNOTATE_BATCH, RoundContext, pre_annotations
from alpha.masks import encode_mask_png  # a grey PNG image
from alpha.progress import bar, both, terminal_bars
from alpha.records import LabelRecord, write_record
from alpha.train import train_model


def _data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = np.arange(n) % 3
    images = rng.random((n, 1, 8, 8), dtype=np.float32) + targets[:, None, None, None]
    return images.astype(np.float32), targets


def test_training_reports_each_step_of_each_fit_and_trains_the_same_model(settings):
    images, targets = _data()
    train = settings.train.model_copy(update={"epochs": 1, "min_steps": 7, "refit": True})
    calls: list[tuple[int, int]] = []
    with reporting_steps(lambda *step: calls.append(step)):
        observed = train_classifier(images, targets, 3, train)
    plain = train_classifier(images, targets, 3, train)

    steps = observed.metrics["steps"]
    assert steps == 7 and observed.metrics["refit"]
    assert [done for done, _ in calls] == list(range(1, 2 * steps + 1))  # held-out + refit
    assert [total for _, total in calls] == [steps] * steps + [2 * steps] * steps
    assert calls[-1] == (2 * steps, 2 * steps)
    assert observed.metrics == plain.metrics and observed.temperature == plain.temperature
    for name, weights in plain.model.state_dict().items():
        assert torch.equal(observed.model.state_dict()[name], weights), name


def _trained_store(store, settings, n: int = 70) -> list[dict]:
    """A model trained on `n` labeled images in the fake bucket; the images as push items."""
    images, targets = _data(n)
    items = []
    for i in range(n):
        key = store.image_key(f"img/{i:03d}.png")
        store.put_bytes(key, encode_mask_png(np.asarray(images[i, 0] * 60, dtype=np.uint8)))
        image_id = store.image_id_for(key)
        write_record(store, LabelRecord(image_id=image_id, image_key=key, status="labeled",
                                        label=settings.task.labels[targets[i]], source="seed"))
        items.append({"image_id": image_id, "key": key})
    return items


def test_train_model_and_pre_annotations_report_up_to_their_totals(store, settings):
    items = _trained_store(store, settings)
    assert len(items) > PRE_ANNOTATE_BATCH  # two batches
    steps: list[tuple[int, int]] = []
    info = train_model(store, settings, version="v1", progress=lambda *s: steps.append(s))
    assert [done for done, _ in steps] == list(range(1, len(steps) + 1))
    held_out, everything = sorted({total for _, total in steps})  # the refit adds its steps
    assert info.metrics["refit"] and everything - held_out == info.metrics["steps"]
    assert steps[-1] == (everything, everything)

    ctx = RoundContext(settings, store, project=None)  # pre-annotating needs no Label Studio
    batches: list[tuple[int, int]] = []
    pushed, problems = pre_annotations(ctx, "v1", items, lambda *b: batches.append(b))
    assert batches == [(PRE_ANNOTATE_BATCH, len(items)), (len(items), len(items))]
    assert [item.image_id for item in pushed] == [item["image_id"] for item in items]
    assert problems == []


def test_bars_only_inside_a_terminal_and_gone_when_done():
    assert bar("train") is None  # a served flow: no bars, no extra output
    assert both(None, None) is None
    seen: list[tuple[int, int]] = []
    with terminal_bars(Console(file=io.StringIO())) as progress:
        update = both(bar("train"), lambda *s: seen.append(s))
        assert update is not None and not progress.tasks  # shown from the first step
        update(1, 4)
        assert [(t.completed, t.total) for t in progress.tasks] == [(1, 4)]
        update(4, 4)
        assert not progress.tasks  # finished bars do not pile up
        update(5, 8)  # a refit grows the total: the bar is back
        assert [(t.completed, t.total) for t in progress.tasks] == [(5, 8)]
    assert seen == [(1, 4), (4, 4), (5, 8)]
    assert bar("train") is None
