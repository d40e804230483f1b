#!/usr/bin/env bash
# Install what is missing, and only that: Debian packages (Chromium for the browser test,
# Fashion-MNIST for the demo, PostgreSQL for `alpha stack up --db postgres` and its test) and
# the project's virtual environment in ./.venv, with stardist's
# nuclei images (data only) for the instance segmentation demo and benchmark.
# Label Studio gets its own virtual environment, installed by `alpha stack up`.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_needed=()
[ -x /usr/bin/chromium ] || apt_needed+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_needed+=(dataset-fashion-mnist)
# Always wanted, like Chromium: the PostgreSQL stack test runs in every CI run. The stack runs
# its own cluster (infra/postgres.py); the package's own may start on 5432, unused by alpha.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || apt_needed+=(postgresql)
if [ ${#apt_needed[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${apt_needed[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_needed[@]}" >/dev/null
  else
    echo "setup: cannot apt-get install ${apt_needed[*]} (needs root and apt):" \
         "the demo falls back to scikit-learn's digits; the browser and PostgreSQL tests" \
         "are skipped." >&2
  fi
fi

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python"
  "$python" -m venv .venv
fi
# Reinstall only when the project's dependencies changed since the last install.
stamp=.venv/.alpha-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: pip install -e .[dev] (torch==2.13.0 CPU build)"
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import alpha, torch, prefect, label_studio_sdk" >/dev/null
  touch "$stamp"
fi
# stardist's wheel is wanted for its data files only (alpha.datasets.load_stardist_tiles
# reads them without importing stardist): --no-deps, as its dependencies pull in tensorflow.
# Looked for with find_spec, which does not import it; installed only when missing.
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('stardist') is None)"; then
  echo "setup: pip install --no-deps stardist==0.9.2 (its nuclei images only)"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps 'stardist==0.9.2' 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import sys; from alpha.datasets import stardist_available as ok; \
sys.exit(not ok())" || echo "setup: stardist's data did not install: the instance demo" \
    "and its tests need \`.venv/bin/pip install --no-deps stardist==0.9.2\`." >&2
fi
