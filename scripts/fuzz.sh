#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer) and runs each for a
# chosen time on a copy of its seed corpus (fuzz/corpus/<target>/), after replaying every input in
# fuzz/regressions/<target>/ (the crashes found so far, now fixed). Prints a line per target and exits
# non-zero when any target crashes; the crashing input is kept in BUILD/fuzz-artifacts/.
#
#   scripts/fuzz.sh [--seconds N] [--build-dir DIR] [--no-build] [--jobs N] [TARGET...]
#
# Defaults: 30 seconds per target, build-asan/ (the tests' sanitizer build), every fuzz/fuzz_*.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=30
build=build-asan
do_build=1
jobs=$(nproc)
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds '$seconds' is not a whole number" >&2; exit 2; }
if [[ ${#targets[@]} -eq 0 ]]; then
  for f in fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi

if [[ $do_build -eq 1 ]]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLORA_SANITIZE=ON -DLORA_FUZZ=ON \
    -DLORA_CUDA=OFF -DLORA_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "$build" --parallel "$jobs" --target "${targets[@]}"
fi

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
failed=0
for t in "${targets[@]}"; do
  program="$build/fuzz/$t"
  [[ -x "$program" ]] || { echo "fuzz.sh: $program not built" >&2; exit 2; }
  # 1. The regressions: each input once.
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    if ! "$program" -close_fd_mask=3 fuzz/regressions/$t/* >"$artifacts/$t-regressions.log" 2>&1; then
      echo "$t: a regression input crashes again (see $artifacts/$t-regressions.log)"
      failed=1
      continue
    fi
  fi
  # 2. Fuzzing, on a copy of the seeds (new corpus entries stay in the build folder).
  corpus="$build/fuzz-corpus/$t"
  mkdir -p "$corpus"
  cp -n fuzz/corpus/$t/* "$corpus/" 2>/dev/null || true
  log="$artifacts/$t.log"
  if "$program" -max_total_time="$seconds" -rss_limit_mb=3072 -timeout=30 -close_fd_mask=3 \
       -artifact_prefix="$artifacts/$t-" "$corpus" >"$log" 2>&1; then
    summary=$(grep -E "^#[0-9]+.*(DONE|pulse|NEW|REDUCE)" "$log" | tail -1 | sed -E 's/^#([0-9]+).*cov: ([0-9]+).*corp: ([0-9]+).*/\1 runs, coverage \2, corpus \3/')
    echo "$t: ok, ${seconds} s: $summary"
  else
    echo "$t: CRASH (input and log in $artifacts/, $(ls "$artifacts" | grep -c "^$t-crash\|^$t-leak\|^$t-timeout\|^$t-oom") artifact(s))"
    tail -30 "$log"
    failed=1
  fi
done
exit $failed
