#!/usr/bin/env bash
# Downloads every wheel gpu_check.sh needs (benchmarks/gpu_requirements.txt and all their
# dependencies, CUDA 12 builds) into benchmarks/wheels/, on a machine WITH network, for the
# GPU machine's Python and platform. Copy the repository with that folder to the GPU machine.
#
#   bash benchmarks/fetch_wheels.sh [--python 3.11] [--platform manylinux_2_28_x86_64] [--dest DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYVER=3.11
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 linux_x86_64)
DEST="$HERE/wheels"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PYVER="$2"; shift 2 ;;
    --platform) PLATFORMS=("$2"); shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ABI="cp${PYVER/./}"
mkdir -p "$DEST"
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
# pip, setuptools and wheel too, so that the offline venv can upgrade its installer
python3 -m pip download --dest "$DEST" --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --abi "$ABI" --abi abi3 --abi none "${platform_args[@]}" \
  -r "$HERE/gpu_requirements.txt" pip setuptools wheel
echo "$(ls "$DEST" | wc -l) files, $(du -sh "$DEST" | cut -f1) in $DEST (python $PYVER)"
