#!/usr/bin/env bash
# README command two: install what is needed (scripts/setup.sh), then run the default test suite
# (slow tests excluded; pass -m slow to run them). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/python.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec "$PY" -m pytest -q -n 2 "$@"
