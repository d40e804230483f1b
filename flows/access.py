"""What a Prefect server's refusal of alpha's credentials means, as one message.

A server started with PREFECT_SERVER_API_AUTH_STRING (the local stack's is) answers 401 to
every API request without that `user:password`. Prefect raises it as an HTTP error with a
traceback; this names the setting to fix instead. The auth string itself never enters it.
"""

from __future__ import annotations

from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from alpha.errors import ServiceRefused


def prefect_refusal(error: BaseException) -> ServiceRefused | None:
    """The ServiceRefused for a 401 from the Prefect server, None for any other error."""
    if not isinstance(error, PrefectHTTPStatusError) or error.response.status_code != 401:
        return None
    sent = "a wrong" if error.request.headers.get("Authorization") else "no"
    return ServiceRefused(
        f"Prefect at {PREFECT_API_URL.value()} refused the request (401 Unauthorized): it "
        f"carried {sent} API auth string. Set prefect.auth_string to the server's (the local "
        "stack writes it to $ALPHA_HOME/stack.env) or PREFECT_API_AUTH_STRING."
    )
