// finetune's command line (CLI11) and the checks between its flags.
#include "tools/finetune_options.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "core/device.h"
#include "core/error.h"
#include "core/quantized.h"
#include "models/base_dtype.h"
#include "nn/lora/apply_lora.h"

namespace lora::tools {

void FinetuneOptions::validate() const {
  Device::parse(device);
  LORA_CHECK(epochs > 0 || warmup < steps || steps == 1, "--warmup {} must be below --steps {}", warmup, steps);
  LORA_CHECK(!(epochs > 0 && steps_given), "--epochs {} and --steps {}: give one of them (--epochs computes the steps)",
             epochs, steps);
  LORA_CHECK(std::isfinite(epochs) && epochs >= 0 && epochs <= 1e6, "--epochs {}: expected a positive number", epochs);
  LORA_CHECK(eval_data.empty() || eval_fraction == 0,
             "--eval-data and --eval-fraction both give held-out data: use one of them");
  LORA_CHECK(eval_fraction >= 0 && eval_fraction < 1, "--eval-fraction {}: expected a fraction in [0, 1)",
             eval_fraction);
  LORA_CHECK(max_seq == 0 || max_seq >= 2, "--max-seq {}: an example needs at least 2 tokens", max_seq);
  LORA_CHECK(!packing || max_seq == 0 || max_seq <= seq,
             "--max-seq {} exceeds --seq {}: with --packing every example must fit a row of --seq tokens", max_seq,
             seq);
  LORA_CHECK(early_stop_patience == 0 || eval_every > 0,
             "--early-stop-patience {} needs evaluations during training: give --eval-every N", early_stop_patience);
  LORA_CHECK(sample_every == 0 || !sample_prompt.empty(), "--sample-every {} needs --sample-prompt TEXT", sample_every);
  LORA_CHECK(sample_prompt.empty() || sample_every > 0,
             "--sample-prompt is printed every --sample-every N steps: give N");
  LORA_CHECK(
      mode != "compare" || (grad_accum == 1 && early_stop_patience == 0 && sample_every == 0 && log.empty()),
      "--grad-accum, --early-stop-patience, --sample-every and --log apply to one run: use them with --mode full "
      "or --mode lora");
  LORA_CHECK(batch <= (int64_t{1} << 31) / seq, "--batch {} x --seq {} tokens per step is more than 2^31", batch, seq);
  LORA_CHECK(std::isfinite(alpha) && std::isfinite(lr) && std::isfinite(grad_clip) && std::isfinite(weight_decay),
             "--alpha, --lr, --grad-clip and --weight-decay must be finite");
  LORA_CHECK(mode != "compare" || (save_every == 0 && resume.empty()),
             "--save-every and --resume apply to one run: use them with --mode full or --mode lora");
  LORA_CHECK(save_every == 0 || !save.empty(), "--save-every {} needs --save DIR (where checkpoints go)", save_every);
  LORA_CHECK(!save_gguf_adapter || (!save.empty() && mode == "lora"),
             "--save-gguf-adapter needs --mode lora and --save DIR");
  if (mode != "full") nn::LoRAConfig::parse_targets(targets);
  const std::vector<Variant> runs = parse_variants(variants);
  LORA_CHECK(mode == "compare" || variants == "full,lora", "--variants applies to --mode compare (given --mode {})",
             mode);
  const models::BaseDtype base = models::BaseDtype::parse(base_dtype);
  LORA_CHECK(mode != "compare" || ((base_dtype == "f32" || base.automatic) && !checkpoint_activations),
             "--mode compare: give the base format and checkpointing per variant (--variants lora+nf4+ckpt), not "
             "with --base-dtype or --checkpoint-activations");
  LORA_CHECK(
      !base.compact() || base.automatic || mode == "lora",
      "--base-dtype {} quantizes the frozen base, which only LoRA has: use it with --mode lora (--mode {} trains "
      "every weight, and a quantized weight cannot be updated)",
      base_dtype, mode);
}

std::vector<Variant> parse_variants(const std::string& list) {
  std::vector<Variant> out;
  std::stringstream items(list);
  for (std::string item; std::getline(items, item, ',');) {
    Variant v;
    v.name = item;
    std::stringstream parts(item);
    std::getline(parts, v.mode, '+');
    LORA_CHECK(v.mode == "full" || v.mode == "lora",
               "--variants: '{}' must start with full or lora (e.g. lora+nf4+ckpt)", item);
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
  CLI::App app{
      "Fine-tune a causal LM (GPT-2, Llama, Qwen2, Mistral) fully or with LoRA and report, measured, what LoRA saves."};
  app.add_option("--weights", o.weights,
                 "Hugging Face model folder (config.json + model.safetensors or shards), a .safetensors file, or a "
                 "GGUF file");
  app.add_option("--config", o.config,
                 "a config.json path, or a preset for a random model or a bare .safetensors file: gpt2 (default), "
                 "gpt2-medium, gpt2-large, gpt2-xl, small-test, tiny, smollm2-135m, llama-tiny");
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer.json or a folder with tokenizer files (default: the model folder's, or GPT-2's for GPT-2)");
  app.add_option("--data", o.data, "training text (or llm.c .bin tokens); default: data/tinyshakespeare.txt");
  app.add_option("--mode", o.mode, "full, lora, or compare (both, each in a fresh process)")
      ->check(CLI::IsMember({"full", "lora", "compare"}))
      ->capture_default_str();
  app.add_option("--variants", o.variants,
                 "with --mode compare: the runs, each in its own process, e.g. full,lora,lora+nf4,lora+nf4+ckpt "
                 "(+bf16, +int8, +q4_0, +nf4: the base format; +ckpt: checkpointed activations)")
      ->capture_default_str();
  app.add_option("--rank", o.rank, "LoRA rank r")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))
      ->capture_default_str();
  app.add_option("--alpha", o.alpha, "LoRA alpha (scale alpha / r)")
      ->check(CLI::Range(1e-6, 1e6))
      ->capture_default_str();
  app.add_option("--targets", o.targets,
                 "LoRA targets: names the model declares (q, k, v; any model: all-linear), layer names (c_attn, "
                 "attn.c_proj, mlp.c_fc, q_proj, v_proj, gate_proj, ...) or patterns with *")
      ->capture_default_str();
  app.add_option("--base-dtype", o.base_dtype,
                 "with --mode lora: hold the frozen base's linear weights as f32, bf16, q8_0 (or int8), q4_0 or nf4 "
                 "(QLoRA's 4-bit NormalFloat, double-quantized), or auto: a GGUF file's own Q8_0/Q4_0 blocks as they "
                 "are (K-quants to the nearest of the two), f32 for other weights")
      ->capture_default_str();
  app.add_option("--lora-dropout", o.lora_dropout, "dropout on the LoRA branch's input")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  app.add_option("--steps", o.steps, "training steps per mode")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per batch")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--seq", o.seq, "tokens per sequence")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22))
      ->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (default 1e-4 full, 1e-3 LoRA)")->check(CLI::Range(0.0, 1e38));
  app.add_option("--warmup", o.warmup, "warm-up steps before cosine decay")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm (0: off)")
      ->check(CLI::Range(0.0, 1e38))
      ->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed for initialisation and batches")->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda[:N]")->capture_default_str();
  app.add_option("--save", o.save, "folder to save the model (full) or the adapter (lora) into, and checkpoints");
  app.add_option("--save-every", o.save_every,
                 "write a resumable checkpoint every N steps into --save (SAVE/checkpoint-<step>/)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--keep-checkpoints", o.keep_checkpoints, "how many of the newest checkpoints to keep")
      ->check(CLI::Range(int64_t{1}, int64_t{1000}))
      ->capture_default_str();
  app.add_option("--resume", o.resume,
                 "continue from the newest complete checkpoint in this folder (with the same flags)");
  app.add_flag("--skip-nonfinite", o.skip_nonfinite,
               "skip steps whose loss or gradient is inf or nan (counted and reported) instead of stopping");
  app.add_flag("--checkpoint-activations", o.checkpoint_activations,
               "keep only each Transformer block's input for backward and recompute the block's inside then (less "
               "activation memory, about one more forward pass)");
  app.add_flag("--save-gguf-adapter", o.save_gguf_adapter,
               "with --mode lora --save DIR: also write DIR/lora/adapter.gguf, the adapter as llama.cpp's GGUF LoRA "
               "adapter for the same base (docs/gguf.md)");
  app.add_flag("--no-preflight", o.no_preflight, "start even when the predicted memory exceeds what is available");
  app.add_option("--eval-every", o.eval_every, "held-out loss every N steps (0: before and after only)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option(
         "--eval-batches", o.eval_batches,
         "held-out batches of random windows per evaluation (raw text and tokens; examples: every held-out example)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--report-json", o.report_json, "write the report as JSON to this file");
  // The data people fine-tune on (docs/training-step.md, "Data").
  app.add_option("--format", o.format,
                 "the data's format: auto (detected from the file; what was found and why is printed), raw (text cut "
                 "into windows), tokens (an llm.c .bin file), or JSONL/.json records: text, prompt_completion, alpaca, "
                 "messages, sharegpt")
      ->check(CLI::IsMember({"auto", "raw", "tokens", "text", "prompt_completion", "alpaca", "messages", "sharegpt"}))
      ->capture_default_str();
  app.add_option("--chat-template", o.chat_template,
                 "a Jinja chat template file for alpaca, messages and sharegpt data (default: the model folder's "
                 "chat_template.jinja or tokenizer_config.json's)");
  app.add_flag("--train-on-inputs", o.train_on_inputs,
               "train on every token of an example, prompts and user turns included (default: only the completion and "
               "assistant turns)");
  app.add_option("--max-seq", o.max_seq, "examples longer than this many tokens are truncated (default: --seq)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 22));
  app.add_flag("--drop-long", o.drop_long, "drop examples longer than --max-seq instead of truncating them");
  app.add_flag("--packing", o.packing,
               "pack examples into rows of --seq tokens; segment ids keep each example's attention and positions its "
               "own (default: one example per row, padded to the longest of the batch)");
  app.add_option("--eval-data", o.eval_data,
                 "held-out data in the same formats (default: raw text holds out its last 10%; examples: none, or "
                 "--eval-fraction)");
  app.add_option("--eval-fraction", o.eval_fraction,
                 "hold out this fraction of the examples (whole examples, chosen by --seed)")
      ->check(CLI::Range(0.0, 0.999999));
  app.add_option("--epochs", o.epochs,
                 "train this many passes over the data (the steps are computed from the examples, --batch and "
                 "--grad-accum, and printed) instead of --steps")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            const bool number = !text.empty() && end == text.c_str() + text.size();
            return number && v > 0 && v <= 1e6 ? "" : "'" + text + "': expected a number of passes above 0, at most 1e6";
          },
          "POSITIVE"));
  app.add_option("--grad-accum", o.grad_accum,
                 "micro-batches of --batch per optimizer step (the loss is normalised over all their trained tokens)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option(
         "--early-stop-patience", o.early_stop_patience,
         "stop when the held-out loss has not improved for N evaluations (--eval-every) and keep the best weights")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--sample-every", o.sample_every, "print a greedy continuation of --sample-prompt every N steps")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--sample-prompt", o.sample_prompt,
                 "the prompt of --sample-every (rendered with the chat template for chat data)");
  app.add_option("--sample-tokens", o.sample_tokens, "tokens per sample")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  app.add_option("--log", o.log,
                 "write one JSON line per step and per evaluation to this file (flushed as it goes), and the loss "
                 "curve as an SVG beside it");
  app.set_config("--config-file", "",
                 "read flags from a TOML or INI file (name = value, the flags' long names without --); flags on the "
                 "command line win")
      ->check(CLI::ExistingFile);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.steps_given = app.count("--steps") > 0;
  if (const CLI::Option* config = app.get_config_ptr(); config && config->count() > 0)
    o.config_file = config->as<std::string>();
  return -1;
}

}  // namespace lora::tools
