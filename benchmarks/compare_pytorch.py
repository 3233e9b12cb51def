#!/usr/bin/env python3
"""compare_pytorch: runs bench_train and benchmarks/pytorch_reference.py on the same machine, one after the
other, and prints one table of ratios (lora.cpp / PyTorch: step time and peak RSS) per configuration, against
PyTorch's default settings and against its best setting per configuration among those tried.

  python3 benchmarks/compare_pytorch.py                       # build/bench_train, PyTorch defaults + a sweep
  python3 benchmarks/compare_pytorch.py --bench build-perf/bench_train --steps 5
  python3 benchmarks/compare_pytorch.py --torch-json t.json --lora-json l.json   # tabulate saved results

Python is optional for lora.cpp: this script only drives the two benchmarks and formats the table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def table(lora, torch_results):
    ceiling = lora["ceiling_gflops"]
    by_cfg = {}
    for r in torch_results:
        by_cfg.setdefault(r["config"], []).append(r)
    lines = [
        f"sgemm ceiling measured by bench_train in the same run: {ceiling:.1f} GFLOP/s",
        "",
        "| config | lora.cpp s/step | GFLOP/s (% ceiling) | PyTorch default s/step | PyTorch best s/step (setting) "
        "| time ratio vs best | time ratio vs default | lora.cpp peak RSS | PyTorch best RSS (lowest RSS tried) "
        "| RSS ratio (vs best-time setting) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lora["results"]:
        cfg = r["config"]
        runs = by_cfg.get(cfg, [])
        if not runs:
            continue
        default = [t for t in runs if t["setting"] == "threads=default malloc=default adamw=foreach"]
        best = min(runs, key=lambda t: t["step_s"])
        lowest_rss = min(t["peak_rss_bytes"] for t in runs)
        d = default[0]["step_s"] if default else float("nan")
        gib = 2 ** 30
        lines.append(
            f"| {cfg} | {r['step_s']:.3f} | {r['gflops']:.1f} ({100 * r['gflops'] / ceiling:.0f}%) | {d:.3f} | "
            f"{best['step_s']:.3f} ({best['setting']}) | {r['step_s'] / best['step_s']:.2f} | {r['step_s'] / d:.2f} | "
            f"{r['peak_rss_bytes'] / gib:.2f} GiB | {best['peak_rss_bytes'] / gib:.2f} GiB ({lowest_rss / gib:.2f}) | "
            f"{r['peak_rss_bytes'] / best['peak_rss_bytes']:.2f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default=os.path.join(HERE, "..", "build", "bench_train"))
    p.add_argument("--configs", default="full:4x64,lora:4x64,full:4x256,lora:4x256")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-sweep", action="store_true", help="PyTorch defaults only (no sweep of settings)")
    p.add_argument("--lora-json", help="reuse a bench_train --json result instead of running it")
    p.add_argument("--torch-json", action="append", help="reuse pytorch_reference.py --json results (repeatable)")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="compare_pytorch_")
    lora_json = args.lora_json
    if not lora_json:
        lora_json = os.path.join(tmp, "lora.json")
        run([args.bench, "--configs", args.configs, "--warmup", str(args.warmup), "--steps", str(args.steps),
             "--json", lora_json])
    torch_jsons = args.torch_json or []
    if not torch_jsons:
        torch_jsons = [os.path.join(tmp, "torch.json")]
        cmd = [sys.executable, os.path.join(HERE, "pytorch_reference.py"), "--configs", args.configs, "--warmup",
               str(args.warmup), "--steps", str(args.steps), "--json", torch_jsons[0]]
        run(cmd if args.no_sweep else cmd + ["--sweep"])
    with open(lora_json) as f:
        lora = json.load(f)
    torch_results = []
    for path in torch_jsons:
        with open(path) as f:
            torch_results += json.load(f)["results"]
    print(table(lora, torch_results))


if __name__ == "__main__":
    main()
