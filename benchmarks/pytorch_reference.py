#!/usr/bin/env python3
"""pytorch_reference: the bench_train workload in plain PyTorch, for a side-by-side comparison.

GPT-2 small in Hugging Face's layout (Conv1D weights [in, out], fused c_attn, tied LM head), random init,
trained on random token ids with torch.optim.AdamW; LoRA (r=8, alpha=16) on the q and v slices of c_attn,
as PEFT does it for GPT-2. One step = forward + backward + optimizer.step() + zero_grad(); warm-up steps,
then the median of the timed steps. Each configuration runs in a fresh process (peak RSS belongs to a
process, and glibc's MALLOC_* settings are read at start-up).

  python3 benchmarks/pytorch_reference.py                          # all four configurations, defaults
  python3 benchmarks/pytorch_reference.py --threads 1 --malloc keep --optimizer fused
  python3 benchmarks/pytorch_reference.py --sweep --configs full:4x64,lora:4x64   # every setting tried
  python3 benchmarks/pytorch_reference.py --json out.json

--malloc keep sets MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_=huge: glibc then serves large blocks from
the heap and never returns freed memory to the OS, so the logits and their gradient are not re-faulted
every step.

Thread settings: this PyTorch build (pip, MKL + GNU OpenMP) sets MKL's thread count together with its intra-op
count in torch.set_num_threads, and does not export mkl_set_num_threads, so "one intra-op thread with two BLAS
threads" cannot be set from Python here; --threads 1 and the default (all cores) are what is tried.
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

MALLOC_KEEP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_TOP_PAD_": str(64 << 20)}


def run_one(cfg, args):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    device = torch.device(args.device)
    mode, shape = cfg.split(":")
    B, T = (int(v) for v in shape.split("x"))
    V, P, C, L, H, r, alpha = 50257, 1024, 768, 12, 12, 8, 16.0

    class Conv1D(nn.Module):  # HF's Conv1D: y = x W + b, W [in, out]
        def __init__(self, nin, nout):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(nin, nout) * 0.02)
            self.bias = nn.Parameter(torch.zeros(nout))

        def forward(self, x):
            return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], -1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.attn_proj = Conv1D(C, 3 * C), Conv1D(C, C)
            self.c_fc, self.mlp_proj = Conv1D(C, 4 * C), Conv1D(4 * C, C)
            self.lora = None

        def forward(self, x):
            h = self.ln_1(x)
            q, k, v = self.c_attn(h).split(C, dim=2)
            if self.lora is not None:  # LoRA on the q and v slices: s (h A^T) B^T
                aq, bq, av, bv = self.lora
                q = q + (h @ aq.t()) @ bq.t() * (alpha / r)
                v = v + (h @ av.t()) @ bv.t() * (alpha / r)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(P, C)
            nn.init.normal_(self.wte.weight, std=0.02)
            nn.init.normal_(self.wpe.weight, std=0.01)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)

        def forward(self, ids, targets):
            x = self.wte(ids) + self.wpe(torch.arange(T, device=ids.device))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.t()  # tied LM head
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = GPT2()
    if mode == "lora":
        model.requires_grad_(False)
        for block in model.h:
            a_q, a_v = (nn.Parameter(torch.randn(r, C) / math.sqrt(C)) for _ in range(2))
            b_q, b_v = (nn.Parameter(torch.zeros(C, r)) for _ in range(2))
            block.lora = nn.ParameterList([a_q, b_q, a_v, b_v])
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_kwargs = {"fused": True} if args.optimizer == "fused" else {"foreach": args.optimizer == "foreach"}
    opt = torch.optim.AdamW(params, lr=1e-3 if mode == "lora" else 1e-4, weight_decay=0.0, **opt_kwargs)

    def step():
        ids = torch.randint(0, V, (B, T), device=device)
        targets = torch.randint(0, V, (B, T), device=device)
        loss = model(ids, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # also waits for the GPU

    for _ in range(args.warmup):
        step()
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
        print(f"  {cfg} step {i + 1}/{args.steps}: {times[-1]:.3f} s (loss {loss:.3f})", file=sys.stderr)
    s = statistics.median(times)
    return {"config": cfg, "mode": mode, "batch": B, "seq": T, "step_s": s, "step_times_s": times,
            "tokens_per_s": B * T / s, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "trainable_params": sum(p.numel() for p in params), "torch": torch.__version__,
            "intra_op_threads": torch.get_num_threads(), "device": str(device),
            "peak_device_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else 0}


def setting_name(args):
    spin = f" spin={args.omp_spin}" if args.omp_spin >= 0 else ""
    return f"threads={args.threads or 'default'} malloc={args.malloc} adamw={args.optimizer}{spin}"


def run_children(args, configs):
    env = dict(os.environ)
    if args.malloc == "keep":
        env.update(MALLOC_KEEP)
    if args.omp_spin >= 0:
        env["GOMP_SPINCOUNT"] = str(args.omp_spin)
    results = []
    for cfg in configs:
        cmd = [sys.executable, __file__, "--run", cfg, "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--threads", str(args.threads), "--optimizer", args.optimizer, "--device", args.device]
        out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
        r = json.loads(out)
        r["setting"] = setting_name(args)
        r["malloc"], r["threads"], r["optimizer"], r["omp_spin"] = args.malloc, args.threads, args.optimizer, args.omp_spin
        device_mem = f"  peak device {r['peak_device_bytes'] / 2**30:5.2f} GiB" if r["peak_device_bytes"] else ""
        print(f"{setting_name(args):<58} {cfg:<10} {r['step_s']:7.3f} s  {r['tokens_per_s']:6.0f} tok/s  "
              f"peak RSS {r['peak_rss_bytes'] / 2**30:5.2f} GiB{device_mem}", flush=True)
        results.append(r)
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="full:4x64,lora:4x64,full:4x256,lora:4x256")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--malloc", choices=["default", "keep"], default="default")
    p.add_argument("--optimizer", choices=["foreach", "fused", "loop"], default="foreach",
                   help="AdamW implementation (foreach is PyTorch's default on CPU)")
    p.add_argument("--omp-spin", type=int, default=-1,
                   help="GOMP_SPINCOUNT for the runs (-1: libgomp's default); see bench_train.cpp")
    p.add_argument("--device", default="cpu", help="cpu or cuda (scripts/gpu-check.sh uses cuda)")
    p.add_argument("--sweep", action="store_true", help="try every thread / malloc / optimizer setting")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args)))
        return
    import torch
    configs = args.configs.split(",")
    print(f"PyTorch {torch.__version__}, {os.cpu_count()} CPUs, {args.warmup} warm-up + {args.steps} timed steps")
    results = []
    if args.sweep:
        settings = [(0, "default", "foreach", -1), (0, "keep", "foreach", -1), (1, "keep", "foreach", -1),
                    (0, "keep", "fused", -1), (1, "keep", "fused", -1), (0, "default", "foreach", 10000),
                    (0, "keep", "fused", 10000)]
        for threads, malloc, optimizer, spin in settings:
            args.threads, args.malloc, args.optimizer, args.omp_spin = threads, malloc, optimizer, spin
            results += run_children(args, configs)
    else:
        results = run_children(args, configs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
