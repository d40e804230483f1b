"""A Prefect server's 401 becomes one message naming the setting to fix (flows.access);
the real server's refusals are in tests/integration/test_access.py."""

from __future__ import annotations

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from flows.access import prefect_refusal


def _error(status: int, headers: dict[str, str]) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/", headers=headers)
    response = httpx.Response(status, request=request, json={"exception_message": "x"})
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError("refused", request=request, response=response))


def test_a_401_names_the_setting_and_whether_an_auth_string_was_sent():
    sent = "Basic YWxwaGE6bm90LXRoZS1wYXNzd29yZA=="  # alpha:not-the-password
    wrong = prefect_refusal(_error(401, {"Authorization": sent}))
    missing = prefect_refusal(_error(401, {}))
    assert wrong is not None and missing is not None
    assert "carried a wrong API auth string" in str(wrong)
    assert "carried no API auth string" in str(missing)
    for message in (str(wrong), str(missing)):
        assert "401 Unauthorized" in message and "prefect.auth_string" in message
        assert "YWxwaGE6" not in message and "not-the-password" not in message


def test_other_errors_are_left_as_they_are():
    assert prefect_refusal(_error(404, {})) is None
    assert prefect_refusal(_error(403, {})) is None
    assert prefect_refusal(ValueError("401")) is None
