// finetune's command line (CLI11) and the checks between its flags.
#include "tools/finetune_options.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <sstream>

#include "core/device.h"
#include "core/error.h"
#include "core/quantized.h"
#include "nn/lora/apply_lora.h"

namespace lora::tools {

void FinetuneOptions::validate() const {
  Device::parse(device);
  LORA_CHECK(warmup < steps || steps == 1, "--warmup {} must be below --steps {}", warmup, steps);
  LORA_CHECK(batch <= (int64_t{1} << 31) / seq, "--batch {} x --seq {} tokens per step is more than 2^31", batch, seq);
  LORA_CHECK(std::isfinite(alpha) && std::isfinite(lr) && std::isfinite(grad_clip) && std::isfinite(weight_decay),
             "--alpha, --lr, --grad-clip and --weight-decay must be finite");
  LORA_CHECK(mode != "compare" || (save_every == 0 && resume.empty()),
             "--save-every and --resume apply to one run: use them with --mode full or --mode lora");
  LORA_CHECK(save_every == 0 || !save.empty(), "--save-every {} needs --save DIR (where checkpoints go)", save_every);
  LORA_CHECK(!save_gguf_adapter || (!save.empty() && mode == "lora"), "--save-gguf-adapter needs --mode lora and --save DIR");
  if (mode != "full") nn::LoRAConfig::parse_targets(targets);
  const std::vector<Variant> runs = parse_variants(variants);
  LORA_CHECK(mode == "compare" || variants == "full,lora", "--variants applies to --mode compare (given --mode {})", mode);
  LORA_CHECK(mode != "compare" || (base_dtype == "f32" && !checkpoint_activations),
             "--mode compare: give the base format and checkpointing per variant (--variants lora+nf4+ckpt), not "
             "with --base-dtype or --checkpoint-activations");
  LORA_CHECK(parse_quant_format(base_dtype) == QuantFormat::F32 || mode == "lora",
             "--base-dtype {} quantizes the frozen base, which only LoRA has: use it with --mode lora (--mode {} trains "
             "every weight, and a quantized weight cannot be updated)", base_dtype, mode);
}

std::vector<Variant> parse_variants(const std::string& list) {
  std::vector<Variant> out;
  std::stringstream items(list);
  for (std::string item; std::getline(items, item, ',');) {
    Variant v;
    v.name = item;
    std::stringstream parts(item);
    std::getline(parts, v.mode, '+');
    LORA_CHECK(v.mode == "full" || v.mode == "lora", "--variants: '{}' must start with full or lora (e.g. lora+nf4+ckpt)",
               item);
    for (std::string part; std::getline(parts, part, '+');) {
      if (part == "ckpt") {
        v.checkpoint = true;
        continue;
      }
      LORA_CHECK(v.mode == "lora", "--variants: '{}': a quantized base (+{}) needs lora", item, part);
      parse_quant_format(part, fmt::format("--variants '{}': the base format", item));
      v.base_dtype = part;
    }
    out.push_back(v);
  }
  LORA_CHECK(!out.empty(), "--variants '{}': expected a comma-separated list such as full,lora,lora+nf4+ckpt", list);
  return out;
}

int parse_finetune_options(int argc, const char* const* argv, FinetuneOptions& o) {
  CLI::App app{"Fine-tune a causal LM (GPT-2, Llama, Qwen2, Mistral) fully or with LoRA and report, measured, what LoRA saves."};
  app.add_option("--weights", o.weights, "Hugging Face model folder (config.json + model.safetensors or shards), or a .safetensors file");
  app.add_option("--config", o.config, "a config.json path, or a preset for a random model or a bare .safetensors file: gpt2 (default), gpt2-medium, gpt2-large, gpt2-xl, small-test, tiny, smollm2-135m, llama-tiny");
  app.add_option("--tokenizer", o.tokenizer, "tokenizer.json or a folder with tokenizer files (default: the model folder's, or GPT-2's for GPT-2)");
  app.add_option("--data", o.data, "training text (or llm.c .bin tokens); default: data/tinyshakespeare.txt");
  app.add_option("--mode", o.mode, "full, lora, or compare (both, each in a fresh process)")->check(CLI::IsMember({"full", "lora", "compare"}))->capture_default_str();
  app.add_option("--variants", o.variants, "with --mode compare: the runs, each in its own process, e.g. full,lora,lora+nf4,lora+nf4+ckpt (+bf16, +int8, +q4_0, +nf4: the base format; +ckpt: checkpointed activations)")->capture_default_str();
  app.add_option("--rank", o.rank, "LoRA rank r")->check(CLI::Range(int64_t{1}, int64_t{1} << 16))->capture_default_str();
  app.add_option("--alpha", o.alpha, "LoRA alpha (scale alpha / r)")->check(CLI::Range(1e-6, 1e6))->capture_default_str();
  app.add_option("--targets", o.targets, "LoRA targets: names the model declares (q, k, v; any model: all-linear), layer names (c_attn, attn.c_proj, mlp.c_fc, q_proj, v_proj, gate_proj, ...) or patterns with *")->capture_default_str();
  app.add_option("--base-dtype", o.base_dtype, "with --mode lora: hold the frozen base's linear weights as f32, bf16, q8_0 (or int8), q4_0 or nf4 (QLoRA's 4-bit NormalFloat, double-quantized)")->capture_default_str();
  app.add_option("--lora-dropout", o.lora_dropout, "dropout on the LoRA branch's input")->check(CLI::Range(0.0, 0.99))->capture_default_str();
  app.add_option("--steps", o.steps, "training steps per mode")->check(CLI::Range(int64_t{1}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per batch")->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  app.add_option("--seq", o.seq, "tokens per sequence")->check(CLI::Range(int64_t{1}, int64_t{1} << 22))->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (default 1e-4 full, 1e-3 LoRA)")->check(CLI::Range(0.0, 1e38));
  app.add_option("--warmup", o.warmup, "warm-up steps before cosine decay")->check(CLI::Range(int64_t{0}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm (0: off)")->check(CLI::Range(0.0, 1e38))->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->check(CLI::Range(0.0, 1e6))->capture_default_str();
  app.add_option("--seed", o.seed, "seed for initialisation and batches")->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda[:N]")->capture_default_str();
  app.add_option("--save", o.save, "folder to save the model (full) or the adapter (lora) into, and checkpoints");
  app.add_option("--save-every", o.save_every, "write a resumable checkpoint every N steps into --save (SAVE/checkpoint-<step>/)")->check(CLI::Range(int64_t{0}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--keep-checkpoints", o.keep_checkpoints, "how many of the newest checkpoints to keep")->check(CLI::Range(int64_t{1}, int64_t{1000}))->capture_default_str();
  app.add_option("--resume", o.resume, "continue from the newest complete checkpoint in this folder (with the same flags)");
  app.add_flag("--skip-nonfinite", o.skip_nonfinite, "skip steps whose loss or gradient is inf or nan (counted and reported) instead of stopping");
  app.add_flag("--checkpoint-activations", o.checkpoint_activations, "keep only each Transformer block's input for backward and recompute the block's inside then (less activation memory, about one more forward pass)");
  app.add_flag("--save-gguf-adapter", o.save_gguf_adapter, "with --mode lora --save DIR: also write DIR/lora/adapter.gguf, the adapter as llama.cpp's GGUF LoRA adapter for the same base (docs/gguf.md)");
  app.add_flag("--no-preflight", o.no_preflight, "start even when the predicted memory exceeds what is available");
  app.add_option("--eval-every", o.eval_every, "held-out loss every N steps (0: before and after only)")->check(CLI::Range(int64_t{0}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--eval-batches", o.eval_batches, "held-out batches per evaluation")->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  app.add_option("--report-json", o.report_json, "write the report as JSON to this file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return -1;
}

}  // namespace lora::tools
