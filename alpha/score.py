"""Score the unlabeled pool: stream images from the bucket through the model in batches.

Memory is bounded by the batch, not the pool: per image only the id, the key, the class
probabilities (with a Monte-Carlo axis for Bayesian strategies) and the model's embedding,
which diversity strategies need, are kept. The next batch is fetched while the current one
is decoded and predicted, since S3 latency, not compute, usually limits scoring.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from alpha.config import Settings
from alpha.images import decode_batch
from alpha.kinds import get_kind
from alpha.store import ImageRef, Store
from alpha.train import LoadedModel, fetch_images


@dataclass
class PoolScores:
    """Class probabilities `(n, classes)`, or `(n, classes, samples)` when scored with
    Monte-Carlo dropout, and embeddings `(n, dim)` for every scored image; `skipped` says
    which could not be read."""

    image_ids: list[str]
    keys: list[str]
    probs: np.ndarray
    embeddings: np.ndarray
    skipped: list[str] = field(default_factory=list)


def _chunks(refs: Iterator[ImageRef], size: int) -> Iterator[list[ImageRef]]:
    while chunk := list(islice(refs, size)):
        yield chunk


def score_pool(
    store: Store,
    loaded: LoadedModel,
    settings: Settings,
    exclude: Collection[str] = (),
    *,
    include: Collection[str] | None = None,
    mc_samples: int = 0,
) -> PoolScores:
    """Probabilities and embeddings for every image not in `exclude` (labeled, queued or
    skipped ids), or, with `include`, for just those images (the labeled set, whose
    embeddings core-set and TypiClust compare the pool with).

    `mc_samples` >= 2 samples the model's dropout that many times (fast MC dropout, the same
    masks for every batch) for Bayesian strategies such as BALD. Images are decoded with the
    size and channels the model was trained with, which may differ from the current settings
    if they changed since.
    """
    kind = get_kind(loaded.kind)
    excluded = set(exclude)
    size = int(loaded.train_settings.get("image_size", settings.train.image_size))
    channels = int(loaded.train_settings.get("channels", settings.train.channels))
    wanted = set(include) if include is not None else None
    refs = (
        ref
        for ref in store.list_images()
        if ref.image_id not in excluded and (wanted is None or ref.image_id in wanted)
    )
    chunks = _chunks(refs, settings.loop.score_batch_size)

    image_ids: list[str] = []
    keys: list[str] = []
    probs: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    skipped: list[str] = []

    def fetch(chunk: list[ImageRef]) -> tuple[list[ImageRef], list[bytes | None], list[str]]:
        blobs, missing = fetch_images(store, [ref.key for ref in chunk])
        return chunk, blobs, missing

    with ThreadPoolExecutor(max_workers=1) as prefetcher:
        first = next(chunks, None)
        pending: Future | None = prefetcher.submit(fetch, first) if first else None
        while pending is not None:
            chunk, blobs, missing = pending.result()
            following = next(chunks, None)
            pending = prefetcher.submit(fetch, following) if following else None
            skipped += missing
            present = [i for i, blob in enumerate(blobs) if blob is not None]
            images, good, errors = decode_batch(
                [blobs[i] for i in present], [chunk[i].key for i in present], size, channels
            )
            skipped += errors
            del blobs
            if not good:
                continue
            if mc_samples >= 2:
                batch_probs, batch_embeddings = kind.predict_mc(
                    loaded.model, images, loaded.temperature, mc_samples,
                    random_state=settings.loop.random_state,
                )
            else:
                batch_probs, batch_embeddings = kind.predict(
                    loaded.model, images, loaded.temperature
                )
            kept = [chunk[present[i]] for i in good]
            image_ids += [ref.image_id for ref in kept]
            keys += [ref.key for ref in kept]
            probs.append(batch_probs)
            embeddings.append(batch_embeddings)
    n_classes = len(loaded.labels)
    empty_probs = (0, n_classes, mc_samples) if mc_samples >= 2 else (0, n_classes)
    return PoolScores(
        image_ids=image_ids,
        keys=keys,
        probs=np.concatenate(probs) if probs else np.empty(empty_probs),
        embeddings=(
            np.concatenate(embeddings) if embeddings else np.empty((0, 0), dtype=np.float32)
        ),
        skipped=skipped,
    )
