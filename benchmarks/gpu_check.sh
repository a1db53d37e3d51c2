#!/usr/bin/env bash
# GPU check on a bare one-GPU box without network that already has Python 3.12, jax (CUDA plugin),
# torch, transformers, numpy, pillow, absl, chex, etils, tensorboard and matplotlib. Everything
# else comes from one carried archive of cp312 wheels (benchmarks/fetch_wheels.sh writes it, < 30
# MiB): only the distributions the box lacks are installed, into a folder put on PYTHONPATH
# (--site; nothing installed system-wide, no venv). Then `medvlsm-bench suite` runs the rows
# most important first (bf16 train steps vs PyTorch AMP, then the paper's 90-epoch headline run,
# the forward, ...) under the time left of --budget, writing each row as soon as it is measured. The headline
# data set is written in the background meanwhile. Results: benchmarks/results/<date>_<gpu>/
# (suite.md, suite.json, suite_rows.jsonl, profile/), tarred into $OUT/gpu_check.tar.gz when $OUT
# is set.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--budget SECONDS] [--only ROW,ROW] [--python python3]
#        [--wheels ARCHIVE] [--site DIR] [--out DIR]
#
# --budget: seconds for the whole script, setup included (default 350: under 6 minutes).
# --dry-run: CPU, the tiny model at 32 px, one step per row, the 2-epoch tiny headline run (the
# same install step when the archive is present); checks the script, not the numbers.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
START=$SECONDS
DRY=0
BUDGET=350
ONLY=""
PYTHON=python3
WHEELS="$HERE/wheels/gpu-wheels-cp312.tar.xz"
SITE="$ROOT/.gpu-site"
RESULTS=""
# the suite's rows (medvlsm_jax/bench/suite.py rows_for), most important first
ROWS=(frozen-bf16 full-bf16 headline inference-bf16 attention-numerics inference-bf16-torch-compile
      full-bf16-attention-xla full-bf16-b128 compile-scan-vs-unrolled frozen-fp32 full-fp32 inference-fp32
      headline-rerun cris-fp32)

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --site) SITE="$2"; shift 2 ;;
    --out) RESULTS="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$RESULTS" ]]; then
  if [[ $DRY == 1 ]]; then RESULTS="$(mktemp -d)"; else RESULTS="$HERE/results"; fi
fi
for r in ${ONLY//,/ }; do
  [[ " ${ROWS[*]} " == *" $r "* ]] || { echo "gpu_check.sh: unknown row $r; rows: ${ROWS[*]}" >&2; exit 2; }
done

log() { printf '\n=== [%3ds] %s\n' "$(( SECONDS - START ))" "$*"; }
die() { echo "gpu_check.sh: $*" >&2; exit 1; }

# ------------------------------------------------------------------ install what is missing
log "python: $(command -v "$PYTHON") ($("$PYTHON" --version 2>&1))"
if [[ -f "$WHEELS" ]]; then
  STAMP="$SITE/.from-$(basename "$WHEELS")-$(cksum < "$WHEELS" | cut -d' ' -f1)"
  if [[ -f "$STAMP" ]]; then
    log "carried wheels already installed in $SITE"
  else
    TMPW="$(mktemp -d)"
    "$PYTHON" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$WHEELS" "$TMPW"
    # distributions the box lacks (by name; the box's own versions are kept)
    mapfile -t MISSING < <("$PYTHON" - "$TMPW" <<'PYEOF'
import glob, importlib.metadata as md, os, re, sys
for whl in sorted(glob.glob(os.path.join(sys.argv[1], "**", "*.whl"), recursive=True)):
    name = re.sub(r"[-_.]+", "-", os.path.basename(whl).split("-")[0]).lower()
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(whl)
PYEOF
)
    log "installing ${#MISSING[@]} missing distributions into $SITE (of $(find "$TMPW" -name '*.whl' | wc -l) carried)"
    rm -rf "$SITE" && mkdir -p "$SITE"
    if (( ${#MISSING[@]} )) && "$PYTHON" -m pip --version >/dev/null 2>&1; then
      "$PYTHON" -m pip install --quiet --no-deps --no-index --no-compile --disable-pip-version-check \
        --target "$SITE" "${MISSING[@]}"
    elif (( ${#MISSING[@]} )); then  # no pip: a wheel is a zip of the installed tree
      "$PYTHON" - "$SITE" "${MISSING[@]}" <<'PYEOF'
import os, shutil, sys, zipfile
site = sys.argv[1]
for whl in sys.argv[2:]:
    with zipfile.ZipFile(whl) as z:
        z.extractall(site)
for d in os.listdir(site):  # <dist>.data/{purelib,platlib} belong at the top
    if d.endswith(".data"):
        for sub in ("purelib", "platlib"):
            src = os.path.join(site, d, sub)
            if os.path.isdir(src):
                shutil.copytree(src, site, dirs_exist_ok=True)
PYEOF
    fi
    printf '%s\n' "${MISSING[@]##*/}" > "$STAMP"
    rm -rf "$TMPW"
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
elif [[ $DRY == 1 ]]; then
  log "no $WHEELS: dry run with this python's packages"
else
  log "no $WHEELS (run benchmarks/fetch_wheels.sh where there is network): using what is installed"
fi
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU in one process
export TF_CPP_MIN_LOG_LEVEL=2
"$PYTHON" - <<'PYEOF' || die "a required package does not import (see above)"
import importlib
mods = ["jax", "flax", "optax", "orbax.checkpoint", "grain", "tensorflow_datasets", "array_record", "ml_collections",
        "ftfy", "tensorboardX", "regex", "torch", "transformers"]
versions = {}
for m in mods:
    versions[m] = getattr(importlib.import_module(m), "__version__", "?")
import jax
print(", ".join(f"{k} {v}" for k, v in versions.items()))
print(f"jax backend {jax.default_backend()}: {jax.devices()[0].device_kind} x{jax.device_count()}")
PYEOF
if [[ $DRY == 0 ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi -L || true
  "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" \
    || die "JAX does not see a GPU (CUDA plugin missing?); use --dry-run on a CPU machine"
fi

# ------------------------------------------------------------------ run
DATA="$(mktemp -d)/headline"
HEADLINE=()
[[ $DRY == 1 ]] && HEADLINE=(--variant tiny --pool 2 --train 8 --val 4 --test 4)
if [[ -z "$ONLY" || ",$ONLY," == *",headline"* ]]; then
  log "writing the headline data set in the background ($DATA)"
  "$PYTHON" -m medvlsm_jax.bench.headline --prepare-only --data-root "$DATA" "${HEADLINE[@]}" \
    > "$(dirname "$DATA")/prepare.log" 2>&1 &
fi
LEFT=$(( BUDGET - (SECONDS - START) - 20 ))  # 20 s kept for nvidia-smi and the archive
(( LEFT > 30 )) || die "only ${LEFT}s of the ${BUDGET}s budget left after the setup"
SUITE=(suite --budget "$(( LEFT - 10 ))" --out "$RESULTS" --data-root "$DATA")
[[ $DRY == 1 ]] && SUITE+=(--dry-run)
[[ -n "$ONLY" ]] && SUITE+=(--only "$ONLY")
log "medvlsm-bench ${SUITE[*]} (hard limit ${LEFT}s)"
STATUS=0
timeout --kill-after=5 "$LEFT" "$PYTHON" -m medvlsm_jax.bench.bench "${SUITE[@]}" || STATUS=$?
(( STATUS == 124 || STATUS == 137 )) && echo "!! the suite hit its hard limit; the rows written so far are kept"
wait || true

DIR="$(ls -d "$RESULTS"/*/ 2>/dev/null | xargs -r ls -d -t 2>/dev/null | head -n 1 || true)"
DIR="${DIR%/}"
if [[ -n "$DIR" ]]; then
  [[ $DRY == 0 ]] && { nvidia-smi -q > "$DIR/nvidia-smi.txt" 2>&1 || true; }
  cp "$(dirname "$DATA")/prepare.log" "$DIR/headline_prepare.log" 2>/dev/null || true
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    tar -czf "$OUT/gpu_check.tar.gz" -C "$(dirname "$DIR")" "$(basename "$DIR")"
    cp "$DIR/suite.md" "$OUT/" 2>/dev/null || true
    log "archived to $OUT/gpu_check.tar.gz"
  fi
fi
log "done in $(( SECONDS - START ))s; results in ${DIR:-$RESULTS}"
[[ -n "$DIR" && -f "$DIR/suite.md" ]] && cat "$DIR/suite.md"
exit "$STATUS"
