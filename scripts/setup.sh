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

# Kubernetes manifests are validated against the API's schemas, which this package ships (offline).
if [ ! -x .venv/bin/kubernetes-validate ]; then
  .venv/bin/pip install -q kubernetes-validate==1.37.0
fi

# nginx (Debian's package): test/deploy-replicas.test.ts runs deploy/nginx.conf in front of three
# replicas. Installed only when missing; its package must not start a system nginx (port 80) here.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: nginx is missing and installing it needs root (apt-get install nginx)" >&2; exit 1; }
    sudo="sudo"
  fi
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx >/dev/null
  if [ -n "$added_policy" ]; then $sudo rm -f "$policy"; fi
fi
