#!/usr/bin/env bash
# The GPU check (issue 19), one command on the lent GPU machine, done within 8 minutes:
#
#   scripts/gpu_check.sh OUTDIR              on the GPU machine (torch 2.11 + CUDA, Python 3.12)
#   scripts/gpu_check.sh --dry-run OUTDIR    here, on CPU: the same code through FakeCudaBackend
#
# Installs the carried wheels (.whl/, from `make gpu-wheels`; git-ignored, so the device run must
# carry ".whl") with pip --no-index --target, runs the project from src/ (PYTHONPATH), checks and
# logs the torch version, then runs each part in its own process under a hard time limit (a part
# stopped at its limit keeps what it measured):
#   env 60 s | opara 150 s | serving 100 s | compile: what is left of GPU_CHECK_BUDGET_S (440 s)
#   (a dry run: 4x each; GPU_CHECK_{BUDGET,OPARA,SERVING,COMPILE}_S override)
# and merges OUTDIR/sections/*.json into OUTDIR/gpu_check.json; everything printed goes to
# OUTDIR/gpu_check.log too. Exit status: 0 when every part ended by itself (ok or partial), 1 when
# one timed out or failed, 3 when a real run finds no CUDA device.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY="${DNNINFER_GPU_DRY_RUN:-0}"
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ]; then echo "usage: scripts/gpu_check.sh [--dry-run] OUTDIR" >&2; exit 2; fi
mkdir -p "$1/sections" || exit 2
OUT="$(cd "$1" && pwd)"
rm -f "$OUT"/sections/*.json "$OUT/sections/status.tsv" "$OUT/gpu_check.json"
LOG="$OUT/gpu_check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
finish() {  # exit status; let tee write the last lines before the folder is read back
  exec 1>&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$1"
}

T0=$(date +%s)
# seconds: all parts (merge and teardown fit in the rest of the 8 minutes), and caps per part; a dry
# run on a 2-core CPU is slower than the GPU and spends no device time, so it gets more
if [ "$DRY" = 1 ]; then SCALE=4; else SCALE=1; fi
BUDGET="${GPU_CHECK_BUDGET_S:-$((440 * SCALE))}"
OPARA_S="${GPU_CHECK_OPARA_S:-$((150 * SCALE))}"
SERVING_S="${GPU_CHECK_SERVING_S:-$((100 * SCALE))}"
COMPILE_S="${GPU_CHECK_COMPILE_S:-$((600 * SCALE))}"
export DNNINFER_GPU_DRY_RUN="$DRY" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log() { echo "[$(date +%H:%M:%S)] $*"; }

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ "$DRY" = 1 ] && [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
log "gpu check: $( [ "$DRY" = 1 ] && echo 'DRY RUN (fake CUDA backend on CPU)' || echo 'GPU run' ), python $("$PY" -V 2>&1), out $OUT"

# -- carried wheels: cp312 manylinux, installed offline into a target folder ----------------------
WHL_TARGET="${TMPDIR:-/tmp}/dnninfer-gpu-whl"
[ "$DRY" = 1 ] && WHL_TARGET="$OUT/whl-site"   # cp312 wheels do not import here: installed, not used
shopt -s nullglob
wheels=("$ROOT"/.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  log "installing ${#wheels[@]} carried wheel(s) into $WHL_TARGET: $(basename -a "${wheels[@]}" | tr '\n' ' ')"
  if ! "$PY" -m pip install --no-index --no-deps --quiet --disable-pip-version-check --upgrade \
        --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        --target "$WHL_TARGET" "${wheels[@]}"; then
    log "pip could not install them; unpacking the wheels instead"
    for w in "${wheels[@]}"; do "$PY" -m zipfile -e "$w" "$WHL_TARGET" || log "warning: could not unpack $w"; done
  fi
else
  log "no carried wheels in .whl/ (make gpu-wheels): the serving part's CPU baseline falls back to Pillow"
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
[ "$DRY" = 1 ] || export PYTHONPATH="$PYTHONPATH:$WHL_TARGET"

if [ "$DRY" != 1 ] && command -v nvidia-smi >/dev/null; then
  log "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
        --format=csv,noheader 2>&1 | head -4 | tr '\n' ';')"
fi

# -- the parts, each under its own hard limit ---------------------------------------------------------
FAILED=0
run_part() {  # name cap_s module args...
  local name=$1 cap=$2; shift 2
  local now left limit start rc
  now=$(date +%s); left=$((T0 + BUDGET - now))
  limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 20 ]; then
    log "part $name: skipped, ${left} s left of the ${BUDGET} s budget"
    printf '%s\tskipped\t0\t0\n' "$name" >>"$OUT/sections/status.tsv"
    return 0
  fi
  log "part $name: limit ${limit} s"
  start=$(date +%s%N)
  timeout --signal=TERM --kill-after=10 "$limit" "$PY" -m "$@" --out "$OUT/sections/$name.json" \
    --deadline "$((now + limit - 5))"
  rc=$?
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s\t%s\t%d.%03d\t%s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) "$limit" >>"$OUT/sections/status.tsv"
  log "part $name: exit $rc"
  [ "$rc" -eq 0 ] || FAILED=1
  return "$rc"
}

run_part env 60 dnninfer.schedule.gpu_check env
ENV_RC=$?
if [ "$ENV_RC" -eq 3 ]; then
  log "no CUDA device: nothing to measure"
elif [ "$ENV_RC" -ne 0 ]; then
  log "the env part failed (exit $ENV_RC): the project does not import here; see above"
else
  run_part opara "$OPARA_S" dnninfer.schedule.gpu_check opara
  run_part serving "$SERVING_S" dnninfer.serving.gpu
  run_part compile "$COMPILE_S" dnninfer.schedule.gpu_check compile
fi

timeout 60 "$PY" -m dnninfer.schedule.gpu_check merge "$OUT" || { log "merge failed"; FAILED=1; }
log "gpu check done in $(( $(date +%s) - T0 )) s: $OUT/gpu_check.json, $LOG"
[ "$ENV_RC" -eq 3 ] && finish 3
finish "$FAILED"
