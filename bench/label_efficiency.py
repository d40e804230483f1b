"""Label efficiency: does alpha's selection beat random, and by how much?

Replays the active learning loop in-process on real data: a fixed pool and test set, a
random seed set, then rounds of "train from scratch -> score the unlabeled pool -> select a
batch -> reveal the batch's ground-truth labels" (the simulated annotator is the dataset's
own labels; no S3 or Label Studio is involved). Every strategy gets the same pool, seed set,
model, training and budget per seed; random runs beside them, and modAL's and baal's
strategies run as peers on the same models where they exist.

Writes rounds.csv (every seed and round), curves.csv (mean and 95% interval per round),
summary.csv / summary.md (the table), run.json (the command, settings, full-data accuracy,
and the fast vs full MC dropout check with baal's agreement) and curves.png under --out,
and prints the table.

`--dataset nuclei` (the `instance` kind: mask AP50 on held-out tiles of stardist's
fluorescence image) and `--dataset scenes-panoptic` (the `panoptic` kind: PQ on composed
garment scenes) run it for the object kinds, with the default strategy on the kind's blended
pixel + object image score beside object-part variants (`default/objects:max`,
`default+max`), and record the effort through the kind itself: `pre_annotate`, the true
target as Label Studio results, and `read_annotations(...).changed`, plus the share of
objects added, deleted or reshaped.

`--dataset camvid` runs the same loop for semantic segmentation (the `semantic` kind, mean
IoU on CamVid's val split, the simulated annotator revealing the true masks), comparing the
default strategy under each pixel-to-image reduction, and also records the annotator's
effort: the share of each selected image's pre-annotation (the model's mask at full size)
the true mask changes. `--extras scoring,memory,rle` measures scoring speed, scoring memory
(1,000 vs 4,000 images) and brush RLE cost on their own, without the loop.

    python bench/label_efficiency.py --dataset digits --quick
    python bench/label_efficiency.py --dataset fashion-mnist --seeds 5 --jobs 2
    python bench/label_efficiency.py --dataset camvid --quick --jobs 2
    python bench/label_efficiency.py --dataset camvid --quick --extras scoring,memory,rle
    python bench/label_efficiency.py --dataset nuclei --quick --jobs 1
    python bench/label_efficiency.py --dataset scenes-panoptic --quick --jobs 1 \
        --epochs 40 --min-steps 150      # the kind's full training: --quick alone caps it

Peers need the `bench` extra and modAL-python and baal installed without their
dependencies (bench/README.md); a missing peer is skipped with a message.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_STRATEGIES = "random,margin,default,badge,coreset,bald,modal-margin,modal-entropy,baal-bald"
PEERS = ("modal-margin", "modal-entropy", "baal-bald")
# Peers that pick exactly what one of ours picks share its trained models (and cost).
FAMILY = {"modal-margin": "margin", "modal-entropy": "entropy"}

PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(pool=0, initial=30, batch=30, rounds=8, seeds=10),
    "fashion-mnist": dict(pool=10_000, initial=100, batch=100, rounds=8, seeds=5),
    "camvid": dict(pool=0, initial=20, batch=20, rounds=6, seeds=3),
    "nuclei": dict(pool=0, initial=10, batch=10, rounds=6, seeds=5),
    "scenes-panoptic": dict(pool=300, initial=20, batch=20, rounds=4, seeds=3),
}
QUICK: dict[str, dict[str, Any]] = {
    "digits": dict(rounds=4, seeds=3),
    "fashion-mnist": dict(pool=2_000, initial=50, batch=50, rounds=3, seeds=2),
    "camvid": dict(pool=150, initial=10, batch=10, rounds=4, seeds=3),
    "nuclei": dict(rounds=4, seeds=3),
    "scenes-panoptic": dict(pool=200, initial=20, batch=20, rounds=3, seeds=3),
}
KINDS = {"digits": "classification", "fashion-mnist": "classification", "camvid": "semantic",
         "nuclei": "instance", "scenes-panoptic": "panoptic"}
"""The task kind each dataset benchmarks."""
METRICS = {"classification": "accuracy", "semantic": "miou", "instance": "ap50",
           "panoptic": "pq"}
"""The test metric of each kind's curves (the kind's PRIMARY_METRIC)."""
SECONDARY = {"instance": ("ap", "pq", "count_error", "miou"),
             "panoptic": ("pq_things", "pq_stuff", "ap50", "count_error", "miou")}
"""The object kinds' other metrics, kept per round beside the primary one."""
METRIC_NAMES = {"accuracy": ("acc", "accuracy"), "miou": ("mIoU", "mIoU"),
                "ap50": ("AP50", "mask AP50"), "pq": ("PQ", "PQ")}
"""(short, long) name of each curve metric in the tables."""
SCENE_TEST = 100
"""Composed panoptic test scenes (from Fashion-MNIST's test split, never in the pool)."""

# Segmentation training (alpha.config.TrainSettings fields; flags override them): the
# semantic kind's TRAIN_DEFAULTS, what alpha trains a segmentation model with unless told
# otherwise: a small U-Net at half CamVid's stored size (240x180 -> 120x90), epochs-based
# so that more labels get more steps, as in the pipeline (a fixed 50 steps left mIoU flat
# in the labels: the model was limited by its steps). val_fraction 0 trains once on every
# label: the same model `refit` ends with (same seed, same recipe, all labels), without the
# first training that only measures a held-out split (the benchmark measures on val).
def _train_defaults(kind: str) -> dict[str, Any]:
    from alpha.kinds import get_kind

    return dict(get_kind(kind).TRAIN_DEFAULTS)


# The object kinds: their TRAIN_DEFAULTS on grey images. Nuclei tiles are 32 x 32 (the model
# at the tiles' own size, as the kind wants: nuclei are a few pixels wide): 192 pool tiles
# instead of 48 at 64 x 64, so selection has a pool to choose from. The panoptic quick run
# caps training at max(15 epochs, 100 steps) to fit 25 minutes on one shared core.
SEGMENTATION_TRAIN: dict[str, dict[str, Any]] = {
    "camvid": dict(**_train_defaults("semantic"), channels=3, val_fraction=0.0),
    "nuclei": dict(_train_defaults("instance"), channels=1, val_fraction=0.0, image_size=32,
                   image_height=32),
    "scenes-panoptic": dict(_train_defaults("panoptic"), channels=1, val_fraction=0.0),
}
SEGMENTATION_QUICK: dict[str, dict[str, Any]] = {
    "camvid": dict(widths=(8, 16, 32, 64), epochs=25, min_steps=60),
    "nuclei": {},
    "scenes-panoptic": dict(epochs=15, min_steps=100),
}
REDUCED = ("mean", "topk", "class_weighted")
"""The reductions the segmentation arms compare ("default/mean": the default strategy on
image scores reduced by the mean)."""
EXTRAS = ("scoring", "memory", "rle")


@dataclass
class Config:
    """One benchmark run: data, budget, strategies and the training every strategy shares
    (`effort`: segmentation only, measure the annotator's changes to each selected batch)."""

    dataset: str
    strategies: list[str]
    pool: int
    initial: int
    batch: int
    rounds: int
    seeds: int
    full_seeds: int
    mc_samples: int
    cold_start: int | None
    jobs: int
    threads: int
    out: str
    baal_mc: str = "fast"
    seed_set: str = "random"
    mc_check: bool = True
    train: dict[str, Any] = field(default_factory=dict)
    effort: bool = True


# ---- data ---------------------------------------------------------------------------------
def is_segmentation(dataset: str) -> bool:
    """A mask kind (semantic, instance, panoptic): the segmentation path of the loop."""
    return KINDS[dataset] != "classification"


def is_objects(dataset: str) -> bool:
    return KINDS[dataset] in ("instance", "panoptic")


def metric_of(dataset: str) -> str:
    return METRICS[KINDS[dataset]]


def load_data(dataset: str, pool: int, train: dict[str, Any] | None = None) -> tuple:
    """(pool images, pool targets, test images, test targets), images float32 (n, 1, H, W).
    Segmentation datasets (`train` gives the model's input size) return more: see
    load_segmentation.

    Scaled to [0, 1] like alpha.images.decode_image, so the model sees what it sees in the
    pipeline. The pool is a fixed random subset of the training split (the same for every
    seed); the test set is the dataset's own.
    """
    if is_segmentation(dataset):
        return load_segmentation(dataset, pool, train or {})
    from alpha.datasets import load_digits_dataset, load_fashion_mnist

    data = load_digits_dataset() if dataset == "digits" else load_fashion_mnist()
    x, y = data.train_images, data.train_targets
    if pool and pool < len(x):
        keep = np.sort(np.random.default_rng(0).choice(len(x), size=pool, replace=False))
        x, y = x[keep], y[keep]

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0)[:, None]

    return scale(x), y, scale(data.test_images), data.test_targets


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB `(n, H, W, 3)` -> float32 `(n, 3, h, w)` in [0, 1] at `size` (width,
    height), resized bilinearly as alpha.images.decode_image does in the pipeline."""
    from PIL import Image

    out = np.empty((len(images), 3, size[1], size[0]), dtype=np.float32)
    for i, image in enumerate(images):
        resized = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)
        out[i] = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out


def load_segmentation(dataset: str, pool: int, train: dict[str, Any]) -> tuple:
    """(pool images, pool masks, test images, test masks, pool masks at full size, labels,
    test-set note, kind options) for CamVid; load_objects for the object kinds. Images
    float32 `(n, 3, h, w)` at the model's input size, masks int64 `(n, h, w)` resized by
    nearest neighbour as the kind does (255 = unlabelled); full-size masks uint8
    `(n, H, W)` are what the simulated annotator answers. The pool is a fixed random subset
    of the train split (the same for every seed); the test set is the val split, or, where
    val has no masks, a fixed 20% of train held out of the pool."""
    from alpha.datasets import load_camvid
    from alpha.kinds import get_kind
    from alpha.kinds.base import Target

    if is_objects(dataset):
        return load_objects(dataset, pool, train)
    kind = get_kind("semantic")
    size = kind.input_size(train)
    data = load_camvid(split="train")
    x, masks = data.images, data.masks
    try:
        test = load_camvid(split="val")
        test_x, test_masks = test.images, test.masks
        note = f"CamVid val ({len(test_x)} frames)"
    except FileNotFoundError:  # no val masks: hold out part of train
        order = np.random.default_rng(1).permutation(len(x))
        held, kept = np.sort(order[: len(x) // 5]), np.sort(order[len(x) // 5:])
        test_x, test_masks = x[held], masks[held]
        x, masks = x[kept], masks[kept]
        note = f"HELD OUT: {len(held)} CamVid train frames (val has no masks), not in the pool"
    if pool and pool < len(x):
        keep = np.sort(np.random.default_rng(0).choice(len(x), size=pool, replace=False))
        x, masks = x[keep], masks[keep]

    def targets(stored: np.ndarray) -> np.ndarray:
        return kind.training_targets([Target(mask=m) for m in stored], data.labels, size)

    return (resize_images(x, size), targets(masks), resize_images(test_x, size),
            targets(test_masks), masks, list(data.labels), note, kind.Options())


def load_objects(dataset: str, pool: int, train: dict[str, Any]) -> tuple:
    """load_segmentation's tuple for the object kinds: images float32 `(n, 1, h, w)` at the
    model's size (the data is made at that size: nuclei tiles cut at it, scenes composed at
    it), targets `(n, 3, h, w)` from the kind's training_targets, and the pool's Targets
    (segment ids + segment lists, what the simulated annotator answers) in place of CamVid's
    full-size masks.

    nuclei: stardist's 512 x 512 image in tiles of the model's size (instance kind, labels
    ["nucleus"]); a fixed 25% of the tiles is the test set, the rest the pool (a fixed
    random `pool` of it if given). scenes-panoptic: `pool` composed train scenes and
    SCENE_TEST test scenes of the panoptic demo's three garments (things) on wall, floor and
    grass (stuff)."""
    from alpha.datasets import compose_panoptic_scene_splits, load_stardist_tiles
    from alpha.demo import panoptic_garments, segment_targets
    from alpha.kinds import get_kind

    kind = get_kind(KINDS[dataset])
    size = kind.input_size(train)
    if dataset == "nuclei":
        data = load_stardist_tiles(tile=size, random_state=0)
        labels = list(data.things or [])
        options = kind.Options()
        note = f"stardist img2d: {len(data.test_images)} held-out {size[0]}x{size[1]} tiles"
    else:
        data = compose_panoptic_scene_splits(pool or PRESETS[dataset]["pool"], SCENE_TEST,
                                             size=size, random_state=0,
                                             source=panoptic_garments())
        labels = list(data.labels)
        options = kind.Options(things=list(data.things or []))
        note = f"{SCENE_TEST} composed scenes from Fashion-MNIST's test split"
    truth, test = segment_targets(data), segment_targets(data, test=True)
    x = data.images
    if pool and pool < len(x):
        keep = np.sort(np.random.default_rng(0).choice(len(x), size=pool, replace=False))
        x, truth = x[keep], [truth[i] for i in keep]

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0)[:, None]

    return (scale(x), kind.training_targets(truth, labels, size), scale(data.test_images),
            kind.training_targets(test, labels, size), truth, labels, note, options)
# ---- one run ------------------------------------------------------------------------------
def class_names(*targets: np.ndarray) -> list[str]:
    """Names for the class indices the targets use (the kind interface speaks names)."""
    return [str(c) for c in range(int(max(t.max() for t in targets)) + 1)]


def _classification() -> Any:
    """The classification kind, through the registry (its module also has `predict`)."""
    from alpha.kinds import get_kind

    return get_kind("classification")


CLASSIFICATION = _classification()


class Models:
    """Trained models keyed by (seed, labeled set): strategies that label the same images
    get the same model, so shared rounds (the seed set, identical picks) train once."""

    def __init__(self, cfg: Config, data: tuple[np.ndarray, ...]):
        self.cfg, self.data = cfg, data
        self.cache: dict[tuple[int, bytes], tuple[Any, float, float, float]] = {}
        self.details: dict[tuple[int, bytes], dict[str, float]] = {}
        """The object kinds' SECONDARY metrics of each cached model."""

    def get(self, seed: int, labeled: np.ndarray) -> tuple[Any, float, float, float]:
        """(model, temperature, test metric (the kind's: accuracy, mIoU, AP50, PQ), training
        seconds)."""
        from alpha.config import TrainSettings

        labeled = np.sort(labeled)
        key = (seed, labeled.tobytes())
        if key not in self.cache and is_segmentation(self.cfg.dataset):
            *found, self.details[key] = self._segmentation(seed, labeled)
            self.cache[key] = tuple(found)
        if key not in self.cache:
            x, y, x_test, y_test = self.data
            settings = TrainSettings(
                image_size=x.shape[2], threads=self.cfg.threads, random_state=seed,
                **self.cfg.train,
            )
            start = time.perf_counter()
            names = class_names(y, y_test)
            trained = CLASSIFICATION.train(x[labeled], y[labeled], names, settings, None)
            seconds = time.perf_counter() - start
            accuracy = CLASSIFICATION.evaluate(
                trained.model, trained.temperature, x_test, y_test, names)["accuracy"]
            self.cache[key] = (trained.model, trained.temperature, accuracy, seconds)
        return self.cache[key]

    def detail(self, seed: int, labeled: np.ndarray) -> dict[str, float]:
        """The SECONDARY metrics of get()'s model (empty for classification and semantic)."""
        return self.details.get((seed, np.sort(labeled).tobytes()), {})

    def _segmentation(self, seed: int, labeled: np.ndarray
                      ) -> tuple[Any, float, float, float, dict[str, float]]:
        from alpha.config import TrainSettings
        from alpha.kinds import get_kind

        kind = get_kind(KINDS[self.cfg.dataset])
        x, y, x_test, y_test, _, names, _, options = self.data[:8]
        settings = TrainSettings(threads=self.cfg.threads, random_state=seed, **self.cfg.train)
        start = time.perf_counter()
        trained = kind.train(x[labeled], y[labeled], names, settings, options)
        seconds = time.perf_counter() - start
        metrics = kind.evaluate(trained.model, trained.temperature, x_test, y_test, names,
                                options)

        def value(name: str) -> float:
            return math.nan if metrics.get(name) is None else float(metrics[name])

        return (trained.model, trained.temperature, value(metric_of(self.cfg.dataset)), seconds,
                {name: value(name) for name in SECONDARY.get(KINDS[self.cfg.dataset], ())})


class _FixedProbs:
    """The estimator interface modAL's query strategies call, over precomputed probabilities
    (row i of X is pool index i), so modAL ranks exactly the model every strategy uses."""

    def __init__(self, probs: np.ndarray):
        self.probs = probs

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 (sklearn's name)
        return self.probs[np.asarray(X).ravel()]


def baal_mc_probs(model: Any, images: np.ndarray, samples: int, temperature: float,
                  random_state: int, batch_size: int = 256) -> np.ndarray:
    """Full-network MC dropout the way baal does it: its MCDropoutModule and ModelWrapper."""
    import torch
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    mc_model = MCDropoutModule(copy.deepcopy(model)).eval()
    wrapper = ModelWrapper(mc_model, TrainingArgs(use_cuda=False, replicate_in_memory=False))
    parts = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        for start in range(0, len(images), batch_size):
            logits = wrapper.predict_on_batch(
                torch.from_numpy(images[start:start + batch_size]), iterations=samples
            )
            parts.append(torch.softmax(logits.double() / temperature, dim=1).numpy())
    return np.concatenate(parts)


def choose(strategy: str, model: Any, temperature: float, cfg: Config, pool_x: np.ndarray,
           labeled: np.ndarray, unlabeled: np.ndarray, seed: int, round_: int,
           options: Any = None) -> np.ndarray:
    """Score the pool and pick a batch with `strategy`; returns pool indices. `options`:
    a segmentation kind's Options (the kind's defaults where None)."""
    if is_segmentation(cfg.dataset):
        return choose_segmentation(strategy, model, temperature, cfg, pool_x, labeled, unlabeled,
                                   seed, round_, options)
    from alpha.kinds.mc import mc_dropout
    from alpha.strategies import DEFAULT_STRATEGY, BatchScores, select_batch

    predict = CLASSIFICATION.predict
    k, state = cfg.batch, seed * 1000 + round_
    if strategy == "random":
        return unlabeled[select_batch("random", k, BatchScores(predicted=unlabeled),
                                      random_state=state)]
    if strategy in ("modal-margin", "modal-entropy"):
        from modAL.uncertainty import entropy_sampling, margin_sampling

        probs, _ = predict(model, pool_x[unlabeled], temperature)
        query = margin_sampling if strategy == "modal-margin" else entropy_sampling
        picked, _ = query(_FixedProbs(probs), np.arange(len(unlabeled))[:, None],
                          n_instances=min(k, len(unlabeled)))
        return unlabeled[np.asarray(picked)]
    if strategy == "baal-bald":
        from baal.active.heuristics import BALD

        if cfg.baal_mc == "full":
            probs = baal_mc_probs(model, pool_x[unlabeled], cfg.mc_samples, temperature, state)
        else:  # the samples our bald scores, so the two rank the same arrays
            probs = mc_dropout(model, pool_x, cfg.mc_samples, temperature,
                               random_state=state)[0][unlabeled]
        return unlabeled[BALD()(probs)[:k]]
    name, _, candidates = strategy.partition(":")
    name, _, scoring = name.partition("@")
    name = DEFAULT_STRATEGY if name == "default" else name
    samples = cfg.mc_samples if name in ("bald", "variation_ratio") or scoring == "mc" else 0
    pool = CLASSIFICATION.score_batch(model, temperature, pool_x, samples=samples,
                                      gradients=name == "badge", random_state=state)
    picked = select_batch(
        name, k, pool.take(unlabeled), pool.embeddings[labeled],
        cold_start_labels=cfg.cold_start if strategy == "default" else 0,
        random_state=state, **({"candidates": int(candidates)} if candidates else {}),
    )
    return unlabeled[picked]


def parse_arm(strategy: str) -> tuple[str, str, str]:
    """A segmentation arm `name[/score][+aggregate]` as (name, score, aggregate), "" where
    absent: "default/mean", "default/objects:max", "default+max"."""
    rest, _, aggregate = strategy.partition("+")
    name, _, score = rest.partition("/")
    return name, score, aggregate


def arm_problem(strategy: str, dataset: str) -> str | None:
    """Why a segmentation arm cannot run on `dataset` (None: it can)."""
    from alpha.kinds.objects import AGGREGATES, OBJECT_MEASURES
    from alpha.strategies import STRATEGIES
    from alpha.strategies.reductions import REDUCTIONS

    name, score, aggregate = parse_arm(strategy)
    if name not in (*STRATEGIES, "default"):
        return f"{name!r} is no strategy"
    object_scores = {f"{m}:{how}" for m in OBJECT_MEASURES for how in AGGREGATES}
    if score and score not in REDUCTIONS and not (is_objects(dataset) and score in object_scores):
        return f"{score!r} is no reduction{' or object score' if is_objects(dataset) else ''}"
    if aggregate and not (is_objects(dataset) and aggregate in AGGREGATES):
        return f"+{aggregate}: an aggregate ({', '.join(AGGREGATES)}) of an object kind"
    return None


def choose_segmentation(strategy: str, model: Any, temperature: float, cfg: Config,
                        pool_x: np.ndarray, labeled: np.ndarray, unlabeled: np.ndarray,
                        seed: int, round_: int, options: Any = None) -> np.ndarray:
    """choose() for a segmentation kind: `name/reduction` ranks by image scores reduced that
    way ("default/mean"; for an object kind the pixel part alone); `name/score` by one
    object score ("default/objects:max": the worst object's uncertainty alone); `name+how`
    scores with Options.aggregate = how (the blended image score, objects aggregated that
    way); a plain name by the kind's image score under its default Options.

    No cold start: TypiClust's one-label-per-class threshold counts images, and every CamVid
    frame labels pixels of most classes, so the seed set already shows the model each class.
    """
    from alpha.kinds import get_kind
    from alpha.strategies import (
        DEFAULT_STRATEGY,
        NEEDS_GRADIENTS,
        NEEDS_SAMPLES,
        BatchScores,
        select_batch,
    )

    kind = get_kind(KINDS[cfg.dataset])
    k, state = cfg.batch, seed * 1000 + round_
    if strategy == "random":
        return unlabeled[select_batch("random", k, BatchScores(predicted=unlabeled),
                                      random_state=state)]
    name, score, aggregate = parse_arm(strategy)
    name = DEFAULT_STRATEGY if name == "default" else name
    options = kind.Options() if options is None else options
    if aggregate:
        options = options.model_copy(update={"aggregate": aggregate})
    samples = cfg.mc_samples if name in NEEDS_SAMPLES else 0
    # Only coreset and typiclust compare the pool with the labeled images' embeddings.
    everything = name in ("coreset", "typiclust")
    scored = kind.score_batch(model, temperature, pool_x if everything else pool_x[unlabeled],
                              options, samples=samples, gradients=name in NEEDS_GRADIENTS,
                              random_state=state)
    if score:  # the plain measure names carry the chosen reduction's (or object) scores
        scored.scores.update({m: scored.scores[score if ":" in score else f"{m}:{score}"]
                              for m in list(scored.scores) if ":" not in m})
    pool = scored.take(unlabeled) if everything else scored
    picked = select_batch(name, k, pool, scored.embeddings[labeled] if everything else None,
                          n_labeled=len(labeled), cold_start_labels=0, random_state=state)
    return unlabeled[picked]


def annotator_effort(model: Any, temperature: float, cfg: Config, images: np.ndarray,
                     truth: Any, labels: list[str], options: Any) -> dict[str, np.ndarray]:
    """SIMULATION: how much of each pre-annotation the annotator changes, per image, by
    measure name (semantic_effort's for CamVid, object_effort's for the object kinds)."""
    if is_objects(cfg.dataset):
        return object_effort(model, temperature, cfg, images, truth, labels, options)
    changed, changed_labelled = semantic_effort(model, temperature, cfg, images, truth)
    return dict(changed=changed, changed_labelled=changed_labelled)


RESHAPED_IOU = 0.75
"""A pre-annotated object matched to a true one (IoU >= 0.5) counts as reshaped below this
IoU (COCO's strict AP threshold): the annotator would have to redraw it."""


def object_effort(model: Any, temperature: float, cfg: Config, images: np.ndarray,
                  truth: list[Any], labels: list[str], options: Any) -> dict[str, np.ndarray]:
    """SIMULATION: the annotator's changes to object pre-annotations, through the kind as the
    pipeline does it: `pre_annotate` draws the model's objects at the image's size, the
    simulated annotator answers `result_from_target(truth)`, and `read_annotations(answer,
    predicted=pre-annotation).changed` is the share of pixels whose class or object changed
    (what a label records). Objects: the pre-annotation read as an annotation, its objects
    matched to the true ones at IoU >= 0.5 (alpha.kinds.objects.match); added = true
    objects without a match, deleted = predicted ones without, reshaped = matched below
    RESHAPED_IOU; objects_changed = (added + deleted + reshaped) / (matched + added +
    deleted), 0 for an image where neither has an object.

    An empty pre-annotation (no object, and for instance tasks no stuff to draw) makes
    read_annotations return changed = None; the annotator then draws every object from
    nothing, so changed is the share of pixels in a segment (counted in `empty_pre`)."""
    from alpha.kinds import get_kind
    from alpha.kinds.objects import match

    kind = get_kind(KINDS[cfg.dataset])
    height, width = images.shape[2:]
    pre = kind.pre_annotate(model, temperature, images, [(width, height)] * len(images),
                            labels, options)
    out: dict[str, list[float]] = {key: [] for key in (
        "changed", "objects_changed", "objects_added", "objects_deleted", "objects_reshaped",
        "empty_pre")}

    def things(target: Any) -> np.ndarray:
        ids = np.asarray(target.mask).astype(np.int64)
        keep = [s["id"] for s in target.segments or [] if s.get("isthing")]
        return np.where(np.isin(ids, keep), ids, 0)

    for prediction, target in zip(pre, truth, strict=True):
        answer = kind.result_from_target(target, labels, (width, height))
        truth_things = things(target)
        if prediction.result:
            changed = kind.read_annotations([answer], labels, options,
                                            predicted=prediction.result).changed
            guess_things = things(kind.read_annotations([prediction.result], labels,
                                                        options).target)
        else:
            changed = float((np.asarray(target.mask) > 0).mean())
            guess_things = np.zeros_like(truth_things)
        pairs = match(guess_things, truth_things)
        n_guess = len(np.unique(guess_things[guess_things > 0]))
        n_truth = len(np.unique(truth_things[truth_things > 0]))
        added, deleted = n_truth - len(pairs), n_guess - len(pairs)
        reshaped = sum(1 for _, _, iou in pairs if iou < RESHAPED_IOU)
        total = len(pairs) + added + deleted
        out["changed"].append(float(changed))
        out["objects_changed"].append((added + deleted + reshaped) / total if total else 0.0)
        out["objects_added"].append(added)
        out["objects_deleted"].append(deleted)
        out["objects_reshaped"].append(reshaped)
        out["empty_pre"].append(float(not prediction.result))
    return {key: np.asarray(values, dtype=np.float64) for key, values in out.items()}


def semantic_effort(model: Any, temperature: float, cfg: Config, images: np.ndarray,
                    truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SIMULATION: how much of each semantic pre-annotation the annotator changes, per image.

    The pre-annotation is the model's mask at the image's own size (class probabilities
    upsampled bilinearly, then argmax, as the kind's pre_annotate paints it); the annotator
    answers the true mask. Returns (changed: the share of all pixels whose class the answer
    changes, unlabelled answers included, which is what the pipeline records as a label's
    `changed`; changed_labelled: the same over the pixels the true mask labels).
    """
    import torch
    import torch.nn.functional as F

    from alpha.kinds import get_kind

    kind = get_kind(KINDS[cfg.dataset])
    probs = torch.from_numpy(kind.predict(model, images, temperature))
    guess = F.interpolate(probs, size=truth.shape[1:], mode="bilinear",
                          align_corners=False).argmax(dim=1).numpy()
    differs = guess != truth
    labelled = truth != 255
    changed = differs.mean(axis=(1, 2))
    changed_labelled = (differs & labelled).sum(axis=(1, 2)) / np.maximum(
        1, labelled.sum(axis=(1, 2)))
    return changed, changed_labelled


def seed_set(cfg: Config, pool_x: np.ndarray, seed: int) -> np.ndarray:
    """The first labels, shared by every strategy: random, or TypiClust on pixel PCA (the
    cold start alpha offers when there is no model yet)."""
    if cfg.seed_set == "typiclust":
        from alpha.strategies import pixel_embeddings, typiclust

        return typiclust(pixel_embeddings(pool_x, random_state=seed), cfg.initial,
                         random_state=seed)
    return np.random.default_rng(seed).choice(len(pool_x), size=cfg.initial, replace=False)


def run_strategy(strategy: str, seed: int, cfg: Config, models: Models) -> list[dict]:
    """One seed of one strategy: the rows of its learning curve."""
    pool_x = models.data[0]
    n = len(pool_x)
    labeled = seed_set(cfg, pool_x, seed)
    rows = []
    for round_ in range(cfg.rounds + 1):
        model, temperature, accuracy, train_s = models.get(seed, labeled)
        select_s = math.nan
        if round_ < cfg.rounds:
            unlabeled = np.setdiff1d(np.arange(n), labeled)
            start = time.perf_counter()
            picked = choose(strategy, model, temperature, cfg, pool_x, labeled, unlabeled,
                            seed, round_, models.data[7] if is_segmentation(cfg.dataset) else None)
            select_s = time.perf_counter() - start
            if len(np.unique(picked)) != len(picked) or np.isin(picked, labeled).any():
                raise RuntimeError(f"{strategy} picked a labeled or repeated image")
        if is_segmentation(cfg.dataset):
            row = dict(dataset=cfg.dataset, strategy=strategy, seed=seed, round=round_,
                       labels=int(len(labeled)), **{metric_of(cfg.dataset): accuracy},
                       **models.detail(seed, labeled), train_s=round(train_s, 3),
                       select_s=round(select_s, 3),
                       **{key: math.nan for key in EFFORT[KINDS[cfg.dataset]]})
            if cfg.effort and round_ < cfg.rounds:
                truth = models.data[4]
                truth = truth[picked] if isinstance(truth, np.ndarray) else [
                    truth[i] for i in picked]
                effort = annotator_effort(model, temperature, cfg, pool_x[picked], truth,
                                          models.data[5], models.data[7])
                row.update({key: float(values.mean()) for key, values in effort.items()})
            rows.append(row)
        else:
            rows.append(dict(dataset=cfg.dataset, strategy=strategy, seed=seed, round=round_,
                             labels=int(len(labeled)), accuracy=accuracy,
                             train_s=round(train_s, 3), select_s=round(select_s, 3)))
        if round_ < cfg.rounds:
            labeled = np.concatenate([labeled, picked])
    return rows


EFFORT = {"semantic": ("changed", "changed_labelled"),
          "instance": ("changed", "objects_changed", "objects_added", "objects_deleted",
                       "objects_reshaped", "empty_pre")}
EFFORT["panoptic"] = EFFORT["instance"]
"""The effort columns of each mask kind's rows (means over the batch): annotator_effort's."""


# ---- tasks run in worker processes --------------------------------------------------------
_DATA: tuple[np.ndarray, ...] | None = None


def _exit_with_parent(parent: int) -> None:
    """A pool worker outlives a parent killed by a signal (the pool's own shutdown never
    runs) and would go on training for hours: exit once the parent is gone."""
    while os.getppid() == parent:
        time.sleep(2)
    os._exit(1)


def _init_worker(cfg: Config, parent: int) -> None:
    import threading

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    import torch

    global _DATA
    torch.set_num_threads(cfg.threads)
    _DATA = load_data(cfg.dataset, cfg.pool, cfg.train)


def _task(args: tuple[str, Config, int, list[str], dict | None]) -> tuple[str, Any]:
    """One task; `preload` holds models already trained (the seed round's, shared)."""
    kind, cfg, seed, strategies, preload = args
    if kind == "curve":
        models = Models(cfg, _DATA)
        if preload:  # the seed round's (cache, details)
            models.cache.update(preload[0])
            models.details.update(preload[1])
        return kind, [row for s in strategies for row in run_strategy(s, seed, cfg, models)]
    if kind == "full":
        x = _DATA[0]
        models = Models(cfg, _DATA)
        _, _, accuracy, seconds = models.get(seed, np.arange(len(x)))
        return kind, dict(seed=seed, **{metric_of(cfg.dataset): accuracy},
                          **models.detail(seed, np.arange(len(x))), train_s=seconds)
    if kind == "round0":
        models = Models(cfg, _DATA)
        models.get(seed, seed_set(cfg, _DATA[0], seed))
        return kind, (seed, (models.cache, models.details))
    return kind, mc_check(cfg, _DATA)


def mc_check(cfg: Config, data: tuple[np.ndarray, ...]) -> dict[str, Any]:
    """Fast vs full MC dropout on one model (speed, top-k agreement) and baal agreement.

    The model is the one random selection ends with on seed 0: trained on as many labels as
    the benchmark's final round, so its uncertainty is as informative as it gets here.
    """
    from alpha.kinds.mc import mc_dropout
    from alpha.strategies import bald, entropy, top_k

    predict = CLASSIFICATION.predict
    pool_x = data[0]
    n_final = min(len(pool_x), cfg.initial + cfg.rounds * cfg.batch)
    labeled = np.random.default_rng(0).choice(len(pool_x), size=n_final, replace=False)
    model, temperature, _, _ = Models(cfg, data).get(0, labeled)
    k, t = cfg.batch, cfg.mc_samples

    def timed(fn):
        start = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - start

    _, one_pass_s = timed(lambda: predict(model, pool_x, temperature))
    runs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for mode in ("fast", "last", "full"):
        for state in (1, 2):
            (probs, _), s = timed(lambda m=mode, r=state: mc_dropout(
                model, pool_x, t, temperature, mode=m, random_state=r))
            runs[f"{mode}{state}"] = probs
            seconds.setdefault(mode, s)

    def overlap(a: str, b: str) -> int:
        return len(set(top_k(bald(runs[a]), k)) & set(top_k(bald(runs[b]), k)))

    result: dict[str, Any] = dict(
        pool=len(pool_x), labels=int(n_final), samples=t, top_k=k,
        one_pass_s=one_pass_s, fast_s=seconds["fast"], last_s=seconds["last"],
        full_s=seconds["full"], speedup_fast=seconds["full"] / seconds["fast"],
        speedup_last=seconds["full"] / seconds["last"],
        overlap_fast_vs_full=[overlap("fast1", "full2"), overlap("fast2", "full1")],
        overlap_full_vs_full=[overlap("full1", "full2")],
        overlap_fast_vs_fast=[overlap("fast1", "fast2")],
        overlap_last_vs_full=[overlap("last1", "full2"), overlap("last2", "full1")],
    )
    try:
        from baal.active.heuristics import BALD, Entropy

        probs = runs["fast1"]
        result["baal_max_abs_diff_bald"] = float(
            np.abs(BALD().get_uncertainties(probs) - bald(probs)).max())
        result["baal_max_abs_diff_entropy"] = float(
            np.abs(Entropy().get_uncertainties(probs) - entropy(probs)).max())
        (_, baal_s) = timed(lambda: baal_mc_probs(model, pool_x, t, temperature, 1))
        result["baal_full_s"] = baal_s
    except ImportError as error:
        result["baal"] = f"not installed ({error})"
    return result


# ---- statistics ---------------------------------------------------------------------------
def interval(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the half-width of its 95% t-interval over `axis` (seeds)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    half = t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, half


def labels_to_reach(labels: np.ndarray, curve: np.ndarray, target: float) -> float:
    """Labels at which the mean curve first reaches `target`, interpolated between rounds;
    NaN if it never does within the budget."""
    above = np.flatnonzero(curve >= target)
    if above.size == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(labels[0])
    x0, x1, y0, y1 = labels[i - 1], labels[i], curve[i - 1], curve[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def summarize(rows: list[dict], full: list[dict], metric: str = "accuracy"
              ) -> tuple[list[dict], list[dict]]:
    """(curves: mean/CI per strategy and round, summary: one row per strategy) of the test
    `metric` (the rows' and full-data records' key)."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})

    def matrix(strategy: str, key: str) -> np.ndarray:
        lookup = {(r["seed"], r["round"]): r[key] for r in rows if r["strategy"] == strategy}
        return np.array([[lookup[s, q] for q in rounds] for s in seeds], dtype=np.float64)

    labels = matrix(strategies[0], "labels")[0]
    span = labels[-1] - labels[0]
    full_accuracy = float(np.mean([f[metric] for f in full])) if full else math.nan
    acc = {s: matrix(s, metric) for s in strategies}
    auc = {s: np.trapezoid(acc[s], labels, axis=1) / span for s in strategies}
    base = "random" if "random" in acc else None
    random_mean = acc[base].mean(axis=0) if base else None

    curves, summary = [], []
    for s in strategies:
        mean, half = interval(acc[s])
        for q, n_labels in enumerate(labels):
            curves.append(dict(strategy=s, round=rounds[q], labels=int(n_labels),
                               mean=mean[q], ci95=half[q], low=mean[q] - half[q],
                               high=mean[q] + half[q]))
        auc_mean, auc_half = interval(auc[s])
        row: dict[str, Any] = dict(strategy=s, seeds=len(seeds), final=mean[-1],
                                   final_ci95=half[-1], auc=auc_mean, auc_ci95=auc_half)
        select_s = matrix(s, "select_s")[:, :-1]
        row["select_s"] = float(np.nanmean(select_s)) if select_s.size else math.nan
        for x in (95, 98):
            row[f"labels_to_{x}"] = labels_to_reach(labels, mean, x / 100 * full_accuracy)
        if base:
            diff_mean, diff_half = interval(auc[s] - auc[base])
            row["auc_vs_random"], row["auc_vs_random_ci95"] = diff_mean, diff_half
            round_mean, round_half = interval(acc[s] - acc[base])
            # After the seed round (shared, so identical): the largest mean deficit.
            row["worst_round_vs_random"] = float(round_mean[1:].min(initial=0.0))
            row["rounds_below_random"] = int(((round_mean + round_half) < 0).sum())
            reach = labels_to_reach(labels, mean, random_mean[-1])
            row["labels_to_random_final"] = reach
            row["ratio_to_random_final"] = reach / labels[-1]
            for x in (95, 98):
                ours, theirs = row[f"labels_to_{x}"], labels_to_reach(
                    labels, random_mean, x / 100 * full_accuracy)
                row[f"ratio_{x}"] = ours / theirs if theirs == theirs else math.nan
        summary.append(row)
    return curves, summary


# ---- output -------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def table(summary: list[dict], labels_max: int, full_accuracy: float, pool_size: int,
          metric: str = "accuracy") -> str:
    """The summary as a Markdown table (what the README and the closing note show)."""
    short, name = METRIC_NAMES.get(metric, (metric, metric))
    head = (f"| strategy | final {short} ± 95% | AUC ± 95% | ΔAUC vs random ± 95% | rounds below "
            "random | labels to random's final (ratio) | labels to 95% (ratio) | labels to "
            "98% (ratio) | select s/round |")
    lines = [head, "|" + "---|" * 9]
    for r in summary:
        def reach(labels: float, ratio: float) -> str:
            if labels != labels:
                return f"> {labels_max}"
            return f"{labels:.0f} ({_fmt(ratio, 2)})"

        lines.append(
            f"| {r['strategy']} | {100 * r['final']:.1f} ± {100 * r['final_ci95']:.1f} "
            f"| {100 * r['auc']:.2f} ± {100 * r['auc_ci95']:.2f} "
            f"| {100 * r.get('auc_vs_random', math.nan):+.2f} ± "
            f"{100 * r.get('auc_vs_random_ci95', math.nan):.2f} "
            f"| {r.get('rounds_below_random', '-')} "
            f"| {reach(r.get('labels_to_random_final', math.nan), r.get('ratio_to_random_final', math.nan))} "  # noqa: E501
            f"| {reach(r['labels_to_95'], r.get('ratio_95', math.nan))} "
            f"| {reach(r['labels_to_98'], r.get('ratio_98', math.nan))} "
            f"| {_fmt(r['select_s'], 2)} |"
        )
    lines.append(f"\nFull-data {name} (all {pool_size} labels): {100 * full_accuracy:.2f}%; "
                 f"95%/98% targets are shares of it. AUC = mean {name} over the label range.")
    return "\n".join(lines)


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    rows = list(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(curves: list[dict], full_accuracy: float, title: str, path: Path,
         ylabel: str = "test accuracy") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'alpha[bench]')")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for strategy in dict.fromkeys(c["strategy"] for c in curves):
        points = [c for c in curves if c["strategy"] == strategy]
        x = [c["labels"] for c in points]
        # Peers dashed: where they pick what ours pick, the two lines coincide.
        ax.plot(x, [c["mean"] for c in points], marker="o", ms=3, label=strategy,
                lw=2.5 if strategy in ("default", "random") else 1.2,
                ls="--" if strategy in PEERS else "-")
        ax.fill_between(x, [c["low"] for c in points], [c["high"] for c in points], alpha=0.15)
    if full_accuracy == full_accuracy:
        for share in (0.95, 0.98):
            ax.axhline(share * full_accuracy, color="grey", ls=":", lw=1)
    ax.set_xlabel("labels")
    ax.set_ylabel(f"{ylabel} (mean, 95% interval)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---- command line -------------------------------------------------------------------------
def segmentation_strategies(quick: bool = False) -> str:
    """random, the default strategy under the kind's default reduction and under each other
    reduction, and top-k margin, entropy and BALD (T = --mc-samples), all under the default
    reduction. --quick keeps only random and the reductions, to fit in 20 minutes on 2 cores
    (BALD's scoring alone costs 5x a single pass); add the others with --strategies."""
    from alpha.kinds import get_kind

    default = get_kind("semantic").Options().reduction
    others = [f"default/{how}" for how in REDUCED if how != default]
    return ",".join(["random", "default", *others,
                     *([] if quick else ["margin", "entropy", "bald"])])


def object_strategies(quick: bool = False) -> str:
    """random, the default strategy on the kind's image score (pixel and object parts
    blended), and on the object part alone under max (the worst object's uncertainty);
    without --quick also the blend with objects aggregated by max, and the pixel part alone
    (the kind's default reduction)."""
    from alpha.kinds import get_kind

    reduction = get_kind("instance").Options().reduction
    return ",".join(["random", "default", "default/objects:max",
                     *([] if quick else ["default+max", f"default/{reduction}"])])


def parse(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    from alpha.strategies import DEFAULT_COLD_START_LABELS, STRATEGIES
    from alpha.strategies.reductions import REDUCTIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), default="digits")
    p.add_argument("--strategies", default=None,
                   help=f"comma-separated: default, {', '.join(STRATEGIES)}, "
                        f"{', '.join(PEERS)}; add @mc to score with fast MC dropout "
                        "(e.g. margin@mc), :N to cluster N x batch candidates "
                        "(cluster_margin:3). Segmentation: no peers, @mc or :N; /REDUCTION "
                        f"ranks by that reduction of the pixel maps ({', '.join(REDUCTIONS)}: "
                        "default/mean); object kinds also /OBJECT_SCORE (default/objects:max: "
                        "the object part alone) and +AGGREGATE (default+max: Options.aggregate)"
                        " (default: classification "
                        f"{DEFAULT_STRATEGIES}; camvid random, default, default/<each other "
                        "reduction>, and, not with --quick, margin, entropy, bald; nuclei and "
                        "scenes-panoptic random, default, default/objects:max, and, not with "
                        "--quick, default+max, default/topk)")
    p.add_argument("--quick", action="store_true", help="a smaller run that takes minutes")
    for name in ("pool", "initial", "batch", "rounds", "seeds"):
        p.add_argument(f"--{name}", type=int, help="default: per dataset")
    p.add_argument("--full-seeds", type=int, default=2,
                   help="trainings on the whole pool for full-data accuracy")
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--cold-start", type=int, default=DEFAULT_COLD_START_LABELS,
                   help="'default' uses typiclust below this many labels (default: alpha's, "
                        "one per class); the other strategies never switch (classification "
                        "only: segmentation never switches)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--out", default=None, help="default: bench/results/<dataset>")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the table, CSVs and plot from --out's rounds.csv and run.json")
    # Training shared by every strategy: alpha.config.TrainSettings, whose defaults (what
    # alpha trains with) apply to every flag not given (segmentation: the preset's first).
    p.add_argument("--epochs", type=int)
    p.add_argument("--min-steps", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--widths")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction)
    p.add_argument("--refit", action=argparse.BooleanOptionalAction,
                   help="train again on every label after calibrating on the held-out split")
    p.add_argument("--train-batch", type=int, help="segmentation: images per training step")
    p.add_argument("--image-size", type=int, help="segmentation: the model's input width")
    p.add_argument("--image-height", type=int, help="segmentation: the model's input height")
    p.add_argument("--val-fraction", type=float,
                   help="segmentation: the held-out share (0: train once on every label)")
    p.add_argument("--baal-mc", choices=("fast", "full"), default="fast",
                   help="samples baal's BALD ranks: ours (fast MC, the same distribution) or "
                        "baal's own full-network MC dropout (20x the scoring time)")
    p.add_argument("--seed-set", choices=("random", "typiclust"), default="random",
                   help="how the first labels are chosen (the same for every strategy)")
    p.add_argument("--mc-check", action=argparse.BooleanOptionalAction, default=True,
                   help="time fast vs full MC dropout and compare with baal (classification)")
    p.add_argument("--effort", action=argparse.BooleanOptionalAction, default=True,
                   help="segmentation: measure the share of each selected image's "
                        "pre-annotation the simulated annotator changes")
    p.add_argument("--extras", default=None,
                   help=f"segmentation: run only these measurements ({', '.join(EXTRAS)}), "
                        "not the loop; they write extras.json and extras.md under --out")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)  # "images,samples": one run
    a = p.parse_args(argv)

    segmentation = is_segmentation(a.dataset)
    sizes = dict(PRESETS[a.dataset])
    if a.quick:
        sizes.update(QUICK[a.dataset])
    for name in sizes:
        if getattr(a, name) is not None:
            sizes[name] = getattr(a, name)
    if a.strategies is None:
        a.strategies = (object_strategies(a.quick) if is_objects(a.dataset)
                        else segmentation_strategies(a.quick) if segmentation
                        else DEFAULT_STRATEGIES)
    strategies = [s.strip() for s in a.strategies.split(",") if s.strip()]
    if segmentation:
        unknown = [f"{s} ({arm_problem(s, a.dataset)})" for s in strategies
                   if s != "random" and arm_problem(s, a.dataset)]
    else:
        unknown = [s for s in strategies
                   if s.split(":")[0].removesuffix("@mc") not in (*STRATEGIES, *PEERS, "default")]
    if unknown:
        p.error(f"unknown strategies {unknown}")
    strategies = [s for s in strategies if _available(s)]
    train = dict(epochs=a.epochs, min_steps=a.min_steps, learning_rate=a.learning_rate,
                 augment=a.augment, weight_decay=a.weight_decay, refit=a.refit,
                 widths=tuple(int(w) for w in a.widths.split(",")) if a.widths else None)
    train = {name: value for name, value in train.items() if value is not None}
    segmentation_only = dict(batch_size=a.train_batch, image_size=a.image_size,
                             image_height=a.image_height, val_fraction=a.val_fraction)
    segmentation_only = {n: v for n, v in segmentation_only.items() if v is not None}
    if segmentation:  # the preset's training, then the flags given
        train = {**SEGMENTATION_TRAIN[a.dataset],
                 **(SEGMENTATION_QUICK[a.dataset] if a.quick else {}), **train,
                 **segmentation_only}
    elif segmentation_only or a.extras:
        p.error("--train-batch, --image-size, --image-height, --val-fraction and --extras are "
                "for segmentation datasets")
    if a.extras and a.dataset != "camvid":
        p.error("--extras measures CamVid's semantic scoring: use --dataset camvid")
    if a.extras:
        a.extras = [e.strip() for e in a.extras.split(",") if e.strip()]
        if set(a.extras) - set(EXTRAS):
            p.error(f"unknown extras {sorted(set(a.extras) - set(EXTRAS))}: "
                    f"choose from {', '.join(EXTRAS)}")
    return Config(dataset=a.dataset, strategies=strategies, full_seeds=a.full_seeds,
                  mc_samples=a.mc_samples, cold_start=a.cold_start, jobs=a.jobs,
                  threads=a.threads, out=a.out or f"bench/results/{a.dataset}", train=train,
                  baal_mc=a.baal_mc, mc_check=a.mc_check and not segmentation,
                  seed_set=a.seed_set, effort=a.effort, **sizes), a


def _available(strategy: str) -> bool:
    module = {"modal-margin": "modAL", "modal-entropy": "modAL", "baal-bald": "baal"}.get(
        strategy)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        print(f"skipping peer {strategy}: {module} is not installed (pip install -e "
              "'.[bench]' && pip install --no-deps modAL-python==0.4.2.1 baal==2.1.0)",
              file=sys.stderr)
        return False
    return True


def run(cfg: Config) -> tuple[list[dict], dict[str, Any]]:
    """Every task on cfg.jobs processes: (curve rows, run record with full-data and MC)."""
    if is_segmentation(cfg.dataset):
        return run_segmentation(cfg)
    family = dict(FAMILY, **({"baal-bald": "bald"} if cfg.baal_mc == "fast" else {}))
    families: dict[str, list[str]] = {}
    for s in cfg.strategies:
        families.setdefault(family.get(s, s), []).append(s)
    tasks: list[tuple[str, Config, int, list[str], dict | None]] = (
        [("mc", cfg, 0, [], None)] if cfg.mc_check else [])
    tasks += [("full", cfg, seed, [], None) for seed in range(cfg.full_seeds)]
    tasks += [("curve", cfg, seed, group, None) for group in families.values()
              for seed in range(cfg.seeds)]
    print(f"{cfg.dataset}: {len(tasks)} tasks on {cfg.jobs} processes; "
          f"strategies {', '.join(cfg.strategies)}", flush=True)
    started = time.perf_counter()
    rows: list[dict] = []
    full: list[dict] = []
    mc: dict[str, Any] = {}
    with get_context("spawn").Pool(cfg.jobs, _init_worker, (cfg, os.getpid())) as workers:
        for done, (kind, value) in enumerate(workers.imap_unordered(_task, tasks), 1):
            if kind == "curve":
                rows += value
            elif kind == "full":
                full.append(value)
            else:
                mc = value
            print(f"  {done}/{len(tasks)} tasks, {time.perf_counter() - started:.0f} s",
                  flush=True)
    order = {s: i for i, s in enumerate(cfg.strategies)}
    rows.sort(key=lambda r: (order[r["strategy"]], r["seed"], r["round"]))
    from alpha.config import TrainSettings

    training = TrainSettings(threads=cfg.threads, **cfg.train).model_dump(
        exclude={"image_size", "random_state"})
    record = dict(config=asdict(cfg), training=training,
                  command=" ".join(["python", *sys.argv]),
                  pool_size=len(load_data(cfg.dataset, cfg.pool)[0]), full_data=full,
                  seconds=time.perf_counter() - started, mc_check=mc)
    return rows, record


def run_segmentation(cfg: Config) -> tuple[list[dict], dict[str, Any]]:
    """run() for a segmentation kind: first each seed's seed-round model (every strategy
    starts from it, so it trains once per seed, not once per strategy) beside the full-data
    trainings, then one task per strategy and seed (4-5 trainings each, so the processes
    stay busy to the end)."""
    from alpha.config import TrainSettings
    from alpha.kinds import get_kind

    started = time.perf_counter()
    first = [("round0", cfg, seed, [], None) for seed in range(cfg.seeds)]
    first += [("full", cfg, seed, [], None) for seed in range(cfg.full_seeds)]
    total = len(first) + cfg.seeds * len(cfg.strategies)
    print(f"{cfg.dataset}: {total} tasks on {cfg.jobs} processes; strategies "
          f"{', '.join(cfg.strategies)}", flush=True)
    rows: list[dict] = []
    full: list[dict] = []
    seeded: dict[int, dict] = {}
    done = 0
    with get_context("spawn").Pool(cfg.jobs, _init_worker, (cfg, os.getpid())) as workers:
        for kind, value in workers.imap_unordered(_task, first):
            if kind == "full":
                full.append(value)
            else:
                seeded[value[0]] = value[1]
            done += 1
            print(f"  {done}/{total} tasks ({kind}), {time.perf_counter() - started:.0f} s",
                  flush=True)
        tasks = [("curve", cfg, seed, [s], seeded[seed]) for seed in range(cfg.seeds)
                 for s in cfg.strategies]
        for _, value in workers.imap_unordered(_task, tasks):
            rows += value
            done += 1
            print(f"  {done}/{total} tasks ({value[0]['strategy']}, seed {value[0]['seed']}),"
                  f" {time.perf_counter() - started:.0f} s", flush=True)
    order = {s: i for i, s in enumerate(cfg.strategies)}
    rows.sort(key=lambda r: (order[r["strategy"]], r["seed"], r["round"]))
    full.sort(key=lambda f: f["seed"])
    data = load_data(cfg.dataset, cfg.pool, cfg.train)
    kind = get_kind(KINDS[cfg.dataset])
    training = TrainSettings(threads=cfg.threads, **cfg.train).model_dump(
        exclude={"random_state"})
    options = data[7]
    record = dict(config=asdict(cfg), training=training, kind=kind.NAME,
                  metric=metric_of(cfg.dataset), options=options.model_dump(),
                  reduction=options.reduction, test_set=data[6],
                  command=" ".join(["python", *sys.argv]), pool_size=len(data[0]),
                  test_size=len(data[2]), full_data=full,
                  seconds=time.perf_counter() - started, mc_check={})
    return rows, record


def round_table(curves: list[dict], metric: str = "accuracy") -> str:
    """Mean ± 95% of the metric (in %) per strategy and round, as a Markdown table."""
    strategies = list(dict.fromkeys(c["strategy"] for c in curves))
    labels = [c["labels"] for c in curves if c["strategy"] == strategies[0]]
    name = METRIC_NAMES.get(metric, (metric, metric))[0]
    lines = [f"| {name} % at labels | " + " | ".join(str(n) for n in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for s in strategies:
        cells = [f"{100 * c['mean']:.1f} ± {100 * c['ci95']:.1f}" for c in curves
                 if c["strategy"] == s]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


EFFORT_TABLES = {"changed": "pixels changed %", "objects_changed":
                 "objects added, deleted or reshaped %"}
"""The effort measures shown per round (the others only over all rounds)."""
EFFORT_NAMES = {"changed_labelled": "(labelled pixels only)",
                "objects_added": "objects added per image",
                "objects_deleted": "objects deleted per image",
                "objects_reshaped": "objects reshaped per image",
                "empty_pre": "empty pre-annotations %"}


def effort_summary(rows: list[dict]) -> tuple[list[dict], str]:
    """The annotator's changes per strategy and round (mean over seeds of each seed's mean
    over the batch, ± 95%), as rows and Markdown tables (one per EFFORT_TABLES measure,
    with every other effort measure over all rounds); empty without effort columns."""
    if not rows or "changed" not in rows[0]:
        return [], ""
    measures = [key for key in ("changed", "changed_labelled", *EFFORT["instance"][1:])
                if key in rows[0]]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})[:-1]  # the last round selects nothing
    out: list[dict] = []
    for s in strategies:
        for key in measures:
            lookup = {(r["seed"], r["round"]): r[key] for r in rows if r["strategy"] == s}
            values = np.array([[lookup[d, q] for q in rounds] for d in seeds], dtype=np.float64)
            if np.isnan(values).all():
                return [], ""
            mean, half = interval(values)
            overall, overall_half = interval(values.mean(axis=1))
            labels = [r["labels"] for r in rows if r["strategy"] == s and r["seed"] == seeds[0]]
            out += [dict(strategy=s, measure=key, round=q, labels=labels[q], mean=mean[q],
                         ci95=half[q]) for q in rounds]
            out.append(dict(strategy=s, measure=key, round="all", labels="", mean=float(overall),
                            ci95=float(overall_half)))

    def whole(r: dict) -> str:  # shares in %, counts per image as they are
        scale, digits = (1, 2) if r["measure"] in ("objects_added", "objects_deleted",
                                                   "objects_reshaped") else (100, 1)
        return f"{scale * r['mean']:.{digits}f} ± {scale * r['ci95']:.{digits}f}"

    labels = [r["labels"] for r in out if r["strategy"] == strategies[0]
              and r["measure"] == "changed" and r["round"] != "all"]
    texts = []
    for shown, title in EFFORT_TABLES.items():
        if shown not in measures:
            continue
        # The measures without a table of their own go with the first table, over all rounds.
        others = [m for m in measures if m not in EFFORT_TABLES] if not texts else []
        lines = [f"| {title}, batch picked at labels | "
                 + " | ".join(str(n) for n in labels) + " | all rounds |"
                 + "".join(f" {EFFORT_NAMES.get(m, m)} (all rounds) |" for m in others),
                 "|---|" + "---|" * (len(labels) + 1 + len(others))]
        for s in strategies:
            mine = [r for r in out if r["strategy"] == s]
            cells = [whole(r) for r in mine if r["measure"] == shown]
            rest = [whole(next(r for r in mine if r["measure"] == m and r["round"] == "all"))
                    for m in others]
            lines.append(f"| {s} | " + " | ".join(cells + rest) + " |")
        texts.append("\n".join(lines))
    return out, "\n\n".join(texts)


def secondary_table(rows: list[dict], metrics: Iterable[str]) -> str:
    """The object kinds' other metrics (in %, count error per image) at the seed round and
    the last round, mean ± 95% over seeds, as a Markdown table; empty without them."""
    metrics = [m for m in metrics if rows and m in rows[0]]
    if not metrics:
        return ""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    first, last = min(r["round"] for r in rows), max(r["round"] for r in rows)
    labels = {q: next(r["labels"] for r in rows if r["round"] == q) for q in (first, last)}
    lines = ["| strategy | " + " | ".join(f"{m} at {labels[q]}" for m in metrics
                                          for q in (first, last)) + " |",
             "|---|" + "---|" * (2 * len(metrics))]
    for s in strategies:
        cells = []
        for m in metrics:
            scale = 1 if m == "count_error" else 100
            for q in (first, last):
                mean, half = interval(np.array(
                    [r[m] for r in rows if r["strategy"] == s and r["round"] == q], float))
                cells.append(f"{scale * mean:.{2 if scale == 1 else 1}f} ± "
                             f"{scale * half:.{2 if scale == 1 else 1}f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(rows: list[dict], record: dict[str, Any], out: Path) -> None:
    """Write the CSVs, the table and the plot from a run's rows and record, and print."""
    cfg = record["config"]
    metric = record.get("metric", "accuracy")
    curves, summary = summarize(rows, record["full_data"], metric)
    accuracies = [f[metric] for f in record["full_data"]]
    full_accuracy = float(np.mean(accuracies)) if accuracies else math.nan
    labels_max = cfg["initial"] + cfg["rounds"] * cfg["batch"]
    write_csv(out / "rounds.csv", rows)
    write_csv(out / "curves.csv", curves)
    write_csv(out / "summary.csv", summary)
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str))
    text = table(summary, labels_max, full_accuracy, record["pool_size"], metric)
    short, name = METRIC_NAMES.get(metric, (metric, metric))
    if metric != "accuracy":  # segmentation: the curves and the annotator's effort too
        text += "\n\n" + round_table(curves, metric)
        secondary = SECONDARY.get(record.get("kind", ""), ())
        if secondary:
            text += "\n\n" + secondary_table(rows, secondary)
        text += (f"\n\nTest set: {record.get('test_set')}. Full-data {name} per training: "
                 + ", ".join(f"{100 * f[metric]:.2f}%" for f in record["full_data"])
                 + "".join(f"; {m} " + ", ".join(f"{f.get(m, math.nan):.3f}"
                                                  for f in record["full_data"])
                           for m in secondary) + ".")
        effort, effort_text = effort_summary(rows)
        if effort:
            write_csv(out / "effort.csv", effort)
            text += "\n\n" + effort_text
    (out / "summary.md").write_text(text + "\n")
    plot(curves, full_accuracy, f"{cfg['dataset']}: {cfg['seeds']} seeds, {cfg['initial']} "
         f"seed labels + {cfg['rounds']} x {cfg['batch']}", out / "curves.png",
         f"test {name}")
    print(text)
    print(mc_summary(record["mc_check"]))


def _read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in row:
            if key in ("seed", "round", "labels"):
                row[key] = int(row[key])
            elif key not in ("dataset", "strategy"):
                row[key] = float(row[key])
    return rows


# ---- extras: segmentation cost, measured on their own ---------------------------------------
def _extras_model(cfg: Config, data: tuple) -> Any:
    """A model of the benchmark's architecture, briefly trained on 10 pool images (scoring
    and memory cost depend on the architecture and input size, not on the weights)."""
    from alpha.config import TrainSettings
    from alpha.kinds import get_kind

    kind = get_kind(KINDS[cfg.dataset])
    settings = TrainSettings(threads=cfg.threads, random_state=0,
                             **{**cfg.train, "epochs": 1, "min_steps": 5})
    return kind.train(data[0][:10], data[1][:10], data[5], settings, kind.Options()).model


def scoring_cost(cfg: Config, images: int = 128, repeats: int = 2) -> dict[str, Any]:
    """Images per second through the kind's score_batch (every measure under every
    reduction) with one pass and with T Monte-Carlo samples, and through pre_annotate at
    CamVid's stored size (the masks pushed to Label Studio, brush RLE included); the best
    of `repeats` timings, cfg.threads torch threads."""
    import torch

    from alpha.kinds import get_kind

    torch.set_num_threads(cfg.threads)
    kind = get_kind(KINDS[cfg.dataset])
    data = load_data(cfg.dataset, 0, cfg.train)
    model = _extras_model(cfg, data)
    x = data[0][np.arange(images) % len(data[0])]
    height, width = data[4].shape[1:]
    result: dict[str, Any] = dict(images=images, threads=cfg.threads,
                                  input=list(kind.input_size(cfg.train)), runs={})
    for label, samples in (("one pass", 0), ("MC T=10", 10), ("MC T=20", 20)):
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            kind.score_batch(model, 1.0, x, kind.Options(), samples=samples, random_state=0)
            seconds.append(time.perf_counter() - start)
        result["runs"][label] = dict(seconds=min(seconds), images_per_s=images / min(seconds))
    few = x[:32]
    start = time.perf_counter()
    kind.pre_annotate(model, 1.0, few, [(width, height)] * len(few), data[5], kind.Options())
    seconds = time.perf_counter() - start
    result["runs"][f"pre-annotate at {width}x{height}"] = dict(
        seconds=seconds, images_per_s=len(few) / seconds)
    return result


def _rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(cfg: Config, images: int, samples: int, checkpoint: str) -> dict[str, Any]:
    """In a fresh process: peak memory of scoring `images` pool images the way alpha.score
    does, in chunks of loop.score_batch_size decoded one at a time (so the pool is never in
    memory at once). The pool repeats CamVid's train frames (367, kept as uint8 at the
    model's size) as often as needed; the model is the parent's, from its checkpoint.

    The peak is the kernel's high-water mark (VmHWM), reset just before scoring (Linux's
    /proc/self/clear_refs), so what loading did before does not hide it."""
    import gc
    import tracemalloc

    import torch

    from alpha.config import LoopSettings
    from alpha.datasets import load_camvid
    from alpha.kinds import get_kind
    from alpha.strategies import BatchScores

    torch.set_num_threads(cfg.threads)
    kind = get_kind(KINDS[cfg.dataset])
    model, temperature, _, _ = kind.load_checkpoint(Path(checkpoint).read_bytes())
    size = kind.input_size(cfg.train)
    frames = np.stack([np.asarray(resize_images(image[None], size)[0] * 255 + 0.5, np.uint8)
                       for image in load_camvid(split="train").images])
    gc.collect()
    chunk = LoopSettings().score_batch_size
    before = _rss_mib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
        reset = True
    except OSError:
        reset = False
    tracemalloc.start()
    start = time.perf_counter()
    parts = []
    for first in range(0, images, chunk):
        index = np.arange(first, min(images, first + chunk)) % len(frames)
        batch = frames[index].astype(np.float32) / 255.0  # what decode_batch hands the kind
        parts.append(kind.score_batch(model, temperature, batch, kind.Options(),
                                      samples=samples, random_state=0))
        del batch
    scores = BatchScores.concatenate(parts)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _rss_mib("VmHWM")  # without the reset: the process's peak, loading included
    return dict(images=images, samples=samples, chunk=chunk, seconds=seconds,
                rss_before_mib=before, peak_rss_mib=peak, scoring_rss_mib=peak - before,
                hwm_reset=reset, traced_peak_mib=traced_peak / 2**20,
                kept_scores_mib=(sum(v.nbytes for v in scores.scores.values())
                                 + scores.embeddings.nbytes) / 2**20)


def memory_cost(cfg: Config, argv: list[str]) -> list[dict[str, Any]]:
    """memory_child for 1,000 and 4,000 images, one pass and T=20, each in its own process
    (a fresh process per measurement: nothing earlier has grown its heap)."""
    import tempfile

    from alpha.config import TrainSettings
    from alpha.kinds import get_kind
    from alpha.kinds.base import Trained

    kind = get_kind(KINDS[cfg.dataset])
    data = load_data(cfg.dataset, 0, cfg.train)
    settings = TrainSettings(threads=cfg.threads, random_state=0, **cfg.train)
    checkpoint = kind.save_checkpoint(Trained(_extras_model(cfg, data), 1.0), data[5], settings)
    results = []
    with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
        handle.write(checkpoint)
        handle.flush()
        for samples in (0, 20):
            for images in (1000, 4000):
                command = [sys.executable, __file__, *argv,
                           "--memory-child", f"{images},{samples},{handle.name}"]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  memory: {results[-1]}", flush=True)
    return results


def rle_cost(frames: int = 20, big_frames: int = 5) -> list[dict[str, Any]]:
    """Label Studio brush RLE (label_studio_sdk.converter.brush) encode and decode time per
    mask: one 0/255 mask per class present in each CamVid frame, at the stored 240x180 and
    upscaled 4x by nearest neighbour to 960x720 (CamVid's original size), checked to
    round-trip."""
    from label_studio_sdk.converter.brush import decode_rle, mask2rle

    from alpha.datasets import load_camvid

    masks = load_camvid(split="train").masks
    results = []
    for factor, count in ((1, frames), (4, big_frames)):
        encode, decode, sizes, per_frame = [], [], [], []
        for mask in masks[:count]:
            big = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
            frame_s = 0.0
            for c in np.unique(big):
                if c == 255:
                    continue
                binary = np.where(big == c, 255, 0).astype(np.uint8)
                start = time.perf_counter()
                rle = mask2rle(binary)
                middle = time.perf_counter()
                back = decode_rle(rle)
                end = time.perf_counter()
                if not np.array_equal(back.reshape(*big.shape, 4)[..., 3], binary):
                    raise RuntimeError("brush RLE did not round-trip")
                encode.append(middle - start)
                decode.append(end - middle)
                sizes.append(len(rle))
                frame_s += end - start
            per_frame.append(frame_s)
        height, width = masks.shape[1] * factor, masks.shape[2] * factor
        results.append(dict(size=f"{width}x{height}", frames=count, masks=len(encode),
                            encode_ms=1000 * float(np.mean(encode)),
                            decode_ms=1000 * float(np.mean(decode)),
                            rle_values=float(np.mean(sizes)),
                            frame_ms=1000 * float(np.mean(per_frame))))
    return results


def extras_table(extras: dict[str, Any]) -> str:
    lines = []
    if "scoring" in extras:
        s = extras["scoring"]
        lines += [f"Scoring {s['images']} images at {s['input'][0]}x{s['input'][1]}, "
                  f"{s['threads']} torch thread(s):", "",
                  "| scoring | images/s | seconds |", "|---|---|---|"]
        lines += [f"| {name} | {r['images_per_s']:.1f} | {r['seconds']:.2f} |"
                  for name, r in s["runs"].items()]
        lines.append("")
    if "memory" in extras:
        lines += ["| pool images (CamVid frames repeated) | MC samples | RSS before MiB | peak "
                  "RSS while scoring MiB | growth MiB | numpy peak (tracemalloc) MiB | scores "
                  "kept MiB | seconds |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {m['images']} | {m['samples'] or '-'} | {m['rss_before_mib']:.0f} | "
                  f"{m['peak_rss_mib']:.0f} | {m['scoring_rss_mib']:.0f} | "
                  f"{m['traced_peak_mib']:.1f} | {m['kept_scores_mib']:.2f} | "
                  f"{m['seconds']:.1f} |" for m in extras["memory"]]
        lines.append("")
    if "rle" in extras:
        lines += ["| brush RLE, 0/255 mask | masks | encode ms/mask | decode ms/mask | RLE "
                  "values | ms per frame (all its classes, both ways) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['masks']} ({r['frames']} frames) | {r['encode_ms']:.2f} | "
                  f"{r['decode_ms']:.2f} | {r['rle_values']:.0f} | {r['frame_ms']:.1f} |"
                  for r in extras["rle"]]
    return "\n".join(lines)


def run_extras(cfg: Config, which: list[str], argv: list[str]) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "extras.json"
    extras: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    child_argv = [a for a in argv if not a.startswith("--extras")]
    if "--extras" in argv:  # "--extras X" as two words
        i = argv.index("--extras")
        child_argv = argv[:i] + argv[i + 2:]
    started = time.perf_counter()
    for name in which:
        begun = time.perf_counter()
        if name == "scoring":
            extras["scoring"] = scoring_cost(cfg)
        elif name == "memory":
            extras["memory"] = memory_cost(cfg, child_argv)
        else:
            extras["rle"] = rle_cost()
        extras.setdefault("commands", {})[name] = " ".join(["python", *sys.argv])
        extras.setdefault("seconds", {})[name] = time.perf_counter() - begun
        path.write_text(json.dumps(extras, indent=2))
    text = extras_table(extras)
    (out / "extras.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out}/extras.json, extras.md in {time.perf_counter() - started:.0f} s")


def main(argv: list[str] | None = None) -> None:
    cfg, options = parse(argv)
    out = Path(cfg.out)
    if options.memory_child:
        images, samples, checkpoint = options.memory_child.split(",", 2)
        print(json.dumps(memory_child(cfg, int(images), int(samples), checkpoint)))
        return
    if options.extras:
        run_extras(cfg, options.extras, sys.argv[1:] if argv is None else argv)
        return
    if options.report_only:
        report(_read_rows(out / "rounds.csv"), json.loads((out / "run.json").read_text()), out)
        return
    out.mkdir(parents=True, exist_ok=True)
    rows, record = run(cfg)
    report(rows, record, out)
    print(f"wrote {out}/ in {record['seconds']:.0f} s")


def mc_summary(mc: dict[str, Any]) -> str:
    if not mc:
        return ""
    return (
        f"MC dropout on {mc['pool']} images, T={mc['samples']}: one pass {mc['one_pass_s']:.2f}"
        f" s, fast {mc['fast_s']:.2f} s, full {mc['full_s']:.2f} s -> fast is "
        f"{mc['speedup_fast']:.1f}x faster (last-layer only: {mc['speedup_last']:.1f}x). "
        f"Top-{mc['top_k']} BALD overlap: fast vs full {mc['overlap_fast_vs_full']}, "
        f"full vs full (other dropout seed) {mc['overlap_full_vs_full']}, fast vs fast "
        f"{mc['overlap_fast_vs_fast']}, last-layer vs full {mc['overlap_last_vs_full']}. "
        f"baal agreement (max |diff|): BALD {mc.get('baal_max_abs_diff_bald', '-')}, "
        f"entropy {mc.get('baal_max_abs_diff_entropy', '-')}."
    )


if __name__ == "__main__":
    main()
