#!/usr/bin/env python3
"""Writes fixtures/bpe_vectors.jsonl: texts and their ids under the replication's BPE as Hugging Face tokenizers
encodes them, the reference test_replication.cpp checks lora.cpp's tokenizer.json reader against.

    pip install tokenizers==0.23.3
    python3 experiments/replication/make_bpe_vectors.py

Each line: {"text", "ids" (special tokens written in the text parsed, tokenizers' default), "ids_plain"
(special tokens kept as text: encode_special_tokens = True)}. The texts: E2E prompts and references as the
experiment encodes them ("MR ||", " reference"), lines of the corpus, and edge cases.
"""
import json
import os

from tokenizers import Tokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def main() -> None:
    tok = Tokenizer.from_file(os.path.join(ROOT, "data", "replication", "tokenizer.json"))
    texts = []
    with open(os.path.join(ROOT, "data", "e2e", "valid.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines[::300]:
        mr, ref = line.split("||")
        texts += [mr + " ||", " " + ref.rstrip(" ")]
    with open(os.path.join(ROOT, "data", "corpus", "us-state-of-the-union-1945-2006.txt"), encoding="utf-8") as f:
        texts += [l for l in f.read().splitlines() if l.strip()][100:106]
    texts += ["", " ", "  two  spaces\n\nand\tlines\r\n", "£ 20 - 25 , Café Brazil , family - friendly .",
              "naïve façade — 日本語 🙂", "1,000 3.5 2006", "it's they'll I'M", "x<|endoftext|>y", "<|endoftext|>"]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "bpe_vectors.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for t in texts:
            tok.encode_special_tokens = False
            ids = tok.encode(t).ids
            tok.encode_special_tokens = True
            plain = tok.encode(t).ids
            f.write(json.dumps({"text": t, "ids": ids, "ids_plain": plain}, ensure_ascii=False) + "\n")
    print(f"{len(texts)} vectors -> {out}")


if __name__ == "__main__":
    main()
