#!/usr/bin/env bash
# One-time set-up of a fresh machine: the Fashion-MNIST package, a venv, torch 2.13.0 (CPU) and edgenas.
# Idempotent: a second run only checks.  Usage: source-free, just `bash scripts/setup.sh [extras]`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null;
  else sudo apt-get update -q >/dev/null && sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.edgenas-$(sha1sum pyproject.toml | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[${extras}]"
  touch "$stamp"
fi
