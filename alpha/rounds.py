"""Round records under `rounds/{round}/`: what each round selected, pushed and pulled.

The round's `summary.json` is written last: a round without it did not finish, and the next
run resumes it under the same id instead of starting another.
"""

from __future__ import annotations

from typing import Any

from alpha.records import now_iso
from alpha.store import Store

SUMMARY = "summary.json"


def round_ids(store: Store) -> list[str]:
    return [name for name in store.list_subfolders("rounds") if name.startswith("round-")]


def current_round_id(store: Store) -> str:
    """The unfinished round to resume, or the next new one."""
    ids = round_ids(store)
    if ids and not store.exists(store.round_key(ids[-1], SUMMARY)):
        return ids[-1]
    return f"round-{len(ids) + 1:04d}"


def latest_selected_round(store: Store) -> str | None:
    """The newest round that has a selection (finished or not), or None before any round
    selected: what `alpha push` (re)sends, since the current round id of a finished loop
    names a round that has not selected anything yet."""
    for round_id in reversed(round_ids(store)):
        if store.exists(store.round_key(round_id, "selection.json")):
            return round_id
    return None


def write_round_record(store: Store, round_id: str, name: str, payload: dict[str, Any]) -> None:
    store.put_json(store.round_key(round_id, f"{name}.json"), {"written_at": now_iso(), **payload})


def read_round_record(store: Store, round_id: str, name: str) -> dict[str, Any] | None:
    return store.get_json(store.round_key(round_id, f"{name}.json"))
