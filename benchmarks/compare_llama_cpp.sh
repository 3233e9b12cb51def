#!/usr/bin/env bash
# Decoding side by side with llama.cpp on the same random weights: llama-bench's pp128 and tg64 against
# bench_serve --llama-bench, f32, the 8-bit base against Q8_0, the 4-bit base against Q4_0, in alternating
# rounds, with the memory-bandwidth bound measured in the same run (bench_serve's streaming read).
#
#   bash benchmarks/compare_llama_cpp.sh [CONFIG] [ROUNDS]     (default: gpt2 3; smollm2-135m works too)
#
# Needs: build/bench_serve, an export_gguf (EXPORT_GGUF, default build/export_gguf) and llama.cpp's
# llama-bench and llama-quantize (LLAMA_CPP_DIR, default build/llama.cpp, built by
# tests/interop/build_llama_cpp.sh). Work files go to WORK (default /tmp/compare_llama_cpp). Take the figures
# on a quiet machine: run it with nothing else running (check `uptime`).
set -euo pipefail
CONFIG=${1:-gpt2}
ROUNDS=${2:-3}
THREADS=${LORA_NUM_THREADS:-2}
LLAMA=${LLAMA_CPP_DIR:-build/llama.cpp}/bin
EXPORT_GGUF=${EXPORT_GGUF:-build/export_gguf}
WORK=${WORK:-/tmp/compare_llama_cpp}/$CONFIG
export LORA_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

for tool in build/bench_serve "$EXPORT_GGUF" "$LLAMA/llama-bench" "$LLAMA/llama-quantize"; do
  [ -x "$tool" ] || { echo "error: $tool is missing (see the header of $0)" >&2; exit 1; }
done

mkdir -p "$WORK"
if [ ! -f "$WORK/Q4_0.gguf" ]; then
  echo "== the weights: random $CONFIG, as a Hugging Face folder and as GGUF (f32, then llama-quantize)"
  build/bench_serve --config "$CONFIG" --save-weights "$WORK/hf" --bandwidth-mib 64 > /dev/null
  if [ "$CONFIG" = gpt2 ] || [[ "$CONFIG" == gpt2-* ]]; then  # GPT-2's tokenizer files, for the GGUF's vocabulary
    cp data/gpt2/encoder.json "$WORK/hf/vocab.json"
    cp data/gpt2/vocab.bpe "$WORK/hf/merges.txt"
  else  # a Llama-family model: the small Llama-3-style BPE fixture (the GGUF pads the rest of the vocabulary);
        # both programs time random token ids, so which tokenizer the file carries does not change the figures
    cp tests/fixtures/tokenizers/llama3/tokenizer.json tests/fixtures/tokenizers/llama3/tokenizer_config.json "$WORK/hf/"
  fi
  "$EXPORT_GGUF" --weights "$WORK/hf" --type f32 --out "$WORK/F32.gguf" > /dev/null
  "$LLAMA/llama-quantize" "$WORK/F32.gguf" "$WORK/Q8_0.gguf" Q8_0 > /dev/null 2>&1
  "$LLAMA/llama-quantize" "$WORK/F32.gguf" "$WORK/Q4_0.gguf" Q4_0 > /dev/null 2>&1
fi

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $THREADS threads, load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A ours=( [F32]=f32 [Q8_0]=q8_0 [Q4_0]=q4_0 )
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for type in F32 Q8_0 Q4_0; do
    # llama.cpp: the best of its 3 repetitions of pp128 and tg64 (its samples_ts; its table's t/s column is their
    # mean, and a mean set against our best would flatter us).
    "$LLAMA/llama-bench" -m "$WORK/$type.gguf" -p 128 -n 64 -t "$THREADS" -r 3 -o jsonl 2> /dev/null |
      awk -v r="$round" -v t="$type" '{
          match($0, /"n_prompt": [0-9]+/); n_prompt = substr($0, RSTART + 12, RLENGTH - 12) + 0
          match($0, /"n_gen": [0-9]+/); n_gen = substr($0, RSTART + 9, RLENGTH - 9) + 0
          match($0, /"samples_ts": \[[^]]*\]/); n = split(substr($0, RSTART + 15, RLENGTH - 16), ts, ",")
          best = 0; for (i = 1; i <= n; ++i) if (ts[i] + 0 > best) best = ts[i] + 0
          test = n_prompt > 0 ? "pp" n_prompt : "tg" n_gen
          printf "round %s | %-5s | llama.cpp | %s %.1f tokens/s (best of %d)\n", r, t, test, best, n }' | tee -a "$RESULTS"
    # lora.cpp: the best of 3 of each test, the bandwidth bound of this run beside it.
    build/bench_serve --weights "$WORK/hf" --base-dtype "${ours[$type]}" --skip-adapters --skip-decode --llama-bench \
        --repeats 3 2>&1 |
      awk -v r="$round" -v t="$type" '/runs against a streaming read/ { print "        " $0; next } /streaming read/ { bw = $0 } /bandwidth bound/ { bound = $0 }
        /llama-bench style/ { printf "round %s | %-5s | lora.cpp  | %s\n", r, t, $0; print "        " bw; print "        " bound }' |
      tee -a "$RESULTS"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# The table: per test, each round's ratio lora.cpp / llama.cpp (the rounds alternate, so each ratio compares
# two runs taken side by side) and their median.
echo
echo "| test | llama.cpp (rounds) | lora.cpp (rounds) | ratio per round | median ratio |"
echo "|---|---|---|---|---|"
awk -F' [|] ' '
  # (portable awk: no asort) an insertion sort of a[1..n], numbers or strings
  function sort(a, n,   i, j, v) { for (i = 2; i <= n; ++i) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; --j) a[j + 1] = a[j]; a[j + 1] = v } }
  $3 == "llama.cpp" { split($4, f, " "); theirs[$2 " " f[1], $1] = f[2]; if (!(($2 " " f[1]) in seen)) { seen[$2 " " f[1]] = 1; names[++nt] = $2 " " f[1] }
                      if (!($1 in seen_round)) { seen_round[$1] = 1; order[++nr] = $1 } }
  $3 == "lora.cpp " { n = split($4, f, /[ ,]+/); for (i = 1; i < n; ++i) if (f[i] ~ /^(pp|tg)[0-9]+$/) ours[$2 " " f[i], $1] = f[i + 1] }
  END {
    for (k = 1; k <= nt; ++k) {
      t = names[k]; split(t, parts, " "); a = ""; b = ""; c = ""; m = 0
      for (j = 1; j <= nr; ++j) {
        r = order[j]; x = theirs[t, r]; y = ours[t, r]
        a = a (j > 1 ? ", " : "") x; b = b (j > 1 ? ", " : "") y
        if (x > 0 && y > 0) { ratio[++m] = y / x; c = c (m > 1 ? ", " : "") sprintf("%.2f", y / x) }
      }
      sort(ratio, m)
      med = m == 0 ? "-" : sprintf("%.2fx", m % 2 ? ratio[(m + 1) / 2] : (ratio[m / 2] + ratio[m / 2 + 1]) / 2)
      printf "| %s, %s | %s | %s | %s | **%s** |\n", parts[2], parts[1], a, b, c, med
    }
  }' "$RESULTS"
