#!/usr/bin/env bash
# README command two: install what is needed, then run the default test suite (slow tests excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec "${PYTHON:-python3}" -m pytest -q -n 2 "$@"
