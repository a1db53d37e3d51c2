#!/usr/bin/env bash
# One-shot throughput check on a bare single-GPU Linux machine WITHOUT network: installs the
# wheels carried in benchmarks/wheels/ (see fetch_wheels.sh and gpu_requirements.txt) into a
# venv, then runs the CLIPSeg and CRIS comparison (Flax vs PyTorch, side by side) and writes
# benchmarks/results/<date>_<gpu>/. The benchmark steps are capped at --budget seconds in all
# (default 420; the install from local wheels adds about a minute): under 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--only STEP,STEP] [--budget SECONDS]
#        [--python python3] [--venv DIR | --no-venv] [--wheels DIR] [--out DIR]
#
# Steps: clipseg-inference clipseg-frozen clipseg-full cris curves epoch.
# --dry-run: no GPU and no install needed (uses the current python); every step runs with the
# tiny models at 32 px, one iteration, into a temporary folder. A step that fails or runs out of
# time is reported and the others still run; the exit status is 1 if any failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DRY=0
ONLY=""
BUDGET=420
PYTHON=python3
VENV="$ROOT/.venv-gpu"
USE_VENV=1
WHEELS="$HERE/wheels"
OUT="$HERE/results"
STEPS=(clipseg-inference clipseg-frozen clipseg-full cris curves epoch)

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --no-venv) USE_VENV=0; shift ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for s in ${ONLY//,/ }; do
  [[ " ${STEPS[*]} " == *" $s "* ]] || { echo "gpu_check.sh: unknown step $s; steps: ${STEPS[*]}" >&2; exit 2; }
done

log() { printf '\n=== %s\n' "$*"; }
die() { echo "gpu_check.sh: $*" >&2; exit 1; }

# ------------------------------------------------------------------ setup
PY="$PYTHON"
if [[ $DRY == 1 ]]; then
  log "dry run: no install (would run: $PYTHON -m venv $VENV && pip install --no-index --find-links $WHEELS -r $HERE/gpu_requirements.txt)"
  OUT="$(mktemp -d)"
else
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU machine"
  nvidia-smi -L
  [[ -d "$WHEELS" ]] || die "no wheel folder $WHEELS: run benchmarks/fetch_wheels.sh on a machine with network"
  if [[ $USE_VENV == 1 ]]; then
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" || die "cannot create a venv (install python3-venv, or pass --no-venv)"
    PY="$VENV/bin/python"
  fi
  log "installing from $WHEELS"
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" -r "$HERE/gpu_requirements.txt"
fi
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU in one process
export TF_CPP_MIN_LOG_LEVEL=2
"$PY" - <<'PYEOF'
import jax, torch
print(f"jax {jax.__version__} on {jax.default_backend()}: {jax.devices()[0].device_kind} x{jax.device_count()}; "
      f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")
PYEOF
if [[ $DRY == 0 ]]; then
  "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" || die "JAX does not see the GPU (jax[cuda12] wheels?)"
fi

# ------------------------------------------------------------------ settings
if [[ $DRY == 1 ]]; then
  VARIANT=tiny SIZE=32 CRIS_SIZE=32 BATCH=2 CRIS_BATCH=2 ITERS=1 WARMUP=0 DTYPES=fp32
  CURVE_BATCHES=1,2 CURVE_SIZES=32,64 CURVE_BATCH=2 COMPILE=()
  EPOCH=(--variant tiny --train-size 16)
else
  VARIANT=base SIZE=352 CRIS_SIZE=416 BATCH=32 CRIS_BATCH=16 ITERS=10 WARMUP=2 DTYPES=fp32,bf16
  CURVE_BATCHES=1,8,32,64,128 CURVE_SIZES=224,352,416,512 CURVE_BATCH=32 COMPILE=(--torch-compile)
  EPOCH=(--variant base --train-size 800)
fi
COMMON=(--variant "$VARIANT" --iters "$ITERS" --warmup "$WARMUP" --out "$OUT")

# step name, share of the budget (percent), python arguments
declare -A SHARE=([clipseg-inference]=22 [clipseg-frozen]=15 [clipseg-full]=15 [cris]=14 [curves]=14 [epoch]=20)
args_of() {
  case "$1" in
    clipseg-inference) echo models --models clipseg --modes inference --batch "$BATCH" --size "$SIZE" \
                         --dtypes "$DTYPES" --torch "${COMPILE[@]}" "${COMMON[@]}" --name clipseg_inference ;;
    clipseg-frozen) echo models --models clipseg --modes frozen --batch "$BATCH" --size "$SIZE" \
                      --dtypes "$DTYPES" --torch "${COMMON[@]}" --name clipseg_frozen ;;
    clipseg-full) echo models --models clipseg --modes full --batch "$BATCH" --size "$SIZE" \
                    --dtypes "$DTYPES" --torch "${COMMON[@]}" --name clipseg_full ;;
    cris) echo models --models cris --modes inference,full --batch "$CRIS_BATCH" --size "$CRIS_SIZE" \
            --dtypes fp32 "${COMMON[@]}" --name cris ;;
    curves) echo curves --batches "$CURVE_BATCHES" --size "$SIZE" --sizes "$CURVE_SIZES" --size-batch "$CURVE_BATCH" \
              --modes inference,frozen --dtypes "${DTYPES##*,}" "${COMMON[@]}" ;;
    epoch) echo epoch "${EPOCH[@]}" --out "$OUT" ;;
  esac
}

# ------------------------------------------------------------------ run
START=$SECONDS
FAILED=()
for step in "${STEPS[@]}"; do
  [[ -z "$ONLY" || ",$ONLY," == *",$step,"* ]] || continue
  left=$(( BUDGET - (SECONDS - START) ))
  limit=$(( BUDGET * SHARE[$step] / 100 ))
  (( limit > left )) && limit=$left
  if (( limit <= 5 )); then FAILED+=("$step(no time left)"); continue; fi
  read -r -a argv <<< "$(args_of "$step")"
  log "$step (limit ${limit}s): medvlsm-bench ${argv[*]}"
  if ! timeout --kill-after=10 "$limit" "$PY" -m medvlsm_jax.bench.bench "${argv[@]}"; then
    echo "!! $step failed or ran out of time"
    FAILED+=("$step")
  fi
done

DIR="$(ls -d "$OUT"/*/ 2>/dev/null | sort | tail -n 1 || true)"
if [[ $DRY == 0 && -n "$DIR" ]]; then nvidia-smi -q > "$DIR/nvidia-smi.txt" || true; fi
log "done in $(( SECONDS - START ))s; results in ${DIR:-$OUT}"
ls -1 "${DIR:-$OUT}" 2>/dev/null || true
if (( ${#FAILED[@]} )); then echo "failed: ${FAILED[*]}"; exit 1; fi
