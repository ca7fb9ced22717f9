#!/usr/bin/env bash
# Sourced by setup.sh, demo.sh and test.sh: chooses the Python they use, in this order:
#   1. $PYTHON, when set;
#   2. the active virtualenv ($VIRTUAL_ENV);
#   3. the project's own virtualenv, .venv/ at the repository root (created by setup.sh).
# It never installs into a global interpreter unless $PYTHON names one.
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  PY="$(pwd)/.venv/bin/python"
fi
