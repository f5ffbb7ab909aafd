#!/usr/bin/env bash
# The one command that runs every test, TypeScript and Python, on a fresh machine.
# It installs what it needs: npm packages (from package-lock.json) and a Python virtual
# environment in .venv with the training package and its pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== TypeScript tests (tap) =="
npm test

echo "== Python tests (pytest) =="
.venv/bin/python -m pytest -q training/tests
