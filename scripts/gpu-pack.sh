#!/usr/bin/env bash
# Packs a CUDA build made on this machine for a GPU machine that has the CUDA toolkit but none of the
# project's Debian libraries (OpenBLAS, fmt, PCRE2, utf8proc, cpp-httplib, OpenMPI): the programs that
# scripts/gpu-check.sh runs, stripped, plus every shared library they need except glibc's own and CUDA's
# (the GPU machine's toolkit provides those, and they must match its driver), as one .tar.xz.
#
#   scripts/gpu-pack.sh [--build-dir DIR] [--out FILE] [--help]
#
# On the GPU machine:
#   mkdir -p /tmp/lora && tar -xJf FILE -C /tmp/lora && /tmp/lora/run-gpu-check.sh [gpu-check options]
# run-gpu-check.sh runs scripts/gpu-check.sh --no-build --build-dir /tmp/lora/build from the checkout it is
# called in; each packed program is a wrapper that finds its libraries (the packed ones and the toolkit's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$ROOT/build"
OUT_FILE="$ROOT/.gpu-carry/lora-gpu.tar.xz"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --out) OUT_FILE="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-pack: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

grep -q '^CMAKE_CUDA_ARCHITECTURES:' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null ||
  { echo "gpu-pack: $BUILD_DIR is not a CUDA build (configure with -DLORA_CUDA=ON and the toolkit present)" >&2; exit 1; }

PROGRAMS=(tests/lora_tests finetune bench_cuda bench_inference generate)
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/build/tests" "$STAGE/lib"
for p in "${PROGRAMS[@]}"; do
  [[ -x "$BUILD_DIR/$p" ]] || { echo "gpu-pack: $BUILD_DIR/$p is missing (build it first)" >&2; exit 1; }
  strip -o "$STAGE/build/$p" "$BUILD_DIR/$p"
done

# Every shared library the programs load, except the C library's own and CUDA's.
skip='/(libc|libm|libdl|librt|libpthread|ld-linux-x86-64)\.so|/libcu|/libnccl|/libnvidia'
for p in "${PROGRAMS[@]}"; do ldd "$BUILD_DIR/$p"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -Ev "$skip" | while read -r lib; do cp -L "$lib" "$STAGE/lib/"; done

# Each program becomes a wrapper that puts the packed libraries and the toolkit's on LD_LIBRARY_PATH for
# itself (and the processes it starts) alone: Python on that machine keeps its own newer libraries.
cat >"$STAGE/lib/with-libs.sh" <<'SH'
#!/usr/bin/env bash
# Programs are symlinks to this script: the libraries lie beside the script itself, not beside the link.
LIB="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
cuda_dirs=$(find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /opt -maxdepth 9 \
  \( -name 'libcublas.so.13' -o -name 'libcudart.so.13' -o -name 'libnccl.so.2' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$LIB:${cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$0.bin" "$@"
SH
chmod +x "$STAGE/lib/with-libs.sh"
for p in "${PROGRAMS[@]}"; do
  mv "$STAGE/build/$p" "$STAGE/build/$p.bin"
  ln -s "$(realpath --relative-to="$(dirname "$STAGE/build/$p")" "$STAGE/lib/with-libs.sh")" "$STAGE/build/$p"
done

cat >"$STAGE/run-gpu-check.sh" <<'SH'
#!/usr/bin/env bash
# Runs scripts/gpu-check.sh (of the current directory's checkout) on the packed programs.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec scripts/gpu-check.sh --no-build --build-dir "$HERE/build" "$@"
SH
chmod +x "$STAGE/run-gpu-check.sh"

mkdir -p "$(dirname "$OUT_FILE")"
tar -C "$STAGE" -cJf "$OUT_FILE.tmp" . && mv "$OUT_FILE.tmp" "$OUT_FILE"
echo "gpu-pack: $(du -h "$OUT_FILE" | cut -f1) in $OUT_FILE ($(ls "$STAGE/lib" | wc -l) libraries)"
