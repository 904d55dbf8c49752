#!/usr/bin/env bash
# Creates .venv and installs the locked dependencies. Needs only python3 (>= 3.11):
# uv is taken from PATH when present, else bootstrapped into .tools/ with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if command -v uv >/dev/null 2>&1; then
  UV=uv
else
  # uv lives in its own small venv so `uv sync` (which prunes .venv) never removes it.
  [ -x .tools/bin/uv ] || { "$PYTHON" -m venv .tools && .tools/bin/python -m pip install --quiet --disable-pip-version-check uv; }
  UV=.tools/bin/uv
fi
"$UV" sync --locked --python "$PYTHON" --quiet
