#!/usr/bin/env bash
# Installs the Debian 12 packages lora.cpp needs to build and test (skips what is already there).
# Run as root; otherwise it prints the command to run.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config ccache
  libopenblas-dev libopenblas0-openmp   # BLAS; the OpenMP build shares one thread pool with our kernels
  libfmt-dev nlohmann-json3-dev libpcre2-dev libcli11-dev catch2
  libutf8proc-dev                       # Unicode normalization for tokenizer.json normalizers
  libcpp-httplib-dev                    # the HTTP server of the serve program
  openmpi-bin libopenmpi-dev            # data-parallel training across processes (optional at build time)
  clang libclang-rt-14-dev libomp-dev   # the sanitizer and libFuzzer build of the tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "lora.cpp needs these Debian packages: ${missing[*]}" >&2
  echo "Install them as root:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
