#!/usr/bin/env bash
# Installs the project's dependencies; safe to run again (skips what is already up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

# npm: reinstall only when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

# Python: one virtual environment for training, evaluation and the Python tests.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.redtrain-installed
if [ ! -f "$stamp" ] || [ training/pyproject.toml -nt "$stamp" ]; then
  # torch==2.13.0 is pinned in pyproject; installing it first takes the local CPU wheel.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e "training[test]"
  touch "$stamp"
fi
