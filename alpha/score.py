"""Score the unlabeled pool: stream it shard by shard from the pool cache through the model.

The pool is read through alpha.pool_cache: the first read GETs and decodes every image
(`loop.score_prefetch` shards at once, 16 images each, while the model scores the shard
before), later rounds read packed uint8 shards and only rebuild what changed. Shards are
scored in key order, in batches of `loop.score_batch_size`, and each batch is reduced by
the kind to what selection needs (alpha.strategies.BatchScores), so no probability map,
Monte-Carlo sample or pixel outlives its batch.

What is kept of the reduced rows is a `Keep`:
- `Keep()` (every row): ids, keys, per-measure scores, predicted class, confidence and the
  embedding `(n, d)` of every scored image: about 4 d + 300 bytes an image (the small CNN's
  d = 128: ~0.8 KB, 80 MB at 100,000 images, 8 GB at ten million), what core-set, TypiClust
  and BADGE need, since they compare every pool image with every other (BADGE's gradients,
  `(n, classes x d)`, come on top). This grows with the pool, by design.
- `Keep(rank_by, limit)`: the `limit` best rows by each named score, merged: a candidate
  set whose size does not depend on the pool. Uncertainty top-k, cluster-margin (its
  candidates x k), the class-balance guard and the queue's ranked refills read only those
  rows, so for them peak memory is the shards in flight plus the candidates: bounded.

Shards can be scored anywhere (`plan_job` / `score_planned` / `finish_job`: what the flows
map over Dask workers); the candidates of each shard contain the candidates of the whole
pool that fall in it, so merging them in shard order gives exactly the single-process set.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from queue import Full, Queue
from typing import TypeVar

import numpy as np

from alpha.config import Settings
from alpha.images import to_float
from alpha.kinds import get_kind
from alpha.pool_cache import PoolCache, Preprocessing, Shard, ShardInfo, ShardPlan
from alpha.store import Store
from alpha.strategies import BatchScores, top_k
from alpha.strategies.batch import RANDOM_DRAW
from alpha.train import LoadedModel

T = TypeVar("T")


@dataclass
class PoolScores:
    """The kept images' ids and keys, and what selection needs of them (`scores`, row i for
    image i, in pool order); `n_scored` images were scored in all (the pool's size, also
    when only candidates were kept); `skipped` says which images could not be read."""

    image_ids: list[str]
    keys: list[str]
    scores: BatchScores
    skipped: list[str] = field(default_factory=list)
    n_scored: int = 0

    @property
    def embeddings(self) -> np.ndarray | None:
        return self.scores.embeddings


@dataclass(frozen=True)
class Keep:
    """Which scored rows a scoring keeps: with `limit` None every row; else, for each score
    name in `rank_by`, the `limit` highest (ties to the earlier image, as `top_k`), their
    union in pool order."""

    rank_by: tuple[str, ...] = ()
    limit: int | None = None


@dataclass(frozen=True)
class ScoreJob:
    """What to score: every image not in `exclude` (labeled, queued or skipped ids), or,
    with `include`, only those; with `mc_samples` >= 2 Monte-Carlo dropout samples, with
    `gradients` BADGE's gradient embeddings; and what to keep."""

    exclude: frozenset[str] = frozenset()
    include: frozenset[str] | None = None
    mc_samples: int = 0
    gradients: bool = False
    keep: Keep = Keep()

    def chosen(self, image_id: str) -> bool:
        return image_id not in self.exclude and (self.include is None
                                                 or image_id in self.include)

    def for_ids(self, image_ids: Collection[str]) -> ScoreJob:
        """The same job with its id sets cut to `image_ids` (one shard's): what a worker
        scoring that shard needs to be sent."""
        ids = set(image_ids)
        return replace(self, exclude=frozenset(self.exclude & ids),
                       include=None if self.include is None else frozenset(self.include & ids))


@dataclass
class ShardResult:
    """One shard scored: its manifest entry (None: every image gone), the kept rows (ids,
    keys, scores: None when none was scored), how many were scored, and the problems of the
    chosen images that could not be read."""

    info: ShardInfo | None
    image_ids: list[str]
    keys: list[str]
    scores: BatchScores | None
    scored: int
    problems: list[str]


def random_rank(image_ids: Sequence[str], random_state: int) -> np.ndarray:
    """A uniform draw in [0, 1) per image `(n,)`, fixed by the seed and the image's id: the
    top k of it are a uniformly random k of the pool, whatever the order or the sharding."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{random_state}:{i}".encode(),
                                                    digest_size=8).digest(), "big") / 2.0**64
                     for i in image_ids], dtype=np.float64)


class Candidates:
    """The rows a `Keep` keeps, fed batch by batch in pool order (pruned as they come, so
    at most a few times `limit` rows per score are held)."""

    def __init__(self, keep: Keep):
        self.keep = keep
        self.ids: list[str] = []
        self.keys: list[str] = []
        self.parts: list[BatchScores] = []
        self.rows = 0

    def add(self, ids: Sequence[str], keys: Sequence[str], scores: BatchScores) -> None:
        self.ids += ids
        self.keys += keys
        self.parts.append(scores)
        self.rows += len(scores)
        limit = self.keep.limit
        if limit is not None and self.rows > 4 * limit * max(1, len(self.keep.rank_by)):
            self._prune()

    def _prune(self) -> None:
        scores = BatchScores.concatenate(self.parts)
        limit = self.keep.limit
        if limit is not None and len(scores) > limit:
            picked: set[int] = set()
            for name in self.keep.rank_by:
                picked.update(top_k(scores.scores[name], limit).tolist())
            rows = np.array(sorted(picked), dtype=np.intp)
            scores = scores.take(rows)
            self.ids = [self.ids[i] for i in rows]
            self.keys = [self.keys[i] for i in rows]
        self.parts, self.rows = [scores], len(scores)

    def result(self) -> tuple[list[str], list[str], BatchScores | None]:
        if not self.parts:
            return [], [], None
        self._prune()
        return self.ids, self.keys, self.parts[0]


def preprocessing(loaded: LoadedModel, settings: Settings) -> Preprocessing:
    """The size and channels the model was trained with (which may differ from the current
    settings if they changed since)."""
    width, height = get_kind(loaded.kind).input_size(loaded.train_settings)
    channels = int(loaded.train_settings.get("channels", settings.train.channels))
    return Preprocessing(width, height, channels)


def model_cache(store: Store, loaded: LoadedModel, settings: Settings) -> PoolCache:
    return PoolCache.from_settings(store, settings, preprocessing(loaded, settings))


def _load(cache: PoolCache, store: Store, plan: ShardPlan, job: ScoreJob
          ) -> tuple[Shard | None, ShardInfo | None]:
    """The shard's images, unless nothing in it is to be scored and its cache is current
    (then it is not even opened)."""
    if plan.cached is not None and not any(job.chosen(store.image_id_for(key))
                                           for key in plan.keys):
        return None, plan.cached
    return cache.load(plan)


def score_shard(store: Store, loaded: LoadedModel, settings: Settings, shard: Shard | None,
                info: ShardInfo | None, job: ScoreJob,
                tick: Callable[[int], None] | None = None) -> ShardResult:
    """Score the shard's chosen images in batches and keep what `job.keep` says;
    `tick(n)` after each batch (n images) and for the unreadable ones."""
    if shard is None:
        return ShardResult(info, [], [], None, 0, [])
    kind = get_kind(loaded.kind)
    ids = [store.image_id_for(key) for key in shard.keys]
    problems = [text for key, text in shard.missing if job.chosen(store.image_id_for(key))]
    chosen = [i for i, image_id in enumerate(ids) if job.chosen(image_id)]
    problems += [shard.problems[i] for i in chosen if shard.problems[i]]
    rows = shard.rows()
    readable = [i for i in chosen if rows[i] >= 0]
    kept = Candidates(job.keep)
    size = settings.loop.score_batch_size
    for start in range(0, len(readable), size):
        part = readable[start : start + size]
        scores = kind.score_batch(
            loaded.model, loaded.temperature, to_float(shard.pixels[rows[part]]),
            settings.task.options, samples=job.mc_samples if job.mc_samples >= 2 else 0,
            gradients=job.gradients, random_state=settings.loop.random_state,
        )
        part_ids = [ids[i] for i in part]
        if RANDOM_DRAW in job.keep.rank_by:
            scores.scores[RANDOM_DRAW] = random_rank(part_ids, settings.loop.random_state)
        kept.add(part_ids, [shard.keys[i] for i in part], scores)
        if tick is not None:
            tick(len(part))
    if problems and tick is not None:
        tick(len(problems))
    kept_ids, kept_keys, kept_scores = kept.result()
    return ShardResult(info, kept_ids, kept_keys, kept_scores, len(readable), problems)


class PoolMerge:
    """Shard results folded in, in shard order, into the pool's scores: the kept rows pruned
    as they come (so a pool of any size holds a bounded candidate set, not every shard's),
    the cache's manifest entries, the problems and the count of scored images."""

    def __init__(self, keep: Keep, n_classes: int):
        self.kept = Candidates(keep)
        self.n_classes = n_classes
        self.infos: list[ShardInfo] = []
        self.problems: list[str] = []
        self.n_scored = 0

    def add(self, result: ShardResult) -> int:
        """Fold one shard in; returns how many of its images were scored or unreadable."""
        if result.scores is not None:
            self.kept.add(result.image_ids, result.keys, result.scores)
        if result.info is not None:
            self.infos.append(result.info)
        self.problems += result.problems
        self.n_scored += result.scored
        return result.scored + len(result.problems)

    def scores(self) -> PoolScores:
        ids, keys, scores = self.kept.result()
        return PoolScores(
            image_ids=ids, keys=keys,
            scores=scores if scores is not None else BatchScores(n_classes=self.n_classes),
            skipped=list(self.problems), n_scored=self.n_scored,
        )


def chosen_total(store: Store, cache: PoolCache, job: ScoreJob) -> int:
    """About how many images `job` scores: the total a progress bar needs before the first
    shard is done. From the cache's manifest (the last pass's pool, less the excluded ids)
    when there is one, so a round lists `images/` once; only a first read lists twice."""
    if job.include is not None:
        return len(job.include)
    shards = cache.manifest()
    if shards:
        return max(sum(shard.count for shard in shards) - len(job.exclude), 0)
    return sum(job.chosen(ref.image_id) for ref in store.list_images())


class ProgressCount:
    """`progress(done, total)` for a scoring pass whose total is an estimate: the total
    never shows below what is done, and `finish()` reports the true count last."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, max(self.total, self.done))

    def finish(self) -> None:
        if self.callback is not None and self.done < self.total:
            self.callback(self.done, self.done)


# ---- the pieces a distributed scoring maps (flows.score) --------------------------------
def plan_job(store: Store, loaded: LoadedModel, settings: Settings, job: ScoreJob
             ) -> Iterator[tuple[ShardPlan, ScoreJob]]:
    """Every shard of the pool with the part of `job` that concerns it, one at a time (the
    listing streams)."""
    for plan in model_cache(store, loaded, settings).plan():
        yield plan, job.for_ids({store.image_id_for(key) for key in plan.keys})


def score_planned(store: Store, loaded: LoadedModel, settings: Settings, plan: ShardPlan,
                  job: ScoreJob) -> ShardResult:
    """Load (or build) one planned shard and score it: one worker's task."""
    cache = model_cache(store, loaded, settings)
    return score_shard(store, loaded, settings, *_load(cache, store, plan, job), job)


def finish_job(store: Store, loaded: LoadedModel, settings: Settings,
               merged: PoolMerge) -> PoolScores:
    """Record the pass's shards as the cache's manifest; the merged scores."""
    model_cache(store, loaded, settings).commit(merged.infos)
    return merged.scores()


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items` in order, drawn by a thread of their own up to `depth` ahead: the pool's
    listing (network and XML parsing) goes on while the model scores, instead of between
    batches. Stopping early stops the thread at its next item."""
    buffer: Queue[tuple[bool, object]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put((False, error))
            return
        put((False, None))

    thread = threading.Thread(target=produce, name="alpha-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            more, value = buffer.get()
            if not more:
                if value is not None:
                    raise value  # type: ignore[misc]
                return
            yield value  # type: ignore[misc]
    finally:
        stop.set()


# ---- in one process ---------------------------------------------------------------------
def score_job(store: Store, loaded: LoadedModel, settings: Settings, job: ScoreJob,
              progress: Callable[[int, int], None] | None = None) -> PoolScores:
    """Score the pool in this process: loop.score_prefetch shards read or built by threads
    while the model scores the one before. `progress(done, total)` after each batch (the
    total from `chosen_total`)."""
    cache = model_cache(store, loaded, settings)
    counter = ProgressCount(progress, chosen_total(store, cache, job) if progress else 0)

    merged = PoolMerge(job.keep, len(loaded.labels))
    plans = read_ahead(cache.plan(), depth=settings.loop.score_prefetch)
    ahead: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=settings.loop.score_prefetch) as loaders:

        def queue_next() -> None:
            plan = next(plans, None)
            if plan is not None:
                ahead.append(loaders.submit(_load, cache, store, plan, job))

        for _ in range(settings.loop.score_prefetch):
            queue_next()
        while ahead:
            shard, info = ahead.popleft().result()
            queue_next()
            merged.add(score_shard(store, loaded, settings, shard, info, job, counter.add))
    counter.finish()
    return finish_job(store, loaded, settings, merged)


def score_pool(
    store: Store,
    loaded: LoadedModel,
    settings: Settings,
    exclude: Collection[str] = (),
    *,
    include: Collection[str] | None = None,
    mc_samples: int = 0,
    gradients: bool = False,
    keep: Keep | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PoolScores:
    """Scores and embeddings for every image not in `exclude` (labeled, queued or skipped
    ids), or, with `include`, for just those images (the labeled set, whose embeddings
    core-set and TypiClust compare the pool with); every scored row unless `keep` says
    fewer (see the module docstring).

    `mc_samples` >= 2 samples the model's dropout that many times (the same masks for every
    batch) for Bayesian strategies such as BALD; `gradients` adds BADGE's gradient
    embeddings. Images are decoded with the size and channels the model was trained with.
    """
    job = ScoreJob(exclude=frozenset(exclude),
                   include=None if include is None else frozenset(include),
                   mc_samples=mc_samples, gradients=gradients, keep=keep or Keep())
    return score_job(store, loaded, settings, job, progress)
