#!/usr/bin/env bash
# One-time set-up of a fresh machine: the Fashion-MNIST package, a venv, torch 2.13.0 (CPU) and edgenas.
# Idempotent: a second run only checks.  Usage: bash scripts/setup.sh [EXTRAS]
# EXTRAS, comma-separated: test, tflite, executorch (pip extras of .venv), nni (its own .venv-nni).
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
# "nni" is not installed into .venv: NNI 3.0's pins (filelock, protobuf for its RL strategy) clash
# with ours, so it gets its own venv that also sees .venv's packages (listed after its own).
pip_extras=$(echo ",$extras," | sed 's/,nni,/,/g; s/^,*//; s/,*$//')
stamp=".venv/.edgenas-$(sha1sum pyproject.toml | cut -c1-12)-${pip_extras//,/_}"
if [ ! -f "$stamp" ]; then
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  if [ -n "$pip_extras" ]; then .venv/bin/pip install -q -e ".[${pip_extras}]"; else .venv/bin/pip install -q -e .; fi
  touch "$stamp"
fi
case ",$extras," in *,nni,*)
  if [ ! -f .venv-nni/.edgenas-nni ]; then
    [ -x .venv-nni/bin/python ] || python3 -m venv .venv-nni
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    nsite=$(.venv-nni/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$site" > "$nsite/zz_edgenas.pth"
    .venv-nni/bin/pip install -q nni==3.0 "pytorch-lightning>=2.0,<3" tianshou==0.4.11 gym==0.26.2
    touch .venv-nni/.edgenas-nni
  fi ;;
esac
