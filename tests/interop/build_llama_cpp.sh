#!/usr/bin/env bash
# Builds llama.cpp (CPU only, Release) from a pinned source: the llama-cpp-python sdist on PyPI, which vendors
# llama.cpp, checked against its sha256. The interop checks (tests/interop/interop_gguf.sh) and the
# benchmarks that compare with llama.cpp (bench_serve --llama-bench) use this one build.
#
#   bash tests/interop/build_llama_cpp.sh [PREFIX]      (default PREFIX: build/llama.cpp, or $LLAMA_CPP_DIR)
#
# PREFIX/src holds the sources (with convert_hf_to_gguf.py and gguf-py), PREFIX/bin the programs. Builds run
# under `flock PREFIX.lock`, so that two checkouts never build into the same folder at once. Nothing is done
# when PREFIX/bin already holds every program for this pin.
set -euo pipefail
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PREFIX=${1:-${LLAMA_CPP_DIR:-build/llama.cpp}}
TOOLS=(llama-debug llama-completion llama-simple llama-perplexity llama-quantize llama-export-lora llama-bench llama-tokenize)

mkdir -p "$(dirname "$PREFIX")"
exec 9>"$PREFIX.lock"
flock 9

stamp="$PREFIX/bin/.built-$VERSION-noamx"
if [ -f "$stamp" ]; then
  echo "llama.cpp from llama-cpp-python $VERSION is built in $PREFIX/bin"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== llama-cpp-python $VERSION (sdist) from PyPI"
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
sdist="$work/llama_cpp_python-$VERSION.tar.gz"
echo "$SHA256  $sdist" | sha256sum -c -
tar xzf "$sdist" -C "$work"
rm -rf "$PREFIX/src"
mkdir -p "$PREFIX"
mv "$work/llama_cpp_python-$VERSION/vendor/llama.cpp" "$PREFIX/src"

echo "== build (Release, CPU only): ${TOOLS[*]}"
# -march=native without AMX: a CPU may report AMX to cpuid while the kernel (a VM) does not let a process use
# it, and ggml's AMX kernels then die with SIGILL on the first Q8_0/Q4_0 matrix product.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$PREFIX/src" -B "$PREFIX/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
  -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
  -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$PREFIX/build" --parallel "$(nproc)" --target "${TOOLS[@]}"
mkdir -p "$PREFIX/bin"
# Copied under a temporary name and renamed: a program of the old build may be running.
for t in "${TOOLS[@]}"; do cp "$PREFIX/build/bin/$t" "$PREFIX/bin/.$t.new" && mv "$PREFIX/bin/.$t.new" "$PREFIX/bin/$t"; done
touch "$stamp"
echo "llama.cpp from llama-cpp-python $VERSION is built in $PREFIX/bin"
