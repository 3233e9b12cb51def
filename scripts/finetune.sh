#!/usr/bin/env bash
# Builds lora.cpp and runs the main job: GPT-2 small fine-tuned fully, with LoRA (r=8 on q and v), and with
# LoRA on an nf4-quantized frozen base with activation checkpointing, on Tiny Shakespeare, each variant in
# its own process, with the measured memory report and the comparison.
# Extra arguments go to finetune (try --help, or --weights PATH for real GPT-2 weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
variants=(--variants full,lora,lora+nf4+ckpt)
for arg in "$@"; do
  [[ "$arg" == --variants* ]] && variants=()   # the caller chose the variants
done
./build/finetune --mode compare "${variants[@]}" "$@"
