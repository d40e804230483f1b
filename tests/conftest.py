"""Point Prefect at the local stack's server before any test imports Prefect.

Without this a flow run in a test would start a throwaway server of its own instead of
reporting to the real one the integration tests check. The stack's server demands its API
auth string, which comes from the same env file (alpha.config.set_prefect_env's rule: only
for that server).
"""

import os
from pathlib import Path

from alpha.config import set_prefect_env

_home = Path(os.environ.get("ALPHA_HOME", ".alpha")).resolve()
_env_file = _home / "stack.env"
if _env_file.is_file():
    _stack = dict(line.split("=", 1) for line in _env_file.read_text().splitlines()
                  if "=" in line)
    if "ALPHA_PREFECT__API_URL" in _stack:
        set_prefect_env(_stack["ALPHA_PREFECT__API_URL"],
                        _stack.get("ALPHA_PREFECT__AUTH_STRING"))
