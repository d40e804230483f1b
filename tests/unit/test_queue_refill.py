"""The queue's refills: candidates ranked by the latest model's scores, never beyond the
target depth, and the depth settings validated together."""

from __future__ import annotations

import numpy as np
import pytest

from alpha.config import LoopSettings
from alpha.queue_depth import latest_candidates, ranked_candidates, room, write_candidates
from alpha.rounds import write_round_record
from alpha.train import latest_key


def test_candidates_are_the_most_uncertain_images_outside_the_selection():
    ids, keys = ["a", "b", "c", "d", "e"], ["ka", "kb", "kc", "kd", "ke"]
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.5])
    ranked = ranked_candidates(ids, keys, scores, chosen=[1], limit=3)
    assert [c["image_id"] for c in ranked] == ["d", "c", "e"]  # ties keep pool order
    assert ranked[0] == {"image_id": "d", "key": "kd", "uncertainty": 0.7}


def test_room_never_takes_the_queue_past_its_target():
    assert room(12, 4) == 8
    assert room(12, 15) == 0  # already over (someone imported by hand): add nothing
    assert room(None, 500) is None  # no target: the round's whole batch


def test_only_the_latest_models_candidates_refill_the_queue(store):
    assert latest_candidates(store) is None
    write_candidates(store, "round-0001", "m1", "margin", [{"image_id": "a"}])
    write_round_record(store, "round-0001", "summary", {})
    write_candidates(store, "round-0002", "m2", "margin", [{"image_id": "b"}])
    store.put_json(latest_key(store), {"version": "m1"})
    assert latest_candidates(store)[0] == "round-0001"
    store.put_json(latest_key(store), {"version": "m2"})
    round_id, record = latest_candidates(store)
    assert round_id == "round-0002" and record["items"] == [{"image_id": "b"}]
    store.put_json(latest_key(store), {"version": "m3"})  # trained, not yet ranked
    assert latest_candidates(store) is None


def test_the_low_water_mark_defaults_to_half_the_depth_and_must_be_below_it():
    assert LoopSettings(queue_depth=12).refill_below == 6
    assert LoopSettings(queue_depth=12, queue_low=10).refill_below == 10
    assert LoopSettings().refill_below == 0  # no target: never refill
    with pytest.raises(ValueError, match="queue_low must be below"):
        LoopSettings(queue_depth=12, queue_low=12)
    with pytest.raises(ValueError, match="queue_low must be below"):
        LoopSettings(queue_low=3)
