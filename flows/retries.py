"""Which failures a task retries, shared by every flow's tasks."""

from __future__ import annotations

from alpha.errors import AlphaError, ServiceRefused, ServiceUnavailable


def _may_pass(task, task_run, state) -> bool:
    """Retry what a wait can fix (a service down or restarting, a dropped connection), not
    a problem the user must fix (bad settings, bad data): retrying those only delays the
    message."""
    error = state.data
    if isinstance(error, ServiceRefused):  # wrong credentials, a missing bucket...
        return False
    return not isinstance(error, AlphaError) or isinstance(error, ServiceUnavailable)


NETWORK_RETRIES = {
    "retries": 3, "retry_delay_seconds": [2, 10, 30], "retry_condition_fn": _may_pass,
}
