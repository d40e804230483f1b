"""Point Prefect at the local stack's server before any test imports Prefect.

Without this a flow run in a test would start a throwaway server of its own instead of
reporting to the real one the integration tests check.
"""

import os
from pathlib import Path

_home = Path(os.environ.get("ALPHA_HOME", ".alpha")).resolve()
_env_file = _home / "stack.env"
if "PREFECT_API_URL" not in os.environ and _env_file.is_file():
    for line in _env_file.read_text().splitlines():
        if line.startswith("ALPHA_PREFECT__API_URL="):
            os.environ["PREFECT_API_URL"] = line.split("=", 1)[1]
