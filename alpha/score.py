"""Score the unlabeled pool: stream images from the bucket through the model in batches.

Memory is bounded by the batch, not the pool: the kind reduces each batch to what selection
needs (alpha.strategies.BatchScores: a score per measure, an embedding, a predicted class),
so no probability map, Monte-Carlo sample or pixel outlives its batch. The next batch is
fetched and decoded while the current one is scored, since S3 latency, not compute,
usually limits scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from alpha.config import Settings
from alpha.kinds import get_kind
from alpha.store import ImageRef, Store
from alpha.strategies import BatchScores
from alpha.train import Decoded, LoadedModel, fetch_decoded


@dataclass
class PoolScores:
    """Every scored image's id and key, and what selection needs of it (`scores`, row i for
    image i); `skipped` says which images could not be read."""

    image_ids: list[str]
    keys: list[str]
    scores: BatchScores
    skipped: list[str] = field(default_factory=list)

    @property
    def embeddings(self) -> np.ndarray | None:
        return self.scores.embeddings


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
    gradients: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PoolScores:
    """Scores and embeddings for every image not in `exclude` (labeled, queued or skipped
    ids), or, with `include`, for just those images (the labeled set, whose embeddings
    core-set and TypiClust compare the pool with).

    `mc_samples` >= 2 samples the model's dropout that many times (the same masks for every
    batch) for Bayesian strategies such as BALD; `gradients` adds BADGE's gradient
    embeddings. Images are decoded with the size and channels the model was trained with,
    which may differ from the current settings if they changed since.

    `progress(done, total)` is called after each batch with the images scored (or found
    unreadable) so far; asking for it costs one more listing of `images/`, for the total.
    """
    kind = get_kind(loaded.kind)
    excluded = set(exclude)
    size = kind.input_size(loaded.train_settings)
    channels = int(loaded.train_settings.get("channels", settings.train.channels))
    wanted = set(include) if include is not None else None
    def chosen(ref: ImageRef) -> bool:
        return ref.image_id not in excluded and (wanted is None or ref.image_id in wanted)

    chunks = _chunks(filter(chosen, store.list_images()), settings.loop.score_batch_size)
    total = sum(map(chosen, store.list_images())) if progress is not None else 0

    image_ids: list[str] = []
    keys: list[str] = []
    parts: list[BatchScores] = []
    skipped: list[str] = []
    done = 0

    def fetch(chunk: list[ImageRef]) -> tuple[list[ImageRef], Decoded]:
        return chunk, fetch_decoded(store, [ref.key for ref in chunk], size, channels)

    with ThreadPoolExecutor(max_workers=1) as prefetcher:
        first = next(chunks, None)
        pending: Future | None = prefetcher.submit(fetch, first) if first else None
        while pending is not None:
            chunk, decoded = pending.result()
            following = next(chunks, None)
            pending = prefetcher.submit(fetch, following) if following else None
            skipped += decoded.problems
            if decoded.readable:
                parts.append(kind.score_batch(
                    loaded.model, loaded.temperature, decoded.images, settings.task.options,
                    samples=mc_samples if mc_samples >= 2 else 0, gradients=gradients,
                    random_state=settings.loop.random_state,
                ))
                kept = [chunk[i] for i in decoded.readable]
                image_ids += [ref.image_id for ref in kept]
                keys += [ref.key for ref in kept]
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    scores = (
        BatchScores.concatenate(parts) if parts
        else BatchScores(n_classes=len(loaded.labels))
    )
    return PoolScores(image_ids=image_ids, keys=keys, scores=scores, skipped=skipped)
