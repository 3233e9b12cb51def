#!/usr/bin/env python3
"""Trains the replication's byte-level BPE once, on its pre-training corpus, and writes tokenizer.json.

    pip install tokenizers==0.23.3
    python3 experiments/replication/train_tokenizer.py --vocab-size 4096 \
        --out data/replication/tokenizer.json data/corpus/*.txt   (less the held-out book: see below)

A vocabulary sized for a small model: with GPT-2's 50,257 tokens the embedding table is most of a model a few
hundred wide, and the 50,257-way output head most of its compute (docs/replication.md measures both). The
BPE is GPT-2's kind (byte-level, GPT-2's pre-tokenizer regex, so every byte sequence encodes and nothing is
unknown), with <|endoftext|> as id 0 and its only special token. Training is deterministic for a given file
list and tokenizers version, so the same command re-makes the same file; the file is committed and the
C++ side reads it with load_tokenizer (tests check it encodes E2E lines as tokenizers does).

The files are given in a fixed order (sorted by name). The held-out book of the style task
(gutenberg-austen-persuasion.txt) and every E2E file are refused: the tokenizer sees nothing that the
pre-training does not.
"""
import argparse
import hashlib
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HELD_OUT = ("persuasion", "e2e")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="pre-training text files")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    files = sorted(a.files, key=os.path.basename)
    for f in files:
        if any(h in f for h in HELD_OUT):
            sys.exit(f"{f}: held out of pre-training, so it stays out of the tokenizer too")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=a.vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(files, trainer)
    tok.save(a.out)
    with open(a.out, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    total = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            n = len(tok.encode(fh.read()).ids)
        total += n
        print(f"{os.path.basename(f)}\t{n}")
    print(f"{len(files)} files, {total} tokens, vocabulary {tok.get_vocab_size()}; {a.out} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
