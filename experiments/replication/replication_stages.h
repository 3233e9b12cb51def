// The stages of replicate_lora: options (full and --quick presets), pre-training, one fine-tuning run,
// its evaluation, the style adapter, adapter switching, merged-inference latency and the report. Each stage
// writes OUT/<stage>.json atomically when it completes, and run_all() skips stages whose file exists.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tools/replication.h"

namespace lora::replicate {

namespace fs = std::filesystem;

// One fine-tuning run: full fine-tuning, or LoRA on `targets` at `rank`.
struct RunSpec {
  std::string name;     // "full", "lora_qv_r8", ...
  bool lora = false;
  std::string targets;  // GPT-2 target names (q,v or attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj)
  int64_t rank = 0;
};
std::vector<RunSpec> all_runs();
std::string all_run_names();

struct Options {
  bool quick = false, pretrain_only = false;
  std::string out = "runs/replicate_lora", report_dir, weights, data_dir, corpus, runs;
  std::string style_text = "corpus/gutenberg-austen-persuasion.txt";
  int64_t n_embd = 0, n_layer = 0, n_head = 0;  // 0: the preset's
  tools::PretrainOptions pre;
  int64_t ft_steps = 0, ft_batch = 0, eval_every = 0, valid_examples = 0, test_mrs = 0, max_new_tokens = 0;
  int64_t style_steps = 0, latency_rounds = 0;
  double full_lr = 0, lora_lr = 0, lora_scale = 0;
  uint64_t seed = 1234;
  std::string command;  // the command line, for the report

  // Fills every unset value from the full or --quick preset and checks paths; errors name the flag.
  void finalize(const std::vector<std::string>& argv);
  fs::path data(const std::string& relative) const;
  std::vector<std::string> corpus_files() const;
  std::vector<RunSpec> selected_runs() const;
};

// Everything, skipping completed stages; returns the exit status (0, 2 when a check failed, 3 when
// --stop-after interrupted pre-training).
int run_all(const Options& o);

}  // namespace lora::replicate
