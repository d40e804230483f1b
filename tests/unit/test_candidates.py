"""A bounded candidate set selects what the whole pool would, and shards merge exactly."""

from __future__ import annotations

import numpy as np
import pytest

from alpha.score import Candidates, Keep, random_rank
from alpha.strategies import BatchScores, select_batch
from alpha.strategies.batch import RANDOM_DRAW

K = 20
LIMIT = 10 * K  # what alpha.loop.selection_keep gives cluster-margin and the others


def _pool(n: int = 3000, seed: int = 0) -> tuple[list[str], BatchScores]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4)) * rng.uniform(0.2, 3.0, size=(n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ids = [f"image-{i:05d}" for i in range(n)]
    pool = BatchScores.from_probs(probs, rng.normal(size=(n, 8)).astype(np.float32))
    pool.scores[RANDOM_DRAW] = random_rank(ids, 7)
    return ids, pool


def _fed(ids: list[str], pool: BatchScores, keep: Keep, cuts: list[int]) -> Candidates:
    kept = Candidates(keep)
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        rows = np.arange(start, stop)
        kept.add(ids[start:stop], ids[start:stop], pool.take(rows))
    return kept


@pytest.mark.parametrize("strategy", ["margin", "entropy", "least_confidence",
                                      "margin_balanced", "cluster_margin", "random"])
def test_candidates_select_what_the_whole_pool_selects(strategy):
    ids, pool = _pool()
    whole = [ids[i] for i in select_batch(strategy, K, pool, random_state=3)]
    measure = {"entropy": "entropy", "least_confidence": "least_confidence"}.get(strategy,
                                                                                  "margin")
    rank_by = tuple(sorted({measure, "margin"} | ({RANDOM_DRAW} if strategy == "random"
                                                 else set())))
    kept_ids, _, kept = _fed(ids, pool, Keep(rank_by, LIMIT),
                             list(range(0, len(ids), 97)) + [len(ids)]).result()
    assert len(kept) <= LIMIT * len(rank_by) < len(ids)  # bounded, whatever the pool
    assert kept_ids == sorted(kept_ids)  # pool order
    picked = [kept_ids[i] for i in select_batch(strategy, K, kept, random_state=3)]
    assert picked == whole


def test_shards_merged_in_order_keep_what_one_stream_keeps():
    ids, pool = _pool(seed=1)
    keep = Keep(("margin",), LIMIT)
    one = _fed(ids, pool, keep, [0, len(ids)]).result()
    cuts = [0, 500, 1100, 1101, 2600, len(ids)]  # uneven shards, one of a single image
    merged = Candidates(keep)
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        part_ids, part_keys, part = _fed(ids, pool, keep, [start, stop]).result()
        merged.add(part_ids, part_keys, part)
    ids_merged, _, scores = merged.result()
    assert ids_merged == one[0]
    np.testing.assert_array_equal(scores.embeddings, one[2].embeddings)


def test_keep_everything_and_the_random_draw():
    ids, pool = _pool(n=300)
    kept_ids, _, kept = _fed(ids, pool, Keep(), [0, 100, 300]).result()
    assert kept_ids == ids and len(kept) == 300
    draws = random_rank(ids, 7)
    assert ((draws >= 0) & (draws < 1)).all() and len(set(draws.tolist())) == 300
    np.testing.assert_array_equal(random_rank(ids[::-1], 7), draws[::-1])  # order-free
    assert not np.array_equal(random_rank(ids, 8), draws)


def test_read_ahead_keeps_order_raises_the_producers_error_and_stops_when_left():
    import threading
    import time

    from alpha.score import read_ahead

    assert list(read_ahead(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("listing failed")

    got = []
    with pytest.raises(ValueError, match="listing failed"):
        for item in read_ahead(failing(), depth=2):
            got.append(item)
    assert got == [1]

    drawn = []

    def endless():
        n = 0
        while True:
            drawn.append(n)
            yield n
            n += 1

    ahead = read_ahead(endless(), depth=2)
    assert next(ahead) == 0
    ahead.close()  # the consumer leaves: the thread stops within its put timeout
    time.sleep(0.5)
    count = len(drawn)
    time.sleep(0.3)
    assert len(drawn) == count <= 5
    assert not [t for t in threading.enumerate() if t.name == "alpha-read-ahead"]
