#!/usr/bin/env bash
# Builds lora.cpp and runs the main job: GPT-2 small fine-tuned fully and with LoRA (r=8 on q and v) on
# Tiny Shakespeare, each mode in its own process, with the measured memory report and the comparison.
# Extra arguments go to finetune_gpt2 (try --help, or --weights PATH for real GPT-2 weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/finetune_gpt2 --mode compare "$@"
