#!/usr/bin/env python3
"""pytorch_reference_llama: bench_train's SmolLM2-135M workload in PyTorch (transformers + PEFT), side by side.

SmolLM2-135M's shape (Llama: 30 layers, hidden 576, 9 heads over 3 key/value heads, SwiGLU 1536, tied
embeddings, vocabulary 49152), random init, as `bench_train --config smollm2-135m` builds it. Trained on
random token ids with torch.optim.AdamW (foreach); LoRA r=8, alpha=16 on q_proj and v_proj through PEFT.
Attention is transformers' "sdpa" (torch's fused scaled_dot_product_attention). One step = forward + loss +
backward + optimizer.step() + zero_grad(); warm-up steps, then the median of the timed steps, each
configuration in a fresh process.

  python3 benchmarks/pytorch_reference_llama.py                       # full and LoRA at 4x256
  python3 benchmarks/pytorch_reference_llama.py --configs lora:4x256 --threads 1 --malloc keep
  python3 benchmarks/pytorch_reference_llama.py --json out.json
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MALLOC_KEEP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_TOP_PAD_": str(64 << 20)}


def run_one(cfg, args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    mode, shape = cfg.split(":")
    B, T = (int(v) for v in shape.split("x"))
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                         initializer_range=0.041666666666666664, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3 if mode == "lora" else 1e-4, weight_decay=0.0, foreach=True)
    V = config.vocab_size

    def step():
        ids = torch.randint(0, V, (B, T))
        targets = torch.randint(0, V, (B, T))
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(args.warmup):
        step()
    def cpu_seconds():  # user + system time of every thread of this process: less sensitive to other load
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    times, cpu_times = [], []
    for i in range(args.steps):
        t0, c0 = time.perf_counter(), cpu_seconds()
        loss = step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(cpu_seconds() - c0)
        print(f"  {cfg} step {i + 1}/{args.steps}: {times[-1]:.3f} s ({cpu_times[-1]:.3f} CPU s) (loss {loss:.3f})",
              file=sys.stderr)
    s = statistics.median(times)
    return {"config": cfg, "mode": mode, "batch": B, "seq": T, "step_s": s, "step_times_s": times,
            "cpu_s": statistics.median(cpu_times), "step_cpu_times_s": cpu_times,
            "tokens_per_s": B * T / s, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "trainable_params": sum(p.numel() for p in params), "torch": torch.__version__,
            "intra_op_threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="full:4x256,lora:4x256")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--malloc", choices=["default", "keep"], default="default")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args)))
        return
    env = dict(os.environ)
    if args.malloc == "keep":
        env.update(MALLOC_KEEP)
    results = []
    for cfg in args.configs.split(","):
        cmd = [sys.executable, __file__, "--run", cfg, "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--threads", str(args.threads)]
        r = json.loads(subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout)
        r["threads"], r["malloc"] = args.threads, args.malloc
        print(f"threads={args.threads or 'default'} malloc={args.malloc:<8} {cfg:<10} {r['step_s']:7.3f} s "
              f"({r['cpu_s']:.3f} CPU s)  "
              f"{r['tokens_per_s']:6.0f} tok/s  peak RSS {r['peak_rss_bytes'] / 2**30:5.2f} GiB", flush=True)
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
