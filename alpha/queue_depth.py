"""Keep the annotators' queue at its target depth (loop.queue_depth) between rounds.

Each selection also ranks the rest of the scored pool (`rounds/{round}/candidates.json`:
ids, keys and scores, most uncertain first). When annotators drain the queue below the
low-water mark (loop.queue_low), `refill_step` pushes the next candidates of the latest
model, without training or scoring again, up to the target and never beyond it. After a
retrain, `refresh_step` gives every queued task the new model's prediction and score under
its version, which becomes the project's: Label Studio's uncertainty sampling then orders
the whole queue by one model, old tasks and new alike.
"""

from __future__ import annotations

import numpy as np

from alpha.rounds import read_round_record, round_ids, write_round_record
from alpha.store import Store
from alpha.strategies import top_k
from alpha.train import latest_key

CANDIDATES = "candidates"


def ranked_candidates(image_ids: list[str], keys: list[str], uncertainty: np.ndarray,
                      chosen: list[int], limit: int) -> list[dict]:
    """The `limit` most uncertain pool images not in the selection `chosen`."""
    taken = set(int(i) for i in chosen)
    order = [int(i) for i in top_k(uncertainty, len(uncertainty)) if int(i) not in taken]
    return [{"image_id": image_ids[i], "key": keys[i], "uncertainty": float(uncertainty[i])}
            for i in order[:limit]]


def write_candidates(store: Store, round_id: str, version: str, strategy: str,
                     items: list[dict]) -> None:
    write_round_record(store, round_id, CANDIDATES,
                       {"model_version": version, "strategy": strategy, "items": items})


def latest_candidates(store: Store) -> tuple[str, dict] | None:
    """(round id, record) of the newest candidates ranked by the latest model, or None."""
    version = (store.get_json(latest_key(store)) or {}).get("version")
    if not version:
        return None
    for round_id in reversed(round_ids(store)):
        record = read_round_record(store, round_id, CANDIDATES)
        if record is not None and record.get("model_version") == version:
            return round_id, record
    return None


def room(depth: int | None, queued: int) -> int | None:
    """How many tasks may be added to a queue of `queued`; None when it has no target."""
    return None if depth is None else max(0, depth - queued)
