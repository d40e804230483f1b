#!/usr/bin/env bash
# Set up, start the local stack, run the whole test suite, stop the stack.
# Extra arguments go to pytest (e.g. `bash infra/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export ALPHA_HOME="${ALPHA_HOME:-$PWD/.alpha}"
.venv/bin/ruff check .
.venv/bin/alpha stack up
trap '.venv/bin/alpha stack down' EXIT
.venv/bin/pytest "$@"
