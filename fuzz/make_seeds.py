#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into fuzz/corpus/<target>/: small valid inputs from which
libFuzzer mutates. Run from the repository root (pip install safetensors numpy gguf); the seeds are committed."""

import json
import os
import struct

import numpy as np
from safetensors.numpy import save

ROOT = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(ROOT, "..", "tests", "fixtures")


def out(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors_bytes(tensors, metadata=None):
    return save(tensors, metadata=metadata)


rng = np.random.default_rng(0)

# safetensors: a few dtypes and shapes, with and without metadata.
out("fuzz_safetensors", "f32_i64", safetensors_bytes({"w": rng.standard_normal((3, 4)).astype(np.float32),
                                                      "ids": np.arange(5, dtype=np.int64)}, {"format": "pt"}))
out("fuzz_safetensors", "f16_scalar", safetensors_bytes({"h": np.ones((2, 2), dtype=np.float16),
                                                         "s": np.array(1.5, dtype=np.float64)}))
out("fuzz_safetensors", "empty", safetensors_bytes({"e": np.zeros((0, 3), dtype=np.float32)}))

# config.json: every architecture and both transformers layouts.
for name, path in [("gpt2", "gpt2_tiny/config.json"), ("llama_v5", "llama_gqa/config.json"),
                   ("llama_v4", "llama_gqa/config_v4.json"), ("qwen2", "qwen2_tiny/config.json"),
                   ("llama_tied", "llama_tied/config.json"), ("gemma", "gemma_tiny/config.json")]:
    with open(os.path.join(FIXTURES, path)) as f:
        out("fuzz_config", name, f.read())

# adapters for the tiny GPT-2 (n_embd 48, 2 layers): PEFT's c_attn layout, and lora.cpp's q,v slices.
peft_config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "fan_in_fan_out": True,
               "lora_dropout": 0.0, "bias": "none", "rank_pattern": {"h.1.attn.c_attn": 2}, "alpha_pattern": {}}
tensors = {}
for layer in range(2):
    r = 2 if layer == 1 else 4
    tensors[f"base_model.model.transformer.h.{layer}.attn.c_attn.lora_A.weight"] = rng.standard_normal((r, 48)).astype(np.float32)
    tensors[f"base_model.model.transformer.h.{layer}.attn.c_attn.lora_B.weight"] = rng.standard_normal((144, r)).astype(np.float32)
out("fuzz_adapter", "peft_c_attn", json.dumps(peft_config) + "\n--SAFETENSORS--\n" + "")
with open(os.path.join(ROOT, "corpus", "fuzz_adapter", "peft_c_attn"), "ab") as f:
    f.write(safetensors_bytes(tensors, {"format": "pt"}))
slice_config = {"peft_type": "LORA", "r": 8, "lora_alpha": 32, "target_modules": ["c_attn"], "fan_in_fan_out": True}
B = np.zeros((144, 8), dtype=np.float32)
B[0:48, 0:4] = 0.1
B[96:144, 4:8] = 0.2
slice_tensors = {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": rng.standard_normal((8, 48)).astype(np.float32),
                 "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": B}
data = (json.dumps(slice_config) + "\n--SAFETENSORS--\n").encode() + safetensors_bytes(
    slice_tensors, {"format": "pt", "lora_cpp.slices.transformer.h.0.attn.c_attn": "0:48,96:48"})
out("fuzz_adapter", "qv_slices", data)

# tokenizer text: the test vectors' strings.
with open(os.path.join(FIXTURES, "tokenizer_vectors.jsonl"), encoding="utf-8") as f:
    for i, line in enumerate(f):
        if i % 4 == 0:
            out("fuzz_tokenizer", f"vector_{i}", json.loads(line)["text"])


# tokenizer files: a byte-level vocabulary (every byte, as GPT-2 maps bytes to characters) and a few merges.
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


chars = bytes_to_unicode()
encoder = {chars[b]: b for b in range(256)}
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("e", "ll")]
for a, b in merges:
    encoder.setdefault(a + b, len(encoder))
encoder["<|endoftext|>"] = len(encoder)
vocab = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
out("fuzz_tokenizer_files", "bytes_and_merges", json.dumps(encoder) + "\n--VOCAB--\n" + vocab)

# tokenizer.json files: every fixture (BPE byte-level, Metaspace, ByteFallback, RoBERTa post-processing),
# with its tokenizer_config.json when there is one, and once with a text of special tokens to encode.
TOKENIZERS = os.path.join(FIXTURES, "tokenizers")
for name in sorted(d for d in os.listdir(TOKENIZERS) if os.path.isdir(os.path.join(TOKENIZERS, d))):
    with open(os.path.join(TOKENIZERS, name, "tokenizer.json"), encoding="utf-8") as f:
        seed = f.read()
    config_path = os.path.join(TOKENIZERS, name, "tokenizer_config.json")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            seed += "\n--CONFIG--\n" + f.read()
            out("fuzz_tokenizer_json", name + "_text", seed + "\n--TEXT--\n<s>[INST] hi </s> <|im_start|>ok\u00e9")
    out("fuzz_tokenizer_json", name, seed)

# llm.c token files, versions 1 (uint16) and 2 (uint32).
for version, dtype in [(1, "<u2"), (2, "<u4")]:
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, version, 6
    out("fuzz_token_file", f"v{version}", header.tobytes() + np.array([1, 2, 3, 50256, 0, 7], dtype=dtype).tobytes())

# finetune command lines (arguments separated by NUL).
for i, args in enumerate([["--mode", "lora", "--rank", "4", "--steps", "10", "--batch", "2", "--seq", "32"],
                          ["--mode", "compare", "--targets", "q,v,attn.c_proj", "--alpha", "16", "--lr", "1e-3"],
                          ["--mode", "full", "--save", "out", "--save-every", "5", "--resume", "out", "--warmup", "1"],
                          ["--batch=4", "--seq=64", "--device", "cuda:0", "--skip-nonfinite", "--grad-clip", "0.5"]]):
    out("fuzz_finetune_cli", f"args_{i}", "\0".join(args))
# Data files (fuzz_jsonl): each JSON format as JSONL and as a .json array, with CRLF, blank lines, a BOM,
# escapes and surrogate pairs, no final newline, a record of the wrong shape, and an llm.c token file.
jsonl_records = {
    "text": [{"text": "Hello world"}, {"text": "caf\u00e9 \U0001F600 <|endoftext|>", "id": 2}],
    "prompt_completion": [{"prompt": "Translate: cheese", "completion": " fromage"}],
    "alpaca": [{"instruction": "Add", "input": "1 2", "output": "3"}, {"instruction": "Hi", "input": "", "output": "Hello"}],
    "messages": [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello"}]}],
    "sharegpt": [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}],
}
for name, records in jsonl_records.items():
    out("fuzz_jsonl", name + ".jsonl", "".join(json.dumps(r) + "\n" for r in records))
    out("fuzz_jsonl", name + ".json", json.dumps(records, indent=1))
out("fuzz_jsonl", "crlf_bom", "\ufeff" + '{"text": "a\\u00e9\\ud83d\\ude00"}\r\n\r\n  \n{"text": "b"}')
out("fuzz_jsonl", "bad_shapes", '{"text": "a"}\n[1]\n{"messages": [{"role": "tool", "content": 1}]}\n{"text"')
header = np.zeros(256, dtype="<i4")
header[0], header[1], header[2] = 20240520, 1, 3
out("fuzz_jsonl", "tokens_v1", header.tobytes() + np.array([1, 2, 3], dtype="<u2").tobytes())
# the server's request bodies (completions, chat, adapters) and a generation_config.json.
for name, value in {
        "completion": {"model": "base", "prompt": "Hello", "max_tokens": 5, "temperature": 0, "stop": ["\n"], "stream": True},
        "completion_ids": {"model": "sql", "prompt": [1, 2, 3], "seed": 7, "n": 1, "top_p": 0.9, "top_k": 40},
        "chat": {"model": "base", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                 "max_completion_tokens": 16, "stream": True, "logprobs": False, "response_format": {"type": "text"}},
        "chat_parts": {"model": "chat", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                   {"type": "text", "text": "b"}]}],
                       "max_tokens": 3, "user": "u"},
        "adapter": {"name": "poem", "path": "out/poem/lora"},
        "generation_config": {"bos_token_id": 1, "eos_token_id": [2, 32000], "do_sample": True}}.items():
    out("fuzz_api_request", name, json.dumps(value))
print("seeds written to", os.path.join(ROOT, "corpus"))


def spm_vocab_gguf():
    """A tiny SentencePiece-style ("llama") vocabulary as llama.cpp's converter writes it (pip install gguf):
    control/unknown/byte/normal token types, scores, add_space_prefix; no tensors."""
    import tempfile
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in (0x0A, 0x21, 0xC3, 0xBC, 0xF0, 0x9F)]
    normal = ["\u2581", "H", "e", "l", "o", "w", "r", "d", "1", "2", "3", "n", "\u00ef", "ll", "\u2581H", "ello",
              "\u2581w", "or", "ld", "\u2581wor", "ell"]
    types = [2, 3, 3] + [6] * 6 + [1] * len(normal)
    scores = [0.0] * 9 + [-float(i) for i in range(len(normal))]
    tokens += normal
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "spm.gguf")
        w = gguf.GGUFWriter(path, "llama")
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(True)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(path, "rb") as f:
            out("fuzz_gguf", "spm_vocab.gguf", f.read())


spm_vocab_gguf()

# compact checkpoints (fuzz_compact_checkpoint): a tiny GPT-2 layer's c_attn weight [192, 64] stored as q8_0
# blocks, as nf4 double-quantized and as bf16, each declared in the file's "lora.compact_weights" metadata.
def compact_seed(fmt, tensors, double_quant=False):
    meta = {"transformer.h.0.attn.c_attn.weight": {"format": fmt, "shape": [192, 64], "double_quant": double_quant}}
    return safetensors_bytes(tensors, {"format": "pt", "lora.compact_weights": json.dumps(meta)})


name = "transformer.h.0.attn.c_attn.weight"
q8 = np.zeros((192, 2 * 34), dtype=np.uint8)
q8[:, 1::34] = 0x3C  # every block's fp16 scale = 1.0
out("fuzz_compact_checkpoint", "q8_0", compact_seed("q8_0", {name: q8}))
blocks = 192 * 64 // 64
out("fuzz_compact_checkpoint", "nf4_double", compact_seed("nf4", {
    name: rng.integers(0, 256, 192 * 32, dtype=np.uint8),
    name + ".absmax_codes": rng.integers(-127, 128, blocks, dtype=np.int8),
    name + ".absmax_scale": np.full(1, 0.01, dtype=np.float32),
    name + ".absmax_mean": np.full(1, 0.5, dtype=np.float32)}, double_quant=True))
# numpy has no bfloat16: the values (1.0) are written as U16 and the header's dtype renamed BF16.
bf16 = compact_seed("bf16", {name: np.full((192, 64), 0x3F80, dtype=np.uint16)})
header = json.loads(bf16[8:8 + struct.unpack("<Q", bf16[:8])[0]])
header[name]["dtype"] = "BF16"
text = json.dumps(header, separators=(",", ":"))
text += " " * ((8 - len(text) % 8) % 8)
out("fuzz_compact_checkpoint", "bf16", struct.pack("<Q", len(text)) + text.encode() + bf16[-192 * 64 * 2:])
