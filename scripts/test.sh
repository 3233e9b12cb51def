#!/usr/bin/env bash
# Builds lora.cpp and runs every test:
#   1. the Release build (with the CUDA backend compiled when the toolkit is present; GPU tests skip
#      without a device), all tests under ctest;
#   2. cmake --install, and examples/consumer/ built against the installed package;
#   3. a Debug build with AddressSanitizer + UndefinedBehaviorSanitizer (clang, CPU only), all tests except
#      the ones tagged [slow] (end-to-end training runs, which take minutes under the sanitizers);
#   4. the libFuzzer targets of the same build (fuzz/): each replays its regressions and fuzzes for 10 s (CI stays under 30 minutes; scripts/fuzz.sh --seconds N runs longer).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/install-deps.sh

echo "== Release build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --parallel "$jobs"
ctest --test-dir build --output-on-failure --parallel "$jobs"

echo "== Install, and a project outside the tree that uses it (find_package(lora))"
bash scripts/check-install.sh build

echo "== Debug + AddressSanitizer/UBSan build (clang, with the fuzz targets) and tests (without [slow])"
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLORA_SANITIZE=ON -DLORA_FUZZ=ON \
  -DLORA_CUDA=OFF -DLORA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-asan --parallel "$jobs"
# Catch2 v2 does not turn tags into ctest labels, so the filter goes to the test binary itself.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ./build-asan/tests/lora_tests "~[slow]" --order lex

echo "== Fuzzing: every target's regressions, then 10 s of fuzzing each"
bash scripts/fuzz.sh --no-build --build-dir build-asan --seconds 10
