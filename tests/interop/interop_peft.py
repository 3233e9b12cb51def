#!/usr/bin/env python3
"""Interoperability of lora.cpp with Hugging Face transformers and PEFT, checked on logits.

Run by hand (not in CI): see tests/interop/README.md.

    python3 tests/interop/interop_peft.py [BUILD_DIR]      # default BUILD_DIR: build

For each model family (a small random GPT-2, and a small random Llama with grouped-query attention and an
untied head) it makes the base model with transformers in a temporary directory, trains and saves with
lora.cpp (finetune: a fully fine-tuned model, a LoRA adapter; merge_lora: a merged model), makes LoRA
adapters with PEFT, and checks that each file written by one side loads in the other with the same logits
as lora.cpp's own (forward_logits) on one token batch:

    max |a - b| <= 1e-4 * max |b|       (b: lora.cpp's logits, a: transformers'/PEFT's, both float32)

For every adapter it also prints how far the adapter moves the logits from the base model's, so that a
PASS cannot come from an adapter that does nothing. One line per check, PASS/FAIL/SKIP; exits 1 on any
FAIL.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

REL_TOL = 1e-4  # |a - b| <= REL_TOL * max|b|
SEED = 1234
CONFIG = dict(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=1000)
LLAMA_CONFIG = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                    intermediate_size=128, max_position_embeddings=64, vocab_size=1000, tie_word_embeddings=False,
                    rms_norm_eps=1e-5)
VOCAB = 1000
BATCH, SEQ = 3, 48  # the token batch every check runs on

REPO = Path(__file__).resolve().parents[2]


class Checker:
    def __init__(self):
        self.failures = 0

    def line(self, status, name, detail):
        text = f"{status:<4}  {name:<64} {detail}"
        print(text, flush=True)
        if status == "FAIL":
            self.failures += 1

    def compare(self, name, ours, theirs, base=None):
        """ours: lora.cpp's logits (the reference b); theirs: transformers'/PEFT's (a)."""
        ours = np.asarray(ours, dtype=np.float64)
        theirs = np.asarray(theirs, dtype=np.float64)
        if ours.shape != theirs.shape:
            self.line("FAIL", name, f"shapes differ: lora.cpp {ours.shape}, other {theirs.shape}")
            return
        scale = float(np.abs(ours).max())
        diff = float(np.abs(theirs - ours).max())
        tol = REL_TOL * scale
        detail = f"max|diff| {diff:.3e}  (tol {tol:.3e})"
        if base is not None:
            effect = float(np.abs(np.asarray(base, dtype=np.float64) - ours).max())
            detail += f"  (vs base {effect:.3e})"
            if effect <= 100 * tol:
                self.line("FAIL", name, detail + "  <- barely moved from the base model: the check proves nothing")
                return
        self.line("PASS" if diff <= tol and np.isfinite(diff) else "FAIL", name, detail)

    def error(self, name, exc):
        message = str(exc) if isinstance(exc, (str, CommandError)) else f"{type(exc).__name__}: {exc}"
        self.line("FAIL", name, message)


class CommandError(Exception):
    def __init__(self, returncode, message, last_line):
        super().__init__(message)
        self.returncode = returncode
        self.last_line = last_line  # the program's last line of output (its "error: ..." line)


def run(cmd):
    """Runs a lora.cpp program; raises CommandError with its output when it fails."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:] or [""]
        raise CommandError(proc.returncode, f"{Path(str(cmd[0])).name} exited {proc.returncode}:\n      " +
                           "\n      ".join(tail), tail[-1].strip())
    return proc.stdout


def write_llmc_bin(path, tokens):
    """llm.c's token file: 256 int32 (magic 20240520, version 1, count, zeros), then uint16 tokens."""
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


class Family:
    """What differs between model families: how the base model is made and what PEFT targets are called."""

    def __init__(self, name, cls, make, cpp_targets, peft_targets, fan_in_fan_out, option_targets, pattern_key):
        self.name, self.cls, self.make = name, cls, make
        self.cpp_targets, self.peft_targets = cpp_targets, peft_targets
        self.fan_in_fan_out, self.option_targets, self.pattern_key = fan_in_fan_out, option_targets, pattern_key


def make_llama_base_model(path):
    """A small random Llama (GQA 4/2, untied head), with noise on every RMSNorm weight."""
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA_CONFIG, bos_token_id=0, eos_token_id=1))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.eval()


def make_base_model(path):
    """A small random GPT-2, with noise on every bias and LayerNorm so that loading them wrong shows.

    Its config.json has dropout 0 (resid_pdrop, embd_pdrop, attn_pdrop), unlike transformers' default and
    openai-community/gpt2 (0.1): the format checks then do not depend on how each side handles dropout at
    inference. Check (0b) covers that: the same weights with the default config (dropout 0.1).
    """
    torch.manual_seed(SEED)
    config = GPT2Config(**CONFIG, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=CONFIG["vocab_size"] - 1, eos_token_id=CONFIG["vocab_size"] - 1)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.eval()


def save_with_default_dropout(model, path):
    """The same weights with transformers' default dropout (0.1) in config.json, as openai-community/gpt2."""
    defaults = GPT2Config()
    model.config.resid_pdrop, model.config.embd_pdrop, model.config.attn_pdrop = (
        defaults.resid_pdrop, defaults.embd_pdrop, defaults.attn_pdrop)
    model.save_pretrained(path, safe_serialization=True)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0


def hf_logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float().numpy()


def cpp_logits(build, weights, ids_file, out_file, adapter=None, merge=False):
    cmd = [build / "forward_logits", "--weights", weights, "--ids", ids_file, "--out", out_file]
    if adapter is not None:
        cmd += ["--adapter", adapter]
    if merge:
        cmd += ["--merge"]
    run(cmd)
    return load_file(str(out_file))["logits"].numpy()


def make_peft_adapter(family, base_dir, path, target_modules, seed, **options):
    """A PEFT LoRA adapter with random (non-zero) lora_B, saved to `path`."""
    torch.manual_seed(seed)
    base = family.cls.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, fan_in_fan_out=family.fan_in_fan_out,
                        lora_dropout=0.0, **options)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return model.eval()


def lora_cpp_version():
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def check_family(check, build, tmp, family, have_merge):
    """Every check, for one model family, in tmp/<family name>/."""
    tmp = tmp / family.name
    tmp.mkdir()
    tag = f"[{family.name}]"

    # 1. The base model, a token batch, and training data for lora.cpp.
    base_dir = tmp / "base"
    base_model = family.make(base_dir)
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    ids_file = tmp / "ids.safetensors"
    save_file({"input_ids": ids}, str(ids_file))
    data_file = tmp / "train.bin"
    # Token stream with some structure (a noisy repeated pattern) so that training moves the weights.
    pattern = torch.randint(0, VOCAB, (97,), generator=gen)
    stream = pattern.repeat(64)
    noise = torch.rand(stream.shape, generator=gen) < 0.1
    stream[noise] = torch.randint(0, VOCAB, (int(noise.sum()),), generator=gen)
    write_llmc_bin(data_file, stream.tolist())
    logits_file = tmp / "logits.safetensors"

    # 0. Prerequisite: both sides agree on the base model transformers wrote.
    base_ref = None
    name = f"{tag} (0) base model written by transformers -> lora.cpp"
    try:
        base_ref = cpp_logits(build, base_dir, ids_file, logits_file)
        check.compare(name, base_ref, hf_logits(base_model, ids))
    except Exception as e:  # any failure is this check's FAIL, not the script's crash
        check.error(name, e)
    if family.name == "gpt2":
        name = f"{tag} (0b) the same with dropout 0.1 in config.json (HF default)"
        try:
            save_with_default_dropout(base_model, tmp / "base_dropout")
            check.compare(name, cpp_logits(build, tmp / "base_dropout", ids_file, logits_file), hf_logits(base_model, ids))
        except Exception as e:
            check.error(name, e)

    train = [build / "finetune", "--weights", base_dir, "--data", data_file, "--warmup", "1", "--batch", "2",
             "--seq", "16", "--eval-batches", "1", "--seed", "7"]

    # 2a. A fully fine-tuned model saved by lora.cpp loads in transformers.
    name = f"{tag} (a) full fine-tune saved by lora.cpp -> transformers"
    try:
        run(train + ["--mode", "full", "--steps", "2", "--save", tmp / "D1"])
        full_dir = tmp / "D1" / "full"
        ours = cpp_logits(build, full_dir, ids_file, logits_file)
        theirs = hf_logits(family.cls.from_pretrained(full_dir), ids)
        # Training changed the weights (else this is check (0) again).
        check.compare(name, ours, theirs, base=base_ref)
    except Exception as e:
        check.error(name, e)

    # 2b. A LoRA adapter saved by lora.cpp loads in PEFT.
    lora_dir = tmp / "D2" / "lora"
    name = f"{tag} (b) LoRA {family.cpp_targets} adapter saved by lora.cpp -> PEFT"
    cpp_adapter = None
    try:
        run(train + ["--mode", "lora", "--targets", family.cpp_targets, "--rank", "4", "--lr", "0.05", "--steps", "5",
                     "--save", tmp / "D2"])
        cpp_adapter = cpp_logits(build, base_dir, ids_file, logits_file, adapter=lora_dir)
        peft_model = PeftModel.from_pretrained(family.cls.from_pretrained(base_dir), lora_dir)
        check.compare(name, cpp_adapter, hf_logits(peft_model, ids), base=base_ref)
        name = f"{tag} (b) ... the same, lora.cpp with --merge"
        check.compare(name, cpp_logits(build, base_dir, ids_file, logits_file, adapter=lora_dir, merge=True),
                      hf_logits(peft_model, ids), base=base_ref)
    except Exception as e:
        check.error(name, e)

    # 2c. The model merge_lora writes loads in transformers as a plain model.
    name = f"{tag} (c) model merged by lora.cpp (merge_lora) -> transformers"
    if not have_merge:
        check.line("SKIP", name, f"no merge_lora in {build.name}/")
    elif cpp_adapter is None:
        check.error(name, "no adapter from (b) to merge")
    else:
        try:
            merged_dir = tmp / "D3"
            run([build / "merge_lora", "--weights", base_dir, "--adapter", lora_dir, "--out", merged_dir])
            theirs = hf_logits(family.cls.from_pretrained(merged_dir), ids)
            check.compare(name, cpp_logits(build, merged_dir, ids_file, logits_file), theirs, base=base_ref)
            name = f"{tag} (c) ... and equals lora.cpp's base + adapter (unmerged)"
            check.compare(name, cpp_adapter, theirs, base=base_ref)
        except Exception as e:
            check.error(name, e)

    # 2d. Adapters made by PEFT load in lora.cpp.
    for i, targets in enumerate(family.peft_targets):
        label = targets if isinstance(targets, str) else ",".join(targets)
        peft_dir = tmp / f"peft_{i}"
        name = f"{tag} (d) PEFT adapter [{label}] -> lora.cpp"
        try:
            peft_model = make_peft_adapter(family, base_dir, peft_dir, targets, seed=SEED + 10 + i)
            theirs = hf_logits(peft_model, ids)
            check.compare(name, cpp_logits(build, base_dir, ids_file, logits_file, adapter=peft_dir), theirs,
                          base=base_ref)
            name = f"{tag} (d) ... the same, lora.cpp with --merge"
            check.compare(name, cpp_logits(build, base_dir, ids_file, logits_file, adapter=peft_dir, merge=True),
                          theirs, base=base_ref)
        except Exception as e:
            check.error(name, e)

    # 2e. PEFT options beyond r and lora_alpha: lora.cpp must either give PEFT's logits or refuse the
    # adapter with an error; loading it and computing something else is a failure.
    key = family.pattern_key
    for i, (label, options) in enumerate((
            ("use_rslora=True", dict(use_rslora=True)),
            ("layers_to_transform=[1]", dict(layers_to_transform=[1])),
            (f"alpha_pattern={{'{key}': 32}}", dict(alpha_pattern={key: 32})),
            (f"rank_pattern={{'{key}': 2}}", dict(rank_pattern={key: 2})))):
        peft_dir = tmp / f"peft_option_{i}"
        name = f"{tag} (e) PEFT [{','.join(family.option_targets)}] {label} -> lora.cpp"
        try:
            peft_model = make_peft_adapter(family, base_dir, peft_dir, family.option_targets, seed=SEED + 20 + i,
                                           **options)
            theirs = hf_logits(peft_model, ids)
            try:
                ours = cpp_logits(build, base_dir, ids_file, logits_file, adapter=peft_dir)
            except CommandError as e:
                if e.returncode != 1 or not e.last_line.startswith("error:"):
                    raise  # a crash is not a refusal
                check.line("PASS", name, "refused: " + e.last_line.replace(str(peft_dir), "DIR"))
                continue
            check.compare(name, ours, theirs, base=base_ref)
        except Exception as e:
            check.error(name, e)


FAMILIES = [
    Family("gpt2", GPT2LMHeadModel, make_base_model, "q,v", [["c_attn"], ["c_attn", "c_proj", "c_fc"]], True,
           ["c_attn", "c_fc"], "c_fc"),
    Family("llama", LlamaForCausalLM, make_llama_base_model, "q,v",
           [["q_proj", "v_proj"], "all-linear", ["k_proj", "o_proj", "gate_proj", "down_proj"]], False,
           ["q_proj", "up_proj"], "up_proj"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", nargs="?", default="build", help="lora.cpp build directory (default: build)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    args = parser.parse_args()

    build = Path(args.build)
    if not build.is_dir() and (REPO / args.build).is_dir():
        build = REPO / args.build
    build = build.resolve()
    for program in ("forward_logits", "finetune"):
        if not (build / program).is_file():
            sys.exit(f"error: {build / program} not found: build lora.cpp first (see tests/interop/README.md)")
    have_merge = (build / "merge_lora").is_file()

    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, safetensors {safetensors.__version__}, numpy {np.__version__}")
    print(f"lora.cpp {lora_cpp_version()}, programs from {build.name}/")
    print(f"models: random GPT-2 {json.dumps(CONFIG)}; random Llama {json.dumps(LLAMA_CONFIG)}; seed {SEED}; "
          f"token batch [{BATCH}, {SEQ}]")
    print(f"tolerance: max|a - b| <= {REL_TOL:g} * max|b|, b = lora.cpp's logits (forward_logits), float32 on CPU")
    print()

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    check = Checker()
    tmp_ctx = None if args.keep else tempfile.TemporaryDirectory(prefix="lora_interop_")
    tmp = Path(tempfile.mkdtemp(prefix="lora_interop_") if args.keep else tmp_ctx.name)
    if args.keep:
        print(f"(keeping {tmp})")
    for family in FAMILIES:
        check_family(check, build, tmp, family, have_merge)

    print()
    if check.failures:
        print(f"{check.failures} check(s) FAILED")
    else:
        print("all checks passed")
    if tmp_ctx is not None:
        tmp_ctx.cleanup()
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
