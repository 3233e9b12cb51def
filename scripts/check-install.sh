#!/usr/bin/env bash
# Installs the library from a build folder into a fresh prefix, then configures, builds and runs the
# out-of-tree project in examples/consumer/ against it with find_package(lora): the check that the
# installed headers, CMake package and data are complete.
#
#   scripts/check-install.sh [BUILD_DIR]      (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
for f in include/lora/core/tensor.h share/lora/data/gpt2/encoder.json share/lora/data/gpt2/vocab.bpe \
         share/lora/data/README.md lib/cmake/lora/loraConfig.cmake; do
  [[ -f "$work/prefix/$f" ]] || { echo "check-install: $f was not installed" >&2; exit 1; }
done
cp -r examples/consumer "$work/consumer-src"
cmake -S "$work/consumer-src" -B "$work/consumer-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer-build" >"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
"$work/consumer-build/lora_consumer"
