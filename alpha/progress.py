"""Terminal progress bars for the long steps (ingest, training, scoring, push), one way for
all of them.

Every long step takes a plain `progress(done, total)` callback and knows nothing of
terminals. A CLI command opens `terminal_bars(console)` around its work; the code that
calls a step asks `bar(description)` for a callback, which is None unless a terminal opened
bars. So `alpha round` (the flow run in the terminal's process) draws bars, while the same
flow served by `alpha serve` draws nothing and logs nothing more: its progress goes to
Prefect's progress artifacts only.

The bars live in a context variable rather than in the flows' parameters: flow parameters
are sent to the Prefect server and must be plain values, and a context variable reaches the
tasks of a flow called in this process (Prefect copies the context into them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.file_proxy import FileProxy
from rich.progress import MofNCompleteColumn, Progress, TaskID

Callback = Callable[[int, int], None]

_BARS: ContextVar[Progress | None] = ContextVar("alpha_terminal_bars", default=None)


@contextmanager
def terminal_bars(console: Console) -> Iterator[Progress]:
    """Bars on `console` for every `bar(...)` asked for inside; none is left at the end
    (the command prints its own summary). Log lines that the root logger prints through
    rich (Prefect's console handler) go above the bars instead of through them."""
    progress = Progress(*Progress.get_default_columns(), MofNCompleteColumn(),
                        console=console, transient=True)
    token = _BARS.set(progress)
    try:
        with progress, _logs_above():
            yield progress
    finally:
        _BARS.reset(token)


def bar(description: str) -> Callback | None:
    """A callback that draws one bar, or None when no terminal opened bars. The bar appears
    at the first call (a step that finds nothing to do shows none) and goes when it reaches
    its total (a command's bars do not pile up round after round); a later call with a
    larger total (a training's refit) shows it again."""
    progress = _BARS.get()
    if progress is None:
        return None
    shown: list[TaskID] = []

    def update(done: int, total: int) -> None:
        if not shown:
            shown.append(progress.add_task(description, total=total))
        progress.update(shown[0], completed=done, total=total)
        if done >= total:
            progress.remove_task(shown.pop())

    return update


def both(*callbacks: Callback | None) -> Callback | None:
    """One callback that calls each given one (a bar and a Prefect artifact, say)."""
    chosen = [callback for callback in callbacks if callback is not None]
    if not chosen:
        return None

    def call(done: int, total: int) -> None:
        for callback in chosen:
            callback(done, total)

    return call


@contextmanager
def _logs_above() -> Iterator[None]:
    """While bars show on a terminal, rich replaces sys.stderr with a proxy that prints above
    them; point the root logger's rich handlers (Prefect's console handler, which kept the
    real stderr) at it too, or each log line would be overdrawn and leave stale bars."""
    if not isinstance(sys.stderr, FileProxy):  # not a terminal: no live display to protect
        yield
        return
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(getattr(h, "console", None), Console)]
    before = [h.console.file for h in handlers]  # type: ignore[attr-defined]
    for handler in handlers:
        handler.console.file = sys.stderr  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for handler, previous in zip(handlers, before, strict=True):
            handler.console.file = previous  # type: ignore[attr-defined]
