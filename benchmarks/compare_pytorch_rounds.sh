#!/usr/bin/env bash
# Training steps side by side with PyTorch in alternating rounds: each round runs lora.cpp's bench_train, then
# PyTorch at its best setting on this machine (2 threads, malloc kept, fused AdamW, GOMP_SPINCOUNT=10000), on
# GPT-2 small (full and LoRA at 4x64 and 4x256) and on SmolLM2-135M's shape (full and LoRA at 4x256), and
# prints at the end, per configuration, each round's speed-up (PyTorch's step time over lora.cpp's) and the
# peak RSS of both. Alternating rounds put both programs under the same state of the machine; quote ratios.
#
#   bash benchmarks/compare_pytorch_rounds.sh [ROUNDS]          (default 2)
#
# Needs build/bench_train and a Python with torch, transformers and peft (PYTHON, default python3). Work files
# go to WORK (default: a temporary folder). Run it with nothing else running (check `uptime`).
set -euo pipefail
ROUNDS=${1:-2}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "compare_pytorch_rounds: ROUNDS must be a positive whole number, got '$ROUNDS'" >&2; exit 2; }
[ -x build/bench_train ] || { echo "compare_pytorch_rounds: build/bench_train not found (run from the repository root after building)" >&2; exit 2; }
"$PYTHON" -c "import torch, transformers, peft" 2> /dev/null ||
  { echo "compare_pytorch_rounds: $PYTHON lacks torch, transformers or peft (pip install torch transformers peft)" >&2; exit 2; }
mkdir -p "$WORK"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg); work: $WORK"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
  ./build/bench_train --configs full:4x64,lora:4x64,full:4x256,lora:4x256 --warmup 2 --steps 3 \
      --json "$WORK/lora_gpt2_$round.json" > /dev/null
  GOMP_SPINCOUNT=10000 "$PYTHON" benchmarks/pytorch_reference.py --configs full:4x64,lora:4x64,full:4x256,lora:4x256 \
      --threads 2 --malloc keep --optimizer fused --omp-spin 10000 --warmup 2 --steps 3 \
      --json "$WORK/torch_gpt2_$round.json" > /dev/null
  ./build/bench_train --config smollm2-135m --configs full:4x256,lora:4x256 --warmup 1 --steps 3 \
      --json "$WORK/lora_smollm2_$round.json" > /dev/null
  GOMP_SPINCOUNT=10000 "$PYTHON" benchmarks/pytorch_reference_llama.py --configs full:4x256,lora:4x256 --threads 2 \
      --malloc keep --warmup 1 --steps 3 --json "$WORK/torch_smollm2_$round.json" > /dev/null
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PYTHON" - "$WORK" "$ROUNDS" <<'PY'
import json, os, sys
work, rounds = sys.argv[1], int(sys.argv[2])

def results(path):
    data = json.load(open(path))
    return {r["config"]: r for r in (data["results"] if isinstance(data, dict) else data)}

print("\n| model, config | lora.cpp s/step (rounds) | PyTorch s/step (rounds) | speed-up per round | peak RSS lora.cpp / PyTorch |")
print("|---|---|---|---|---|")
for model in ("gpt2", "smollm2"):
    ours = [results(os.path.join(work, f"lora_{model}_{r}.json")) for r in range(1, rounds + 1)]
    theirs = [results(os.path.join(work, f"torch_{model}_{r}.json")) for r in range(1, rounds + 1)]
    for config in ours[0]:
        a = [o[config]["step_s"] for o in ours]
        b = [t[config]["step_s"] for t in theirs]
        rss = f"{ours[-1][config]['peak_rss_bytes'] / 2**30:.2f} / {theirs[-1][config]['peak_rss_bytes'] / 2**30:.2f} GiB"
        print(f"| {model}, {config} | {', '.join(f'{x:.3f}' for x in a)} | {', '.join(f'{x:.3f}' for x in b)} | "
              f"{', '.join(f'{y / x:.2f}' for x, y in zip(a, b))} | {rss} |")
PY
