"""One writer at a time per project, with Prefect global concurrency limits as the locks.

Two runs of one project must never share a round id, train the same labels twice, or move
the pull cursor from under each other. Each project gets three limits of one slot, created
here before use and acquired with `strict=True` (a limit that does not exist is otherwise
skipped silently, which would be no lock at all):

- `alpha-{prefix}-round`: held by a whole round (and by train-and-select), i.e.
  everything that picks a round id, trains or selects;
- `alpha-{prefix}-pull`: held while the pull cursor and label records are written, so a
  pull-only run may bring labels in while a round trains;
- `alpha-{prefix}-queue`: held while tasks are imported into the queue or re-predicted
  (push, refresh, refill), so the pull's refill may top the queue up while a round trains:
  under the round lock it waited for the training, which on a busy machine took longer
  than annotators took to empty the queue (bench/queue_day.py).

A round takes the round lock, then the pull or the queue lock for one step at a time; a
pull-only run takes the pull lock, then (released) the queue lock, so no run waits for a
lock while holding one another run waits for in the opposite order. Slots are leases the
holder renews: a run that crashes frees its slot when the lease ends (LEASE_S), and a run
that cannot renew stops rather than go on unlocked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from alpha.config import Settings
from alpha.errors import AlphaError, ServiceUnavailable
from flows.access import prefect_refusal

LEASE_S = 60.0
"""How long a crashed holder keeps a lock; live holders renew well before it ends."""
MIN_WAIT_S = 1.0
"""Prefect times out a wait of 0 s before it asks the server: even "refuse at once" asks."""

Lock = Literal["round", "pull", "queue"]


class ProjectBusy(AlphaError):
    """Another run of the same project held the lock for longer than this run would wait."""


def safe_name(prefix: str) -> str:
    """A project prefix as a Prefect name part: Prefect refuses '/' and '%' in names. Two
    prefixes that differ only there share a lock: safe (they wait for each other), never
    the opposite."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", prefix).strip("-")


def lock_name(settings: Settings, lock: Lock) -> str:
    return f"alpha-{safe_name(settings.s3.prefix)}-{lock}"


def ensure_lock(name: str) -> None:
    """Create the limit `name` with one slot, or put back one slot and `active` if someone
    changed it: a limit of two, or an inactive one, would let two runs in."""
    try:
        _ensure_lock(name)
    except httpx.TransportError:
        raise ServiceUnavailable(
            f"Prefect at {PREFECT_API_URL.value() or '(no PREFECT_API_URL)'} is unreachable, "
            f"and it holds the project's lock {name!r}: start it (`alpha stack up`) or fix "
            "prefect.api_url."
        ) from None
    except PrefectHTTPStatusError as error:
        refused = prefect_refusal(error)
        if refused is None:
            raise
        raise refused from None


def _ensure_lock(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, active=True,
                                                 slot_decay_per_second=0.0))
                return
            except ObjectAlreadyExists:  # another run created it a moment ago
                found = client.read_global_concurrency_limit_by_name(name)
        if found.limit != 1 or not found.active or found.slot_decay_per_second:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(
                limit=1, active=True, slot_decay_per_second=0.0))


@contextmanager
def project_lock(settings: Settings, lock: Lock, wait_s: float | None = None) -> Iterator[None]:
    """Hold the project's `lock` for the block; wait at most `wait_s` (default
    `loop.lock_wait_s`) for it, then raise ProjectBusy naming the lock."""
    name = lock_name(settings, lock)
    ensure_lock(name)
    wait_s = settings.loop.lock_wait_s if wait_s is None else wait_s
    acquired = False
    try:
        with concurrency(name, occupy=1, strict=True, timeout_seconds=max(wait_s, MIN_WAIT_S),
                         lease_duration=LEASE_S):
            acquired = True
            yield
    except AcquireConcurrencySlotTimeoutError:
        if acquired:  # raised inside the block: not ours to translate
            raise
        raise ProjectBusy(
            f"Another run of project {settings.s3.prefix!r} holds the lock {name!r} and did "
            f"not release it within {wait_s:.0f} s: let it finish (see its flow run in "
            "Prefect) or raise loop.lock_wait_s. Nothing was changed by this run."
        ) from None
