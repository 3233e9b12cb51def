#!/usr/bin/env bash
# Memory of GGUF files (counts: peak RSS and the allocator tracker's peak), alternated runs:
#   - loading (forward_logits on 6 tokens) and exporting (export_gguf), as before;
#   - LoRA fine-tuning (finetune --mode lora, 2 steps at batch 1 x 32) of GPT-2 small's shape from an f32, a
#     q8_0 and a q4_0 GGUF file, with --base-dtype f32 (every tensor dequantized to f32: the import before
#     compact bases, and still what --base-dtype f32 does) and --base-dtype auto (the file's Q8_0/Q4_0 blocks
#     kept as the frozen base: the default for a GGUF file).
# The files: export_gguf --config gpt2 --type f32 --out $D/gpt2-f32.gguf, then
# export_gguf --weights $D/gpt2-f32.gguf --type q8_0 (and q4_0); ids.safetensors holds 6 token ids.
# LORA_ONLY=1 runs the fine-tuning part only; REPS=N sets the rounds (default 2). Times are printed but are not figures on a shared machine.
B=${BUILD:-build}
D=${GGUF_DIR:-/tmp/gg}
for f in f32 q8_0 q4_0; do
  [[ -f $D/gpt2-$f.gguf ]] || { [[ $f == f32 ]] && $B/export_gguf --config gpt2 --type f32 --out $D/gpt2-f32.gguf >/dev/null ||
    $B/export_gguf --weights $D/gpt2-f32.gguf --type $f --out $D/gpt2-$f.gguf >/dev/null; }
done
ls -l $D/gpt2-*.gguf | awk '{print "file " $9 ": " $5 " bytes"}'
for rep in $(seq ${REPS:-2}); do
  if [[ -z "$LORA_ONLY" ]]; then
    for f in gpt2-f32.gguf gpt2-q8_0.gguf; do
      /usr/bin/time -f "load $f: maxrss %M KB, %e s" $B/forward_logits --weights $D/$f --ids $D/ids.safetensors --out $D/o.safetensors 2>&1 >/dev/null | tail -1
    done
    /usr/bin/time -f "export gpt2-f32.gguf -> q8_0: maxrss %M KB, %e s" $B/export_gguf --weights $D/gpt2-f32.gguf --type q8_0 --out $D/re-q8_0.gguf 2>&1 >/dev/null | tail -1
    /usr/bin/time -f "export random gpt2 (no file read) -> q8_0: maxrss %M KB, %e s" $B/export_gguf --config gpt2 --type q8_0 --out $D/r-q8_0.gguf 2>&1 >/dev/null | tail -1
  fi
  for f in f32 q8_0 q4_0; do
    for base in f32 auto; do
      $B/finetune --weights $D/gpt2-$f.gguf --mode lora --base-dtype $base --steps 2 --warmup 0 --batch 1 --seq 32 --eval-batches 1 \
        --no-preflight --report-json $D/report.json >$D/finetune.log 2>&1 || { echo "finetune failed:"; tail -5 $D/finetune.log; continue; }
      python3 - "$D/report.json" "gpt2-$f.gguf" "$base" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r[0] if isinstance(r, list) else (r["modes"][0] if "modes" in r else r)
p = m["peak_bytes"]
MiB = 1024 * 1024
print(f"finetune lora {sys.argv[2]} --base-dtype {sys.argv[3]}: peak RSS {m['peak_rss_bytes'] / MiB:.1f} MiB, "
      f"tracker peak {p['total'] / MiB:.1f} MiB (frozen params {p['frozen_params'] / MiB:.1f} MiB, "
      f"trainable {p.get('trainable_params', 0) / MiB:.1f} MiB)")
PY
      grep -E "GGUF base:|base weights as" $D/finetune.log | sed 's/^/    /'
    done
  done
done
