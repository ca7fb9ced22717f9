#!/usr/bin/env bash
# Install egsw-gym and everything the demo and the tests need, into the current Python.
# Safe to run repeatedly: it does nothing when pyproject.toml has not changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch first: a CPU build, so that the dependency on torch below does not pull a multi-GB CUDA build.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing the CPU build of torch"
  "$PY" -m pip install --quiet "torch==2.13.0" \
    || "$PY" -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi

stamp=".setup-stamp"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$("$PY" -c 'import sys; print(sys.prefix)' | sha256sum | cut -c1-8)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import egsw_gym" >/dev/null 2>&1; then
  exit 0
fi
echo "[setup] installing egsw-gym with the mujoco, llm, lora, tasks, compare and dev extras"
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[mujoco,llm,lora,tasks,compare,dev]"
echo "$want" > "$stamp"
