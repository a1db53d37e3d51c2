#!/usr/bin/env bash
# Packs the wheels gpu_check.sh may install on the GPU box (benchmarks/gpu_requirements.txt: a
# closed, pinned list, downloaded without dependency resolution) into ONE archive,
# benchmarks/wheels/gpu-wheels-cp312.tar.xz, on a machine with network (PyPI). The wheels are
# re-zipped uncompressed ("stored", still valid wheels) before xz, which halves the archive:
# about 25 MB. promise has only an sdist: a wheel is built from it with `pip wheel`.
#
#   bash benchmarks/fetch_wheels.sh [--python-version 3.12] [--dest DIR] [--max-mib 30]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYVER=3.12
DEST="$HERE/wheels"
MAX_MIB=30
PIP=(python3 -m pip)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    --max-mib) MAX_MIB="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ABI="cp${PYVER/./}"
RAW="$DEST/raw-$ABI"
STORED="$DEST/stored-$ABI"
ARCHIVE="$DEST/gpu-wheels-$ABI.tar.xz"
rm -rf "$RAW" "$STORED" && mkdir -p "$RAW" "$STORED"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"${PIP[@]}" download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --abi "$ABI" --abi abi3 --abi none "${platforms[@]}" -d "$RAW" -r "$HERE/gpu_requirements.txt"
# promise==2.3 (a tensorflow-datasets dependency) is published as an sdist only
"${PIP[@]}" wheel --quiet --no-deps --no-binary=promise -w "$RAW" promise==2.3
python3 - "$RAW" "$STORED" <<'PYEOF'
import os, sys, zipfile
src, dst = sys.argv[1:]
for name in sorted(os.listdir(src)):
    if name.endswith(".whl"):
        with zipfile.ZipFile(os.path.join(src, name)) as zin, \
             zipfile.ZipFile(os.path.join(dst, name), "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                zout.writestr(info, zin.read(info.filename), compress_type=zipfile.ZIP_STORED)
PYEOF
XZ_OPT="-T0" tar -cJf "$ARCHIVE" -C "$STORED" .
rm -rf "$STORED"
size=$(stat -c %s "$ARCHIVE")
echo "$(ls "$RAW" | wc -l) wheels, $(( size / 1024 / 1024 )) MiB in $ARCHIVE (python $PYVER)"
if (( size > MAX_MIB * 1024 * 1024 )); then
  echo "fetch_wheels.sh: $ARCHIVE is over $MAX_MIB MiB" >&2
  exit 1
fi
