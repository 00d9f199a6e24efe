#!/usr/bin/env bash
# One-time set-up of a fresh machine: the Fashion-MNIST package, a venv, torch 2.13.0 (CPU) and edgenas.
# Idempotent: a second run only checks.  Usage: bash scripts/setup.sh [EXTRAS]  (EXTRAS: test, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"   # e.g. test, or test,tflite
# Debian packages: the built-in data set always; for the tests also PostgreSQL (the multi-machine
# search test starts a throwaway server on loopback).
debs=()
[ -d /usr/share/datasets/fashion-mnist ] || debs+=(dataset-fashion-mnist)
case ",$extras," in *,test,*) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || debs+=(postgresql) ;; esac
if [ ${#debs[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${debs[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.edgenas-$(sha1sum pyproject.toml | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  if [ -n "$extras" ]; then .venv/bin/pip install -q -e ".[${extras}]"; else .venv/bin/pip install -q -e .; fi
  touch "$stamp"
fi
