#!/usr/bin/env bash
# README command one: install what is needed (scripts/setup.sh), then run the demo:
# PPO vs PPO+EGSW on CartPole and GRPO vs GRPO+EGSW on the arithmetic task with the tiny LM.
# Prints the results table and writes plots and CSVs to runs/demo (or the directory given with --out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/python.sh
exec "$PY" -m egsw_gym.cli demo "$@"
