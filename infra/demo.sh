#!/usr/bin/env bash
# Set up, start the local stack, ingest a real dataset and run the loop.
# `bash infra/demo.sh --simulate-rounds 5` closes the loop with the simulated annotator and
# compares alpha's selection with random selection. The stack keeps running afterwards so
# you can label in Label Studio; `.venv/bin/alpha stack down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export ALPHA_HOME="${ALPHA_HOME:-$PWD/.alpha}"
.venv/bin/alpha stack up
exec .venv/bin/alpha demo "$@"
