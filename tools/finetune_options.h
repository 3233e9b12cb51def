// finetune's flags: their values, the command line that sets them, and the checks that tie them together.
// A separate unit so that the command line can be tested and fuzzed without running anything.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lora::tools {

struct FinetuneOptions {
  std::string weights, config, tokenizer, data, mode = "compare", targets = "q,v", device = "cpu", save, resume,
                                                report_json;
  std::string base_dtype = "auto";     // the frozen base's format under LoRA (models/base_dtype.h; auto: f32 but
                                       // for a GGUF file, whose Q8_0/Q4_0 blocks are kept)
  std::string variants = "full,lora";  // --mode compare: what runs, each in its own process
  int64_t rank = 8, steps = 6, batch = 4, seq = 64, warmup = 2, eval_every = 0, eval_batches = 2;
  int64_t save_every = 0, keep_checkpoints = 2;
  double alpha = 16, lora_dropout = 0, lr = -1, grad_clip = 1.0, weight_decay = 0.0;
  bool skip_nonfinite = false, no_preflight = false;
  bool save_gguf_adapter = false;       // also write SAVE/lora/adapter.gguf (llama.cpp's LoRA adapter format)
  bool checkpoint_activations = false;  // recompute each block's inside during backward
  uint64_t seed = 1337;

  // The data (tools/finetune_data.h): its format, how examples become rows, the held-out set, how long.
  std::string format = "auto";      // auto, raw, tokens, text, prompt_completion, alpaca, messages, sharegpt
  std::string chat_template;        // a Jinja file; default: the model folder's
  bool train_on_inputs = false;     // train on every token of an example, prompts and user turns too
  int64_t max_seq = 0;              // examples longer are truncated (0: --seq)
  bool drop_long = false;           // ... or dropped
  bool packing = false;             // examples packed into rows of --seq tokens (segment ids)
  std::string eval_data;            // held-out examples or text from this file
  double eval_fraction = 0;         // held-out: this fraction of the examples (seeded)
  double epochs = 0;                // > 0: the steps that make this many epochs (instead of --steps)
  bool steps_given = false;         // --steps was on the command line (or in the config file)
  int64_t grad_accum = 1;           // micro-batches per optimizer step
  int64_t early_stop_patience = 0;  // stop after N evaluations without a better held-out loss
  int64_t sample_every = 0, sample_tokens = 32;
  std::string sample_prompt;
  std::string log;          // JSON lines, one per step and per evaluation; an SVG loss curve beside
  std::string config_file;  // the TOML/INI file the flags were read from (when given)

  // Relations between flags that the parser cannot check one by one; throws lora::Error naming the flags.
  // (Those that depend on the data's format are checked once it is known: tools/finetune_data.h.)
  void validate() const;
};

// One variant of --mode compare: "full", "lora", "lora+nf4", "lora+nf4+ckpt", "full+ckpt", ...
struct Variant {
  std::string name, mode;          // mode: "full" or "lora"
  std::string base_dtype = "f32";  // +bf16, +int8, +nf4 (LoRA only)
  bool checkpoint = false;         // +ckpt
};
// Parses --variants; throws lora::Error naming the variant and what was expected.
std::vector<Variant> parse_variants(const std::string& list);

// Parses argv into `o`. Returns -1 to go on, or the exit code to return now (0 after --help, non-zero
// after a bad flag, with CLI11's message printed).
int parse_finetune_options(int argc, const char* const* argv, FinetuneOptions& o);

}  // namespace lora::tools
