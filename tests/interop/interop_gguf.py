#!/usr/bin/env python3
"""lora.cpp's GGUF files checked against llama.cpp itself (run by hand; the last output is committed as
tests/interop/OUTPUT_gguf.txt).

    bash tests/interop/build_llama_cpp.sh                 # llama.cpp, pinned, into build/llama.cpp
    pip install numpy safetensors gguf torch transformers
    python3 tests/interop/interop_gguf.py [--build build] [--llama build/llama.cpp/bin] [--checks 1,2,3,4,5]

Models (random weights: no trained checkpoint can be downloaded here; the checks compare two
implementations on identical weights, which random weights do as well as trained ones):
  gpt2   GPT-2's shape at 4 layers x 128 with GPT-2's own tokenizer (data/gpt2): tokenizer.ggml.pre "gpt-2"
  llama  a Llama (GQA 4/2 heads, untied head) with the Llama-3 tokenizer fixture: pre "llama-bpe", add_bos,
         q/k rows permuted as llama.cpp's converter does
Logits are compared relative to the largest logit: llama.cpp's CPU kernels use f16 tables for GELU and
f16 activations in f16 matrix products, so absolute differences grow with the logits' scale.
  qwen2  a Qwen2 (q/k/v biases, tied head) with the Qwen2 tokenizer fixture: pre "qwen2"

Checks, per model:
  1. lora.cpp's f32 and f16 exports: llama.cpp tokenizes the prompt as lora.cpp does; llama.cpp's logits of
     the last prompt position (llama-debug --save-logits) against lora.cpp's (forward_logits on the same
     file; for f16, llama.cpp on the same weights in f32, since it rounds activations to f16 in f16
     products), max |difference|; greedy continuation (llama-completion --temp 0) against lora.cpp's
     generate.
  2. q8_0 / q4_0 exports against llama-quantize's q8_0 / q4_0 of lora.cpp's f32 export: llama-perplexity
     of each on the same text, relative difference (target: within 1%).
  3. A LoRA adapter trained by lora.cpp's finetune on the f32 GGUF base, exported with --adapter-only:
     llama-completion --lora gives the same greedy text as lora.cpp's generate --adapter (PEFT).
  4. GGUF files made by llama.cpp (llama-quantize: Q8_0, Q4_0, Q4_K_M) loaded by lora.cpp: its logits
     against llama.cpp's on that file, and against llama.cpp's on lora.cpp's dequantization of it written as
     f32 (the check of the decoders; llama.cpp's own 8-bit activation rounding is reported beside it), and
     finetune --mode lora runs on them.
  5. GGUF files made by llama.cpp's converter (convert_hf_to_gguf.py --outtype f32, f16, q8_0) from a Hugging
     Face folder: lora.cpp reads the prompt's ids and the logits it gets on the folder itself (within the
     type's rounding) and llama.cpp's on the file, and fine-tunes them. Needs `pip install torch transformers`
     besides numpy, safetensors and gguf. `--checks 5` runs only this one.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = "The quick brown fox jumps over the lazy dog. It was"
TEXT = os.path.join(ROOT, "data", "tinyshakespeare.txt")

MODELS = {
    "gpt2": ({"model_type": "gpt2", "vocab_size": 50257, "n_positions": 256, "n_embd": 128, "n_layer": 4, "n_head": 4,
              "initializer_range": 0.1, "bos_token_id": 50256, "eos_token_id": 50256},
             os.path.join(ROOT, "data", "gpt2")),
    "llama": ({"model_type": "llama", "vocab_size": 909, "hidden_size": 128, "intermediate_size": 256,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
               "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "initializer_range": 0.1, "tie_word_embeddings": False,
               "bos_token_id": 903, "eos_token_id": 904},
              os.path.join(ROOT, "tests", "fixtures", "tokenizers", "llama3")),
    "qwen2": ({"model_type": "qwen2", "vocab_size": 864, "hidden_size": 128, "intermediate_size": 256,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
               "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "initializer_range": 0.1, "tie_word_embeddings": True,
               "eos_token_id": 850},
              os.path.join(ROOT, "tests", "fixtures", "tokenizers", "qwen2")),
}


# Weight repacking off: on a CPU that reports AMX to a process the kernel does not let use it, the repacked
# (AMX) Q8_0/Q4_0 kernels of a -march=native build die with SIGILL. Results are the same either way.
ENV = dict(os.environ, LLAMA_ARG_REPACK="0")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


class Checks:
    def __init__(self):
        self.lines, self.failed = [], 0

    def report(self, ok, text):
        line = f"{'PASS' if ok else 'FAIL'}  {text}"
        self.failed += 0 if ok else 1
        self.lines.append(line)
        print(line, flush=True)


def llama_last_logits(llama, gguf, prompt, work, lora=None):
    out = os.path.join(work, "debug")
    shutil.rmtree(out, ignore_errors=True)
    # The KV cache in f32 and no flash attention: llama.cpp's defaults (an f16 cache) round K and V to f16,
    # which alone moves GPT-2 small's logits by 1.6e-3 where lora.cpp keeps them in f32.
    cmd = [f"{llama}/llama-debug", "-m", gguf, "-p", prompt, "--save-logits", "--logits-output-dir", out, "-t", "2",
           "--temp", "0", "-ctk", "f32", "-ctv", "f32", "-fa", "off"]
    if lora:
        cmd += ["--lora", lora]
    run(cmd)
    name = os.path.splitext(os.path.basename(gguf))[0]
    logits = np.fromfile(os.path.join(out, f"llamacpp-{name}.bin"), dtype=np.float32)
    tokens = np.fromfile(os.path.join(out, f"llamacpp-{name}-tokens.bin"), dtype=np.int32)
    return logits, tokens


def lora_logits(build, gguf, ids, work, adapter=None):
    ids_path, out_path = os.path.join(work, "ids.safetensors"), os.path.join(work, "logits.safetensors")
    save_file({"input_ids": np.asarray([ids], dtype=np.int64)}, ids_path)
    cmd = [f"{build}/forward_logits", "--weights", gguf, "--ids", ids_path, "--out", out_path]
    if adapter:
        cmd += ["--adapter", adapter]
    run(cmd)
    return load_file(out_path)["logits"][0, -1]


def lora_prompt_ids(build, gguf, prompt):
    r = run([f"{build}/generate", "--weights", gguf, "--prompt", prompt, "--max-new-tokens", "0", "--temperature", "0",
             "--json"])
    return json.loads(r.stdout.strip().splitlines()[-1])["prompt_ids"]


def byte_decoder():
    """GPT-2's bytes_to_unicode, inverted: a byte-level token string back to its bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTES = byte_decoder()


def token_bytes(gguf_path):
    """Each token's bytes as llama.cpp prints it (control tokens print nothing), from the file itself."""
    import gguf
    r = gguf.GGUFReader(gguf_path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    out = []
    for t, ty in zip(tokens, types):
        if ty == 3:
            out.append(b"")
        elif ty == 4:
            out.append(t.encode())
        else:
            out.append(bytes(BYTES[c] for c in t))
    return out


def lora_greedy(build, gguf, prompt, n, adapter=None):
    """lora.cpp's greedy continuation: its ids, and their bytes as llama.cpp would print them."""
    cmd = [f"{build}/generate", "--weights", gguf, "--prompt", prompt, "--max-new-tokens", str(n), "--temperature", "0",
           "--json"]
    if adapter:
        cmd += ["--adapter", adapter]
    r = run(cmd)
    ids = json.loads(r.stdout.strip().splitlines()[-1])["generated_ids"]
    pieces = token_bytes(gguf)
    return b"".join(pieces[i] for i in ids), ids


def llama_greedy(llama, gguf, prompt, n, lora=None):
    """llama.cpp's greedy continuation as the bytes llama-completion prints (its own trailer removed)."""
    cmd = [f"{llama}/llama-completion", "-m", gguf, "-p", prompt, "-n", str(n), "--temp", "0", "-no-cnv",
           "--no-display-prompt", "--simple-io", "-t", "1", "--no-warmup", "-s", "1"]
    if lora:
        cmd += ["--lora", lora]
    # On this machine llama-completion with 2 threads often stops early, exiting 0 with part or none of its
    # text and without the timing summary it prints at the end (3 to 6 runs in 10 of the same command; with
    # one thread 8 of 8 finished), so it runs on one thread; greedy decoding gives the same tokens either way.
    # A run still counts only when that summary is there; up to 5 tries.
    for attempt in range(5):
        r = subprocess.run(cmd, capture_output=True, env=ENV, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]!r}")
        if b"total time" in r.stderr:
            break
        print(f"llama-completion stopped before its summary (try {attempt + 1}); running it again", flush=True)
    else:
        sys.exit(f"llama-completion never finished its run in 5 tries: {' '.join(cmd)}")
    out = r.stdout
    out = out[:-2] if out.endswith(b"\n\n") else out  # completion.cpp always ends with "\n\n"
    return out[:-len(b" [end of text]\n")] if out.endswith(b" [end of text]\n") else out


def perplexity(llama, gguf, text_file):
    """llama-perplexity's final estimate, or None (with its last lines printed) when it gives none."""
    cmd = [f"{llama}/llama-perplexity", "-m", gguf, "-f", text_file, "-c", "128", "--chunks", "12", "-t", "2", "-b", "128"]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=ENV)
    for line in (r.stdout + r.stderr).splitlines():
        if "Final estimate: PPL =" in line:
            return float(line.split("PPL =")[1].split()[0])
    print(f"llama-perplexity gave no estimate for {gguf} (exit {r.returncode}):\n{r.stderr[-1500:]}")
    return None


def llama_logits_of_lora_decoding(build, llama, gguf, folder):
    """llama.cpp's last-position logits on lora.cpp's decoding of `gguf` written back as f32: the same numbers
    with none of llama.cpp's own f16 / 8-bit activation rounding (the reference for non-f32 files)."""
    decoded = os.path.join(folder, os.path.splitext(os.path.basename(gguf))[0] + "-decoded-by-lora.gguf")
    run([f"{build}/export_gguf", "--weights", gguf, "--out", decoded, "--type", "f32"])
    return llama_last_logits(llama, decoded, PROMPT, folder)[0]


def check_finetune_runs(checks, build, gguf, text, label):
    """A few LoRA steps of finetune on the file: reported as a check, with the error's tail when it fails."""
    r = subprocess.run([f"{build}/finetune", "--weights", gguf, "--data", text, "--mode", "lora", "--steps", "3",
                        "--batch", "1", "--seq", "32", "--no-preflight"], capture_output=True, text=True)
    checks.report(r.returncode == 0, f"{label} ({'runs' if r.returncode == 0 else 'failed: ' + r.stderr[-300:]})")


# The pre-tokenizer names lora.cpp's export writes for the families whose tokenizer fixtures are small.
FIXTURE_PRE = {"llama": "llama-bpe", "qwen2": "qwen2"}


def convert_with_llama_cpp(llama_src, hf, outtype, out, pre=None):
    """llama.cpp's own converter (convert_hf_to_gguf.py, which needs torch, transformers and its gguf-py) on a
    Hugging Face folder. It names a BPE pre-tokenizer by a hash of how the tokenizer splits a fixed text; the
    small tokenizer fixtures (a few hundred tokens) hash to nothing it knows, so for them the family's name is
    given (`pre`); GPT-2's real tokenizer is recognised by the hash. Everything else is the converter's own."""
    code = (
        "import sys\n"
        f"sys.path[:0] = [{os.path.join(llama_src, 'gguf-py')!r}, {llama_src!r}]\n"
        f"sys.argv = ['convert_hf_to_gguf.py', {hf!r}, '--outtype', {outtype!r}, '--outfile', {out!r}]\n"
        "import convert_hf_to_gguf, conversion.base\n"
        + (f"conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}\n" if pre else "")
        + "convert_hf_to_gguf.main()\n")
    run([sys.executable, "-c", code])


def converter_checks(checks, build, llama, llama_src, name, config_path, tokenizer, folder, text):
    """5. GGUF files made by llama.cpp's converter from a Hugging Face folder (f32, f16, q8_0) load in lora.cpp:
    the same prompt ids and logits as lora.cpp on the folder itself (within the type's rounding), llama.cpp's
    logits on that file, and finetune --mode lora runs on them."""
    hf = os.path.join(folder, "hf")
    run([f"{build}/bench_serve", "--config", config_path, "--save-weights", hf, "--bandwidth-mib", "64"])
    if name == "gpt2":  # data/gpt2 keeps OpenAI's file names; transformers reads the Hugging Face ones
        shutil.copy(os.path.join(tokenizer, "encoder.json"), os.path.join(hf, "vocab.json"))
        shutil.copy(os.path.join(tokenizer, "vocab.bpe"), os.path.join(hf, "merges.txt"))
    else:
        shutil.copy(os.path.join(tokenizer, "tokenizer.json"), os.path.join(hf, "tokenizer.json"))
        # The fixtures write some special tokens in AddedToken's dict form, which transformers 5 refuses in
        # tokenizer_config.json: the converter gets their plain strings.
        cfg = json.load(open(os.path.join(tokenizer, "tokenizer_config.json")))
        cfg = {k: v["content"] if isinstance(v, dict) and "content" in v else v for k, v in cfg.items()}
        json.dump(cfg, open(os.path.join(hf, "tokenizer_config.json"), "w"))
    ids_hf = lora_prompt_ids(build, hf, PROMPT)
    ours_hf = lora_logits(build, hf, ids_hf, folder)
    # How far each type's rounding of the weights may move the logits, relative to the largest one.
    tolerance = {"f32": 1e-5, "f16": 1e-2, "q8_0": 5e-2}
    for t in ("f32", "f16", "q8_0"):
        made = os.path.join(folder, f"{name}-converter-{t}.gguf")
        convert_with_llama_cpp(llama_src, hf, t, made, FIXTURE_PRE.get(name))
        ids = lora_prompt_ids(build, made, PROMPT)
        checks.report(ids == ids_hf, f"{name}: convert_hf_to_gguf {t} file: lora.cpp tokenizes the prompt from the file's "
                      f"own vocabulary as from the folder's tokenizer ({len(ids)} tokens{'' if ids == ids_hf else f'; {ids} vs {ids_hf}'})")
        ours = lora_logits(build, made, ids_hf, folder)
        scale = float(np.max(np.abs(ours_hf)))
        diff_hf = float(np.max(np.abs(ours - ours_hf)))
        # llama.cpp on the same numbers. f16 and q8_0 products run in llama.cpp on f16 / 8-bit activations,
        # which moves its logits by themselves; so, as in check 4, the reference is llama.cpp on lora.cpp's
        # decoding of the file written as f32 (the check of the decoders), its own rounding reported beside.
        ll_file, ltok = llama_last_logits(llama, made, PROMPT, folder)
        ll = ll_file if t == "f32" else llama_logits_of_lora_decoding(build, llama, made, folder)
        same_tokens = [int(i) for i in ltok] == ids_hf
        diff_llama = float(np.max(np.abs(ours - ll))) if same_tokens else float("inf")
        own = float(np.max(np.abs(ll_file - ll)))
        checks.report(diff_hf <= tolerance[t] * max(1.0, scale) and diff_llama <= 1e-3 * max(1.0, scale),
                      f"{name}: convert_hf_to_gguf {t} file loaded by lora.cpp: logits {diff_hf:.2e} from lora.cpp's on "
                      f"the Hugging Face folder ({diff_hf / scale:.1e} of the largest logit {scale:.2f}; the type's rounding, "
                      f"allowed {tolerance[t]:.0e}); {diff_llama:.2e} from llama.cpp's on "
                      f"{'the same file' if t == 'f32' else 'the same numbers in f32'} ({diff_llama / scale:.1e}, target 1e-3)"
                      f"{'' if t == 'f32' else f'; llama.cpp on the {t} file itself moves by its activation rounding: {own:.2e}'}"
                      f"{'' if same_tokens else ' (llama.cpp tokenized the prompt differently: ' + str(list(ltok)) + ')'}")
        check_finetune_runs(checks, build, made, text, f"{name}: finetune --mode lora on convert_hf_to_gguf's {t} file")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--llama", default=os.environ.get("LLAMA_CPP_BIN", "build/llama.cpp/bin"))
    ap.add_argument("--models", default="gpt2,llama,qwen2")
    ap.add_argument("--llama-src", help="llama.cpp's source, for convert_hf_to_gguf.py (default: LLAMA/../src, where "
                    "build_llama_cpp.sh puts it)")
    ap.add_argument("--checks", default="1,2,3,4,5", help="which of the numbered checks to run")
    args = ap.parse_args()
    build, llama = os.path.abspath(args.build), args.llama
    llama_src = args.llama_src or os.path.join(os.path.dirname(os.path.abspath(llama)), "src")
    wanted = {int(c) for c in args.checks.split(",")}
    checks = Checks()
    work = tempfile.mkdtemp(prefix="interop_gguf_")
    text = os.path.join(work, "text.txt")
    with open(TEXT) as f:
        open(text, "w").write(f.read()[:20000])
    print(f"llama.cpp: {llama} (llama-cpp-python 0.3.36's vendored llama.cpp); lora.cpp: {build}; work: {work}")

    for name in args.models.split(","):
        config, tokenizer = MODELS[name]
        folder = os.path.join(work, name)
        os.makedirs(folder)
        config_path = os.path.join(folder, "config.json")
        json.dump(config, open(config_path, "w"))
        files = {}
        for t in ("f32", "f16", "q8_0", "q4_0"):
            files[t] = os.path.join(folder, f"{name}-{t}.gguf")
            run([f"{build}/export_gguf", "--config", config_path, "--tokenizer", tokenizer, "--out", files[t], "--type", t,
                 "--name", name])
        print(f"\n== {name}: exported f32, f16, q8_0, q4_0 from a random {name} model", flush=True)

        if 1 in wanted:
            # 1. logits and greedy tokens, f32 and f16
            for t in ("f32", "f16"):
                ids = lora_prompt_ids(build, files[t], PROMPT)
                ll, ltok = llama_last_logits(llama, files[t], PROMPT, folder)
                checks.report(list(ltok) == list(ids), f"{name} {t}: llama.cpp tokenizes the prompt as lora.cpp does "
                              f"({len(ids)} tokens{'' if list(ltok) == list(ids) else f'; llama.cpp {list(ltok)} vs {ids}'})")
                ours = lora_logits(build, files[t], [int(i) for i in ltok], folder)
                # f16: llama.cpp multiplies f16 weights by f16-rounded activations, which moves its logits by
                # about 1e-3 of the largest by itself; the reference is llama.cpp on the same weights in f32
                # (lora.cpp's decoding of the file, written f32), and the file's own figure is printed beside.
                ref = ll if t == "f32" else llama_logits_of_lora_decoding(build, llama, files[t], folder)
                diff = float(np.max(np.abs(ours - ref)))
                scale = float(np.max(np.abs(ref)))
                direct = float(np.max(np.abs(ours - ll)))
                checks.report(diff <= 1e-3 * max(1.0, scale), f"{name} {t}: last-position logits, max |lora.cpp - llama.cpp| = "
                              f"{diff:.2e}, {diff / scale:.1e} of the largest logit {scale:.2f} (target: 1e-3 of it)"
                              f"{'' if t == 'f32' else f'; against llama.cpp on the f16 file itself (its f16 activations): {direct:.2e}'}")
                ours_text, _ = lora_greedy(build, files[t], PROMPT, 16)
                theirs = llama_greedy(llama, files[t], PROMPT, 16)
                checks.report(ours_text == theirs, f"{name} {t}: greedy 16 tokens, the same bytes printed: {theirs[:60]!r}"
                              f"{'' if ours_text == theirs else f' (lora.cpp {ours_text!r})'}")

        if 2 in wanted:
            # 2. q8_0 / q4_0 exports against llama-quantize of the f32 export
            for t, qname in (("q8_0", "Q8_0"), ("q4_0", "Q4_0")):
                theirs_file = os.path.join(folder, f"{name}-llama-quantize-{t}.gguf")
                run([f"{llama}/llama-quantize", files["f32"], theirs_file, qname])
                ppl_ours, ppl_theirs = perplexity(llama, files[t], text), perplexity(llama, theirs_file, text)
                if ppl_ours is None or ppl_theirs is None:
                    checks.report(False, f"{name} {t}: llama-perplexity gave no estimate (lora.cpp's export: {ppl_ours}, "
                                  f"llama-quantize's: {ppl_theirs})")
                    continue
                rel = abs(ppl_ours - ppl_theirs) / ppl_theirs
                checks.report(rel <= 0.01, f"{name} {t}: llama-perplexity of lora.cpp's export {ppl_ours:.4f} vs llama-quantize's "
                              f"{ppl_theirs:.4f}: {100 * rel:.3f}% apart (target 1%)")

        if 3 in wanted:
            # 3. a LoRA adapter trained on the GGUF base: GGUF adapter in llama.cpp vs PEFT adapter in lora.cpp
            save = os.path.join(folder, "run")
            run([f"{build}/finetune", "--weights", files["f32"], "--data", text, "--mode", "lora", "--steps", "30",
                 "--batch", "2", "--seq", "64", "--lr", "3e-2", "--rank", "4", "--alpha", "8", "--targets", "q,v",
                 "--save", save, "--no-preflight"])
            peft = os.path.join(save, "lora")
            adapter_gguf = os.path.join(folder, f"{name}-lora.gguf")
            run([f"{build}/export_gguf", "--weights", files["f32"], "--adapter", peft, "--adapter-only", "--out", adapter_gguf])
            ours_text, _ = lora_greedy(build, files["f32"], PROMPT, 16, adapter=peft)
            base_text, _ = lora_greedy(build, files["f32"], PROMPT, 16)
            theirs = llama_greedy(llama, files["f32"], PROMPT, 16, lora=adapter_gguf)
            checks.report(ours_text == theirs, f"{name}: adapter trained by finetune on the GGUF base (30 steps): llama.cpp "
                          f"--lora gives lora.cpp's greedy text (the adapter {'changes' if ours_text != base_text else 'does not change'} "
                          f"it): {theirs[:60]!r}{'' if ours_text == theirs else f' (lora.cpp {ours_text!r})'}")
            ll, ltok = llama_last_logits(llama, files["f32"], PROMPT, folder, lora=adapter_gguf)
            ours = lora_logits(build, files["f32"], [int(i) for i in ltok], folder, adapter=peft)
            diff = float(np.max(np.abs(ours - ll)))
            scale = float(np.max(np.abs(ll)))
            checks.report(diff <= 1e-3 * max(1.0, scale), f"{name}: with the adapter, last-position logits max |difference| = "
                          f"{diff:.2e}, {diff / scale:.1e} of the largest logit")

        if 4 in wanted:
            # 4. files made by llama.cpp, loaded by lora.cpp
            # llama.cpp multiplies quantized weights by activations it quantizes too (to 8 bits), lora.cpp by float
            # activations, so their logits on a quantized file differ by about what llama.cpp's own activation
            # rounding moves them. The reference: the same weights dequantized exactly, run by llama.cpp in f32.
            ref_f32, ref_tok = llama_last_logits(llama, files["f32"], PROMPT, folder)
            for qname in ("Q8_0", "Q4_0", "Q4_K_M"):
                made = os.path.join(folder, f"{name}-llama-{qname}.gguf")
                if not os.path.exists(made):
                    run([f"{llama}/llama-quantize", files["f32"], made, qname])
                ll, ltok = llama_last_logits(llama, made, PROMPT, folder)
                ours = lora_logits(build, made, [int(i) for i in ltok], folder)
                # lora.cpp's dequantization written back as an f32 GGUF and run by llama.cpp: the same numbers?
                ll_dq = llama_logits_of_lora_decoding(build, llama, made, folder)
                diff = float(np.max(np.abs(ours - ll)))
                diff_dq = float(np.max(np.abs(ours - ll_dq)))
                own = float(np.max(np.abs(ll - ll_dq)))
                scale = float(np.max(np.abs(ll)))
                checks.report(diff_dq <= 1e-3 * max(1.0, scale), f"{name}: llama-quantize {qname} file loaded by lora.cpp: logits "
                              f"{diff:.2e} from llama.cpp's on that file ({diff / scale:.1e} of the largest logit {scale:.2f}); "
                              f"llama.cpp's own activation rounding moves them {own:.2e}; lora.cpp's dequantized weights run by "
                              f"llama.cpp in f32: {diff_dq:.2e} ({diff_dq / scale:.1e}, target 1e-3)")
                check_finetune_runs(checks, build, made, text, f"{name}: finetune --mode lora on llama-quantize's {qname} file")

        if 5 in wanted:
            converter_checks(checks, build, llama, llama_src, name, config_path, tokenizer, folder, text)

    print(f"\n{len(checks.lines) - checks.failed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
