"""Score the unlabeled pool: stream images from the bucket through the model in batches.

Memory is bounded by the batch, not the pool: per image only the id, the key and the class
probabilities are kept. The next batch is fetched while the current one is decoded and
predicted, since S3 latency, not compute, usually limits scoring.
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
    """Class probabilities for every scored image; `skipped` says which could not be read."""

    image_ids: list[str]
    keys: list[str]
    probs: np.ndarray
    skipped: list[str] = field(default_factory=list)


def _chunks(refs: Iterator[ImageRef], size: int) -> Iterator[list[ImageRef]]:
    while chunk := list(islice(refs, size)):
        yield chunk


def score_pool(
    store: Store, loaded: LoadedModel, settings: Settings, exclude: Collection[str]
) -> PoolScores:
    """Probabilities for every image not in `exclude` (labeled, queued or skipped ids).

    Images are decoded with the size and channels the model was trained with, which may
    differ from the current settings if they changed since.
    """
    kind = get_kind(loaded.kind)
    excluded = set(exclude)
    size = int(loaded.train_settings.get("image_size", settings.train.image_size))
    channels = int(loaded.train_settings.get("channels", settings.train.channels))
    refs = (ref for ref in store.list_images() if ref.image_id not in excluded)
    chunks = _chunks(refs, settings.loop.score_batch_size)

    image_ids: list[str] = []
    keys: list[str] = []
    probs: list[np.ndarray] = [np.empty((0, len(loaded.labels)), dtype=np.float64)]
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
            batch_probs, _ = kind.predict(loaded.model, images, loaded.temperature)
            kept = [chunk[present[i]] for i in good]
            image_ids += [ref.image_id for ref in kept]
            keys += [ref.key for ref in kept]
            probs.append(batch_probs)
    return PoolScores(
        image_ids=image_ids, keys=keys, probs=np.concatenate(probs), skipped=skipped
    )
