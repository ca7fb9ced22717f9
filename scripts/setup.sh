#!/usr/bin/env bash
# Install egsw-gym and everything the demo and the tests need.
# Where: the active virtualenv if there is one, else the project's own .venv/ (created here).
# Remove everything it installed with `rm -rf .venv`. Set PYTHON=/path/to/python to choose another.
# Safe to run repeatedly: it does nothing when pyproject.toml has not changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh

if [ ! -x "$PY" ] && [ "$PY" = "$(pwd)/.venv/bin/python" ]; then
  echo "[setup] creating the project virtualenv in $(pwd)/.venv (remove it with: rm -rf .venv)"
  if ! "${BASE_PYTHON:-python3}" -m venv .venv; then
    rm -rf .venv  # a half-made .venv without pip would be taken for a working one next time
    echo "[setup] could not create .venv (see above; on Debian/Ubuntu: apt install python3-venv)," \
      "or activate a virtualenv of your own and rerun" >&2
    exit 1
  fi
fi
# pip install, quiet, with the notices about this machine's unused package folders filtered out.
pip_install() {
  "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@" 2>&1 \
    | { grep -v -E "^(WARNING: )?(Requirement already|  )|is ignored: it is neither" || true; }
}

# torch first: a CPU build, so that the dependency on torch below does not pull a multi-GB CUDA build.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing the CPU build of torch into $("$PY" -c 'import sys; print(sys.prefix)')"
  pip_install "torch==2.13.0" || pip_install torch --index-url https://download.pytorch.org/whl/cpu
fi

stamp=".setup-stamp"
want="$(sha256sum < pyproject.toml | cut -c1-16)-$("$PY" -c 'import sys; print(sys.prefix)' | sha256sum | cut -c1-8)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import egsw_gym" >/dev/null 2>&1; then
  exit 0
fi
echo "[setup] installing egsw-gym and its extras into $("$PY" -c 'import sys; print(sys.prefix)') (a few minutes, once)"
pip_install -e ".[mujoco,llm,lora,tasks,compare,trl,docs,dev]" \
  || { echo "[setup] installation failed: see the pip output above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] done. To use this environment in your shell: source .venv/bin/activate"
