"""Scoring on a local two-worker Dask cluster (prefect-dask) selects what one process does,
for the same model and seed."""

from __future__ import annotations

import pytest

from alpha import loop
from alpha.records import read_all_records
from alpha.rounds import read_round_record
from flows.score import dask_scorer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("strategy", ["cluster_margin", "bald"])
def test_two_dask_workers_select_what_one_process_selects(tmp_path, first_digits_maker,
                                                          strategy):
    loop_toml = (f'cache_dir = "{tmp_path / "cache"}"\ncache_shard_size = 16\n'
                 "dask_workers = 2\nbatch_size = 8\nmc_samples = 5\n")
    with first_digits_maker(tmp_path, f"dask-{strategy[:4]}", loop_toml) as (config, ctx, _):
        try:
            version = loop.train_step(ctx)["version"]
            records = read_all_records(ctx.store)
            scorer = dask_scorer(str(config), ctx.settings)
            assert scorer is not None
            steps: list[tuple[int, int]] = []
            # Dask first: its workers build the cache (cold); one process then reads it.
            on_dask = loop.select_step(ctx, "round-dask", version, strategy,
                                       progress=lambda *step: steps.append(step),
                                       records=records, scorer=scorer)
            alone = loop.select_step(ctx, "round-alone", version, strategy, records=records)
            assert on_dask == alone and alone["pool_size"] == 60
            assert steps[-1] == (60, 60)
            assert list(ctx.store.list_keys("cache/")) and (tmp_path / "cache").is_dir()

            picked = {}
            for round_id in ("round-dask", "round-alone"):
                selection = read_round_record(ctx.store, round_id, "selection")
                candidates = read_round_record(ctx.store, round_id, "candidates")
                picked[round_id] = ([item["image_id"] for item in selection["items"]],
                                    [item["image_id"] for item in candidates["items"]],
                                    [item["uncertainty"] for item in selection["items"]])
            dask_ids, dask_refills, dask_scores = picked["round-dask"]
            ids, refills, scores = picked["round-alone"]
            assert dask_ids == ids and len(ids) == 8 and dask_refills == refills
            assert dask_scores == pytest.approx(scores, rel=1e-4, abs=1e-6)
        finally:
            keys = list(ctx.store.list_keys(""))
            for start in range(0, len(keys), 1000):
                ctx.store.client.delete_objects(Bucket=ctx.store.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
