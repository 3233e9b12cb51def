#!/usr/bin/env bash
# Peak RSS of loading GGUF files (forward_logits on 6 tokens) and of exporting (export_gguf), alternated.
B=${BUILD:-build}
D=${GGUF_DIR:-/tmp/gg}  # holds gpt2-f32.gguf, gpt2-q8_0.gguf and ids.safetensors (see docs/performance.md)
for rep in 1 2; do
  for f in gpt2-f32.gguf gpt2-q8_0.gguf; do
    /usr/bin/time -f "load $f: maxrss %M KB, %e s" $B/forward_logits --weights $D/$f --ids $D/ids.safetensors --out $D/o.safetensors 2>&1 >/dev/null | tail -1
  done
  /usr/bin/time -f "export gpt2-f32.gguf -> q8_0: maxrss %M KB, %e s" $B/export_gguf --weights $D/gpt2-f32.gguf --type q8_0 --out $D/re-q8_0.gguf 2>&1 >/dev/null | tail -1
  /usr/bin/time -f "export random gpt2 (no file read) -> q8_0: maxrss %M KB, %e s" $B/export_gguf --config gpt2 --type q8_0 --out $D/r-q8_0.gguf 2>&1 >/dev/null | tail -1
done
