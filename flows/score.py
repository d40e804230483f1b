"""Scoring the pool's shards as Prefect tasks on Dask, through prefect-dask's DaskTaskRunner:
a LocalCluster of `loop.dask_workers` processes, or the existing scheduler at
`loop.dask_address`.

The round's score-and-select task plans the shards of the pool cache (alpha.score.plan_job,
one listing), maps `score-shard` over them on the cluster, and merges their candidates in
shard order (alpha.score.finish_job): the same candidates, so the same selection, as one
process makes. Each worker loads the settings from the config file and the model from the
bucket (once per worker process), reads or builds its shard through the pool cache (its
own local copy; the bucket's is shared by all), and scores with `loop.score_threads` torch
threads (1 by default: a worker process is one core's worth). The thread count is set
around each shard's scoring in the worker, never for the flow's own process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import lru_cache

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect_dask import DaskTaskRunner

from alpha.config import Settings, load_settings
from alpha.kinds.training import torch_threads
from alpha.loop import PoolScorer
from alpha.pool_cache import ShardPlan
from alpha.score import (
    PoolMerge,
    PoolScores,
    ProgressCount,
    ScoreJob,
    ShardResult,
    chosen_total,
    finish_job,
    model_cache,
    plan_job,
    read_ahead,
    score_planned,
)
from alpha.store import Store
from alpha.train import LoadedModel, load_model
from flows.retries import NETWORK_RETRIES

IN_FLIGHT = 3
"""Shards submitted per worker ahead of the results: one scoring, the next ones queued."""


def uses_dask(settings: Settings) -> bool:
    return settings.loop.dask_address is not None or settings.loop.dask_workers is not None


def task_runner(settings: Settings) -> DaskTaskRunner:
    """The scheduler at loop.dask_address, else a LocalCluster of loop.dask_workers
    single-threaded worker processes (no dashboard)."""
    if settings.loop.dask_address:
        return DaskTaskRunner(address=settings.loop.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": settings.loop.dask_workers or 1, "threads_per_worker": 1,
                        "processes": True, "dashboard_address": None},
    )


@lru_cache(maxsize=2)
def _worker_model(config_file: str | None, version: str) -> tuple[Store, LoadedModel]:
    """The bucket and the model, loaded once per worker process (a shard is a second or
    less of work; loading the model for each would cost about as much)."""
    store = Store.from_settings(load_settings(config_file))
    return store, load_model(store, version)


@task(name="score-shard", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def score_shard(config_file: str | None, version: str, plan: ShardPlan, job: ScoreJob
                ) -> ShardResult:
    """One shard of the pool, read or built and scored on a worker."""
    settings = load_settings(config_file)
    store, loaded = _worker_model(config_file, version)
    with torch_threads(settings.loop.score_threads or 1):
        return score_planned(store, loaded, settings, plan, job)


def dask_scorer(config_file: str | None, settings: Settings) -> PoolScorer | None:
    """A scorer for alpha.loop.select_step that maps the pool's shards over Dask, or None
    when the settings name no cluster (then the flow's process scores).

    Shards are submitted as the listing streams, at most IN_FLIGHT per worker at a time,
    and each result is merged as it comes back, in shard order: the flow's process holds
    the shards in flight and the candidates, not a plan or a result per shard of the pool.
    """
    if not uses_dask(settings):
        return None

    def scorer(store: Store, loaded: LoadedModel, settings: Settings, job: ScoreJob,
               progress: Callable[[int, int], None] | None) -> PoolScores:
        counter = ProgressCount(progress, chosen_total(store, model_cache(store, loaded, settings),
                                                  job) if progress is not None else 0)
        merged = PoolMerge(job.keep, len(loaded.labels))
        with task_runner(settings) as runner:
            limit = IN_FLIGHT * max(1, len(runner.client.scheduler_info().get("workers", {})))
            window: deque[PrefectFuture[ShardResult]] = deque()

            def collect() -> None:
                counter.add(merged.add(window.popleft().result()))

            for plan, part in read_ahead(plan_job(store, loaded, settings, job), IN_FLIGHT):
                window.append(runner.submit(score_shard, {
                    "config_file": config_file, "version": loaded.version, "plan": plan,
                    "job": part}))
                if len(window) >= limit:
                    collect()
            while window:
                collect()
        counter.finish()
        return finish_job(store, loaded, settings, merged)

    return scorer
