#!/usr/bin/env bash
# Set up, start the local stack, run the whole test suite, stop the stack.
# Extra arguments go to pytest (e.g. `bash infra/test.sh tests/unit -x`).
# A stack that was already running (every service up) is used and left running; otherwise
# the stack is stopped on exit, also when starting it failed half-way.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export ALPHA_HOME="${ALPHA_HOME:-$PWD/.alpha}"
.venv/bin/ruff check .
already_up=$(.venv/bin/python -c \
  "from infra import stack; print(all(s['pid'] and s['healthy'] for s in stack.status()))" \
  2>/dev/null || echo False)
if [ "$already_up" = True ]; then
  echo "test.sh: using the stack already running under $ALPHA_HOME (left running)"
else
  trap '.venv/bin/alpha stack down' EXIT
  .venv/bin/alpha stack up
fi
.venv/bin/pytest "$@"
