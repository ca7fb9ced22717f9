#!/usr/bin/env bash
# Stable-Baselines3's own tests, PPO tests only, with stable_baselines3.PPO swapped for egsw_gym.PPO.
#
# Usage: bash scripts/sb3_suite/run.sh MODE [pytest arguments]
#   MODE: baseline    plain SB3 (the reference)
#         none        egsw_gym.PPO with egsw=None
#         default     egsw_gym.PPO with egsw=EGSW()
#         trajectory  egsw_gym.PPO with egsw=EGSW(mode="trajectory")
#         step        egsw_gym.PPO with egsw=EGSW(mode="step")
# The first call downloads the installed SB3 version's source distribution with pip and unpacks its
# tests/ into $SB3_SUITE_WORK (default: $TMPDIR/egsw-sb3-suite-VERSION). Each call writes
# results/MODE.log and results/MODE.xml there and prints pytest's closing line.
# Environment: PYTHON (the interpreter; default: as scripts/setup.sh chooses), SB3_SUITE_JOBS
# (pytest-xdist workers, default 2; 0 runs in one process).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
source scripts/python.sh
MODE="${1:-}"
case "$MODE" in
  baseline | none | default | trajectory | step) shift ;;
  *) echo "usage: $0 baseline|none|default|trajectory|step [pytest arguments]" >&2; exit 2 ;;
esac
ver="$("$PY" -c "import stable_baselines3 as s; print(s.__version__)")"
WORK="${SB3_SUITE_WORK:-${TMPDIR:-/tmp}/egsw-sb3-suite-$ver}"
if [[ ! -d "$WORK/tests" ]]; then
  echo "[sb3-suite] downloading the stable-baselines3 $ver source distribution into $WORK"
  mkdir -p "$WORK/dl"
  # pip's notices about this machine's unused package folders are filtered out, as in setup.sh.
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --dest "$WORK/dl" "stable-baselines3==$ver" 2>&1 | { grep -v "is ignored: it is neither" >&2 || true; } \
    || { echo "[sb3-suite] could not download stable-baselines3==$ver with pip" >&2; exit 2; }
  tar xzf "$WORK/dl/stable_baselines3-$ver.tar.gz" -C "$WORK/dl"
  cp -r "$WORK/dl/stable_baselines3-$ver/tests" "$WORK/tests"
fi
cp "$here/conftest.py" "$WORK/tests/conftest.py"
cp "$here/pytest.ini" "$WORK/pytest.ini"
cd "$WORK"
if [[ $MODE == baseline ]]; then unset SB3_SWAP_PPO; else export SB3_SWAP_PPO=$MODE; fi
export OMP_NUM_THREADS=1 PYTHONHASHSEED=0 PPO_ONLY=1
files=()
for f in test_run test_save_load test_callbacks test_predict test_spaces test_dict_env test_logger \
  test_train_eval_mode test_deterministic test_sde test_custom_policy test_cnn test_tensorboard \
  test_identity test_gae; do
  [[ -f tests/$f.py ]] && files+=("tests/$f.py")
done
jobs="${SB3_SUITE_JOBS:-2}"
xdist=()
[[ $jobs != 0 ]] && xdist=(-n "$jobs")
mkdir -p results
status=0
"$PY" -m pytest -p no:cacheprovider -q "${xdist[@]}" -rfE --junitxml="results/$MODE.xml" "${files[@]}" "$@" \
  > "results/$MODE.log" 2>&1 || status=$?
echo "[sb3-suite] SB3 $ver, mode $MODE: $(tail -1 "results/$MODE.log")  (log: $WORK/results/$MODE.log)"
exit "$status"
