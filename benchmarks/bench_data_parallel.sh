#!/usr/bin/env bash
# bench_data_parallel: the same global batch trained two ways on one machine, side by side in one run:
#   1 rank x T threads  (finetune --batch B)
#   N ranks x T/N threads each (mpirun -np N finetune --batch B/N): the gradients are all-reduced every step
# for full fine-tuning and LoRA. Prints step time (median of the steps after the first), tokens/s, the
# bytes all-reduced per step, time inside the all-reduce and the share of it hidden behind backward.
#
#   benchmarks/bench_data_parallel.sh [--build DIR] [--ranks N] [--threads T] [--batch B] [--seq S] [--steps K]
#
# Defaults: build/, 2 ranks, 2 threads, batch 4 x 256, 5 steps, GPT-2 small (random init).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build ranks=2 threads=2 batch=4 seq=256 steps=5 config=gpt2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --seq) seq="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_data_parallel: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
(( batch % ranks == 0 && threads % ranks == 0 )) || { echo "bench_data_parallel: --batch and --threads must be multiples of --ranks" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 GOMP_SPINCOUNT=10000
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
common=(--config "$config" --seq "$seq" --steps "$steps" --warmup 1 --no-preflight)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in full lora; do
  LORA_NUM_THREADS=$threads "$build/finetune" --mode "$mode" --batch "$batch" "${common[@]}" \
    --report-json "$out/$mode-1.json" >"$out/$mode-1.log" 2>&1 || { cat "$out/$mode-1.log"; exit 1; }
  mpirun -np "$ranks" --bind-to none -x LORA_NUM_THREADS=$((threads / ranks)) -x GOMP_SPINCOUNT \
    "$build/finetune" --mode "$mode" --batch $((batch / ranks)) "${common[@]}" \
    --report-json "$out/$mode-$ranks.json" >"$out/$mode-$ranks.log" 2>&1 || { cat "$out/$mode-$ranks.log"; exit 1; }
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$ranks" "$threads" "$batch" "$seq" <<'PY'
import json, statistics, sys
out, ranks, threads, batch, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"global batch {batch} x {seq}")
print(f"{'mode':<5} {'layout':<22} {'step s':>8} {'tokens/s':>9} {'all-reduce/step':>16} {'comm s/step':>12} {'hidden':>7}")
for mode in ("full", "lora"):
    for n, layout in ((1, f"1 rank x {threads} threads"), (ranks, f"{ranks} ranks x {threads // ranks} thread(s)")):
        r = json.load(open(f"{out}/{mode}-{n}.json"))["modes"][0]
        times = r["step_times_s"][1:] or r["step_times_s"]
        step = statistics.median(times)
        mib = r["allreduce_bytes_per_step"] / 2**20
        print(f"{mode:<5} {layout:<22} {step:8.3f} {batch * seq / step:9.0f} {mib:12.1f} MiB "
              f"{r['comm_seconds_per_step']:12.3f} {100 * r['comm_hidden_share']:6.0f}%")
PY
