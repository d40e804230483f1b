"""Round ids and which round `alpha push` sends."""

from __future__ import annotations

from alpha.rounds import current_round_id, latest_selected_round, write_round_record


def test_push_after_a_finished_round_sends_that_rounds_selection(store):
    assert latest_selected_round(store) is None  # before any round: nothing to push
    write_round_record(store, "round-0001", "selection", {"items": []})
    assert current_round_id(store) == "round-0001"  # unfinished: resumed
    write_round_record(store, "round-0001", "summary", {})
    # Finished: the current id names round 2, which has no selection yet; push sends round 1.
    assert current_round_id(store) == "round-0002"
    assert latest_selected_round(store) == "round-0001"
    write_round_record(store, "round-0002", "pull", {})  # round 2 started, not selected yet
    assert latest_selected_round(store) == "round-0001"
    write_round_record(store, "round-0002", "selection", {"items": []})
    assert latest_selected_round(store) == "round-0002"
