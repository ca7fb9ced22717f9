#!/usr/bin/env bash
# Run study suites for the record: from a separate clone pinned to one commit, in the background,
# niced, resumable (rerun the same command after an interruption: finished runs are skipped).
#
#   scripts/evidence.sh [options]            clone (once), then start the suites in the background
#   scripts/evidence.sh --status [options]   is it running; finished runs per suite
#   scripts/evidence.sh --collect [options]  copy the finished runs (without model.zip) into
#                                            docs/results/<suite>/runs of this checkout and write
#                                            their report there (then commit docs/results/<suite>)
# Options:
#   --commit SHA       the commit to run (default: this checkout's HEAD; it must be committed)
#   --dir DIR          the clone (default: ../egsw-evidence-<first 12 digits of the commit>)
#   --suites "A B"     study suites, in order (default: "lm controls"; see docs/results/PLAN.md)
#   --workers N        runs at a time, one process and one torch thread each (default 2)
#   --seeds N|LIST     override the suites' seed counts (default: lm 20, controls 10)
#   --set KEY=VALUE    preset override for every run (repeatable; a smoke test's small budget)
#   --foreground       run in this shell instead of the background
#
# The clone runs its own code (PYTHONPATH=<clone>) with the interpreter of $PYTHON, the active
# virtualenv or this checkout's .venv (scripts/python.sh). Runs go to <clone>/runs/<suite>/,
# warm starts to <clone>/runs/<suite>/warm_starts/, reports to <clone>/results/<suite>/, the log
# to <clone>/evidence.log. Each run's result.json records the commit and that the tree was clean.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
cd "$SRC"
source scripts/python.sh

COMMIT="" DIR="" SUITES="lm controls" WORKERS=2 SEEDS="" MODE=start FOREGROUND=0
SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --commit) COMMIT="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --suites) SUITES="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    --status) MODE=status; shift ;;
    --collect) MODE=collect; shift ;;
    --foreground) FOREGROUND=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "evidence.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
COMMIT="$(git rev-parse --verify "${COMMIT:-HEAD}^{commit}")"
DIR="${DIR:-$SRC/../egsw-evidence-${COMMIT:0:12}}"

finished() { find "$DIR/runs/$1" -name result.json 2>/dev/null | wc -l; }

if [ "$MODE" = status ]; then
  if [ -f "$DIR/evidence.pid" ] && kill -0 "$(cat "$DIR/evidence.pid")" 2>/dev/null; then
    echo "running (pid $(cat "$DIR/evidence.pid")), log: $DIR/evidence.log"
  else
    echo "not running"
  fi
  for s in $SUITES; do echo "$s: $(finished "$s") finished runs in $DIR/runs/$s"; done
  exit 0
fi

if [ "$MODE" = collect ]; then
  for s in $SUITES; do
    dest="$SRC/docs/results/$s/runs"
    mkdir -p "$dest"
    # finished runs only, without model files and lock files (the warm starts' hashes are in result.json)
    (cd "$DIR/runs/$s" && find . -name result.json -printf '%h\n') | while read -r run; do
      mkdir -p "$dest/$run"
      for f in config.json curve.csv result.json logs/progress.csv; do
        [ -f "$DIR/runs/$s/$run/$f" ] && install -D -m 644 "$DIR/runs/$s/$run/$f" "$dest/$run/$f"
      done
    done
    "$PY" -m egsw_gym.cli study --suite "$s" --out "$dest" --report-only --results "$SRC/docs/results/$s"
  done
  exit 0
fi

if [ ! -d "$DIR/.git" ]; then
  git clone --quiet --no-checkout "$SRC" "$DIR"
  git -C "$DIR" checkout --quiet --detach "$COMMIT"
fi
if [ "$(git -C "$DIR" rev-parse HEAD)" != "$COMMIT" ]; then
  echo "evidence.sh: $DIR is at $(git -C "$DIR" rev-parse HEAD), not $COMMIT; use another --dir" >&2
  exit 1
fi
if [ -n "$(git -C "$DIR" status --porcelain --untracked-files=no)" ]; then
  echo "evidence.sh: $DIR has local changes; its runs would not be those of $COMMIT" >&2
  exit 1
fi
# envs/ installs as egsw_gym.envs; in the clone a link makes the clone's copy importable as such
# (otherwise an editable install of another checkout would provide it).
[ -e "$DIR/egsw_gym/envs" ] || ln -s ../envs "$DIR/egsw_gym/envs"
export PYTHONPATH="$DIR"
(cd "$DIR" && "$PY" - "$DIR" <<'EOF'
import pathlib, sys
import egsw_gym, egsw_gym.envs
root = pathlib.Path(sys.argv[1]).resolve()
for mod in (egsw_gym, egsw_gym.envs):
    if root not in pathlib.Path(mod.__file__).resolve().parents:
        sys.exit(f"evidence.sh: {mod.__name__} imports from {mod.__file__}, not from the clone {root}")
EOF
)
if [ -f "$DIR/evidence.pid" ] && kill -0 "$(cat "$DIR/evidence.pid")" 2>/dev/null; then
  echo "evidence.sh: already running (pid $(cat "$DIR/evidence.pid")); see $DIR/evidence.log" >&2
  exit 1
fi

run_suites() {
  cd "$DIR"
  for s in $SUITES; do
    echo "== $(date -u +%FT%TZ) suite $s at $COMMIT"
    nice -n 10 "$PY" -m egsw_gym.cli study --suite "$s" --out "runs/$s" --results "results/$s" \
      --workers "$WORKERS" ${SEEDS:+--seeds "$SEEDS"} "${SETS[@]}"
  done
  echo "== $(date -u +%FT%TZ) done"
}

if [ "$FOREGROUND" = 1 ]; then
  run_suites 2>&1 | tee -a "$DIR/evidence.log"
else
  (run_suites >> "$DIR/evidence.log" 2>&1; rm -f "$DIR/evidence.pid") &
  echo $! > "$DIR/evidence.pid"
  echo "started in the background (pid $!): $DIR/evidence.log; check with: $0 --status --dir $DIR --suites \"$SUITES\""
fi
