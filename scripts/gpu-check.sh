#!/usr/bin/env bash
# GPU check: builds the CUDA configuration (Release) into build-gpu/ and runs each GPU step in turn, then
# prints a summary table (one line per step: PASS, FAIL or SKIP, and its time). Meant for a machine with an
# NVIDIA GPU (an H200 here); it finishes well under 8 minutes there.
#
#   scripts/gpu-check.sh [--build-dir DIR] [--jobs N] [--no-build] [--help]
#
# Adding a step: write a function step_<name> that returns 0 (pass), 1 (fail) or 2 (skip, with the reason
# echoed on its last line), and list it in STEPS below with its time limit. A step whose program does not
# exist yet skips itself (see require_program). Every step's full output goes to $BUILD_DIR/gpu-check-logs/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$ROOT/build-gpu"
JOBS="$(nproc 2>/dev/null || echo 4)"
DO_BUILD=1

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --no-build) DO_BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

LOG_DIR="$BUILD_DIR/gpu-check-logs"
mkdir -p "$LOG_DIR"

# ---------------------------------------------------------------------------------------------------
# Steps. Each prints what it does; its last output line is shown in the summary when it skips or fails.

# Skips the calling step (status 2) when a program has not been written/built yet.
require_program() {
  if [[ ! -x "$1" ]]; then
    echo "skipped: $(basename "$1") does not exist yet"
    return 2
  fi
  return 0
}

# Skips the calling step (status 2) on a machine without an NVIDIA GPU.
require_gpu() {
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "skipped: no NVIDIA GPU"
    return 2
  fi
  return 0
}

step_device() {
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "skipped: nvidia-smi not found (no NVIDIA driver?)"
    return 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || return 1
  local name
  name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  echo "device: $name"
}

step_build() {
  if [[ $DO_BUILD -eq 0 ]]; then
    echo "skipped: --no-build"
    return 2
  fi
  local generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  local configure_log="$LOG_DIR/configure.txt"
  cmake -S "$ROOT" -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DLORA_CUDA=ON 2>&1 |
    tee "$configure_log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || return 1
  if ! grep -q "CUDA backend ON" "$configure_log"; then
    echo "CMake did not configure the CUDA backend (toolkit not found?)"
    return 1
  fi
  cmake --build "$BUILD_DIR" -j "$JOBS" || return 1
  echo "built $BUILD_DIR"
}

# Every [cuda] test of lora_tests (the tests ctest -R cuda runs one by one, here in one process): GPU-vs-CPU
# parity of each kernel. LORA_CUDA_SYNC=1 synchronises after each launch, so a faulting kernel is named.
step_cuda_tests() {
  require_program "$BUILD_DIR/tests/lora_tests" || return $?
  local out="$LOG_DIR/cuda_tests.txt"
  LORA_CUDA_SYNC=1 "$BUILD_DIR/tests/lora_tests" "[cuda]" --durations yes 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  if grep -q "no CUDA device: skipped" "$out"; then
    echo "skipped: the tests found no CUDA device"
    return 2
  fi
  [[ $rc -eq 0 ]] || { echo "$(grep -E '^test cases:' "$out" | tail -1)"; return 1; }
  echo "$(grep -E '^All tests passed|^test cases:' "$out" | tail -1)"
}

# GPT-2 small (random init), full fine-tuning vs LoRA (r=8 on q,v) on the GPU, batch 8 x 1024, a few steps
# each, every mode in its own process; prints step time, tokens/s, peak device memory (allocator tracker)
# and achieved TFLOP/s (6 N B T + 12 L T^2 C B full; 4 N B T + 12 L T^2 C B + 6 N_lora B T LoRA;
# N = 123.65M matmul parameters with the LM head).
step_gpt2_compare() {
  require_program "$BUILD_DIR/finetune" || return $?
  require_gpu || return $?
  local json="$LOG_DIR/gpt2_compare.json"
  "$BUILD_DIR/finetune" --device cuda --mode compare --batch 8 --seq 1024 --steps 4 --warmup 1 \
    --eval-batches 1 --report-json "$json" || return 1
  python3 - "$json" <<'PY' || return 1
import json, sys
modes = json.load(open(sys.argv[1]))["modes"]
N, L, C = 123.65e6, 12, 768
print(f"{'mode':<6} {'step s':>8} {'tokens/s':>10} {'peak GiB':>9} {'TFLOP/s':>8}")
for m in modes:
    B, T = m["batch"], m["seq"]
    attn = 12 * L * T * T * C * B
    flops = 6 * N * B * T + attn if m["mode"] == "full" else 4 * N * B * T + attn + 6 * m["trainable_params"] * B * T
    print(f"{m['mode']:<6} {m['step_time_s']:>8.3f} {m['tokens_per_s']:>10.0f} "
          f"{m['peak_bytes']['total'] / 2**30:>9.2f} {flops / m['step_time_s'] / 1e12:>8.1f}")
full, lora = modes
print(f"lora/full: step time {lora['step_time_s'] / full['step_time_s']:.2f}x, "
      f"peak memory {lora['peak_bytes']['total'] / full['peak_bytes']['total']:.2f}x")
PY
}

# Kernel micro-benchmarks: cuBLAS gemm at GPT-2 shapes (TF32 off and on) and causal attention.
step_benchmarks() {
  require_program "$BUILD_DIR/bench_cuda" || return $?
  "$BUILD_DIR/bench_cuda" --batch 8 --seq 1024
  local rc=$?
  [[ $rc -eq 2 ]] && echo "skipped: no CUDA device"
  return $rc
}

# The same training steps in PyTorch eager on the GPU, for a ratio (skips where PyTorch or its CUDA
# build is missing, or where the reference script has no --device option).
step_pytorch() {
  local script="$ROOT/benchmarks/pytorch_reference.py"
  [[ -f "$script" ]] || { echo "skipped: benchmarks/pytorch_reference.py does not exist"; return 2; }
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    { echo "skipped: PyTorch with CUDA is not installed"; return 2; }
  python3 "$script" --help 2>/dev/null | grep -q -- "--device" ||
    { echo "skipped: pytorch_reference.py has no --device option"; return 2; }
  python3 "$script" --device cuda --configs full:8x1024,lora:8x1024 --warmup 1 --steps 3 || return 1
}

# The card's own ceilings, measured in the same run as the figures they judge (PyTorch's cuBLAS): sgemm
# with TF32 off, TF32 and BF16 at 8192^3 and at GPT-2 small's MLP shape (8192 x 768 x 3072), and the
# device-to-device copy bandwidth (bytes read + written).
step_ceilings() {
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    { echo "skipped: PyTorch with CUDA is not installed"; return 2; }
  python3 - <<'PY' || return 1
import torch
def tflops(m, k, n, dtype, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(m, k, device="cuda", dtype=dtype); b = torch.randn(k, n, device="cuda", dtype=dtype)
    for _ in range(3): a @ b
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10): a @ b
    e.record(); torch.cuda.synchronize()
    return 2 * m * k * n * 10 / (s.elapsed_time(e) / 1e3) / 1e12
print(torch.cuda.get_device_name(0))
for name, dtype, tf32 in [("fp32 sgemm (TF32 off)", torch.float32, False), ("tf32", torch.float32, True),
                          ("bf16", torch.bfloat16, False)]:
    print(f"ceiling {name:<22} 8192^3 {tflops(8192, 8192, 8192, dtype, tf32):7.1f} TFLOP/s   "
          f"8192x768x3072 {tflops(8192, 768, 3072, dtype, tf32):7.1f} TFLOP/s")
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f"ceiling bandwidth (device copy, read + write) {2 * (1 << 30) * 10 / (s.elapsed_time(e) / 1e3) / 1e9:.0f} GB/s")
PY
}

# The same comparison at 4 x 256.
step_gpt2_compare_small() {
  require_program "$BUILD_DIR/finetune" || return $?
  require_gpu || return $?
  "$BUILD_DIR/finetune" --device cuda --mode compare --batch 4 --seq 256 --steps 6 --warmup 2 \
    --eval-batches 1 --report-json "$LOG_DIR/gpt2_compare_4x256.json" || return 1
}

# Batch-1 forward and greedy decoding of GPT-2 small (random weights) on the GPU, base and LoRA variants.
step_decode() {
  require_program "$BUILD_DIR/bench_inference" || return $?
  require_gpu || return $?
  "$BUILD_DIR/bench_inference" --device cuda --seq 128 --prompt-tokens 16 --new-tokens 128 --repeats 3 || return 1
}

# Data parallelism over NCCL: one rank per GPU (a single GPU still runs a 1-rank NCCL job), LoRA on the
# tiny GPT-2 for a few steps; the report must say NCCL and show the all-reduced bytes.
step_nccl() {
  require_program "$BUILD_DIR/finetune" || return $?
  require_gpu || return $?
  command -v mpirun >/dev/null 2>&1 || { echo "skipped: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; return 2; }
  grep -q "NCCL ON" "$LOG_DIR/configure.txt" 2>/dev/null || { echo "skipped: the build has no NCCL"; return 2; }
  local gpus json="$LOG_DIR/nccl.json"
  gpus=$(nvidia-smi -L | wc -l)
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np "$gpus" \
    "$BUILD_DIR/finetune" --device cuda --config small-test --mode lora --steps 4 --warmup 1 --batch 4 --seq 128 \
    --eval-batches 1 --report-json "$json" || return 1
  python3 - "$json" "$gpus" <<'PY' || return 1
import json, sys
m = json.load(open(sys.argv[1]))["modes"][0]
ranks = int(sys.argv[2])
assert m["ranks"] == ranks, m["ranks"]
assert ranks == 1 or m["comm_engine"] == "NCCL", m["comm_engine"]
print(f"{ranks} rank(s), {m['comm_engine'] or 'single process'}: {m['allreduce_bytes_per_step']} bytes/step, "
      f"{m['comm_seconds_per_step']:.4f} s in communication, step {m['step_time_s']:.3f} s")
PY
}

# name:function:time limit in seconds. Keep the sum of the limits within 9 minutes without the build (now 505 s); on an H200
# the build takes about 1-2 minutes and the parity tests well under one.
STEPS=(
  "device:step_device:15"
  "build (Release, CUDA):step_build:180"
  "cuda tests:step_cuda_tests:90"
  "card ceilings:step_ceilings:45"
  "gpt2 full vs lora 8x1024:step_gpt2_compare:120"
  "gpt2 full vs lora 4x256:step_gpt2_compare_small:45"
  "micro-benchmarks:step_benchmarks:45"
  "decode batch 1:step_decode:60"
  "pytorch eager reference:step_pytorch:60"
  "nccl data parallel:step_nccl:30"
)

# ---------------------------------------------------------------------------------------------------
# Runner

export -f require_program require_gpu step_device step_build step_cuda_tests step_ceilings step_gpt2_compare \
  step_gpt2_compare_small step_benchmarks step_decode step_pytorch step_nccl
export ROOT BUILD_DIR JOBS DO_BUILD LOG_DIR

declare -a SUMMARY=()
failures=0
parity_status=SKIP
start_all=$(date +%s)
for entry in "${STEPS[@]}"; do
  IFS=':' read -r name fn limit <<<"$entry"
  log="$LOG_DIR/$(echo "$fn" | sed 's/^step_//').log"
  echo
  echo "=== $name (limit ${limit}s) ==="
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$fn" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  dt=$(( $(date +%s) - t0 ))
  last="$(grep -v '^[[:space:]]*$' "$log" | tail -1 | cut -c1-70)"
  case $rc in
    0) status=PASS ;;
    2) status=SKIP ;;
    124|137) status=FAIL; last="timed out after ${limit}s"; failures=$((failures + 1)) ;;
    *) status=FAIL; failures=$((failures + 1)) ;;
  esac
  [[ "$fn" == step_cuda_tests ]] && parity_status=$status
  SUMMARY+=("$(printf '%-24s %-5s %5ss  %s' "$name" "$status" "$dt" "$last")")
  # Without a build there is nothing to run.
  if [[ "$fn" == step_build && $status == FAIL ]]; then
    echo "build failed: later steps are skipped"
    break
  fi
done
total=$(( $(date +%s) - start_all ))

echo
echo "=== gpu-check summary (${total}s, logs in $LOG_DIR) ==="
printf '%-24s %-5s %6s  %s\n' "step" "state" "time" "note"
for line in "${SUMMARY[@]}"; do echo "$line"; done
if [[ $failures -gt 0 ]]; then
  echo "gpu-check: $failures step(s) failed"
  exit 1
fi
if [[ $parity_status != PASS ]]; then
  echo "gpu-check: the CUDA parity tests did not run (no GPU or no build?): nothing was checked"
  exit 1
fi
echo "gpu-check: no failures"
