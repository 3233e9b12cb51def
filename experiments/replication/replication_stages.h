// The stages of replicate_lora: options (full and --quick presets), pre-training, the base's evaluation, one
// fine-tuning run per (configuration, learning rate) of the sweep, the choice on the validation set, the
// chosen run's evaluation, the style adapter, adapter switching, merged-inference latency, the subspace
// analysis, the step-time measurement and the report. Each stage writes its result file atomically when it
// completes, and run_all() skips stages whose file exists.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/replication/replication.h"

namespace lora::replicate {

namespace fs = std::filesystem;

// One fine-tuning configuration: full fine-tuning, or LoRA on `targets` at `rank`. Each is trained once per
// learning rate of its sweep (full_lrs or lora_lrs, extended past an edge that holds the best: sweep_lrs) with
// the same steps and examples; the run with the lowest E2E validation loss at the end is the configuration's
// result.
struct RunSpec {
  std::string name;  // "full", "lora_qv_r8", ...
  bool lora = false;
  std::string targets;  // GPT-2 target names (q,v or attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj)
  int64_t rank = 0;
};
std::vector<RunSpec> all_runs();
std::string all_run_names();

struct Options {
  bool quick = false, pretrain_only = false, report_only = false, step_timing = false;
  std::string out = "runs/replicate_lora", report_dir, weights, data_dir, corpus, runs, tokenizer;
  std::string style_text = "corpus/gutenberg-austen-persuasion.txt";
  std::string device = "cpu";
  int64_t n_embd = 0, n_layer = 0, n_head = 0;  // 0: the preset's
  tools::PretrainOptions pre;
  int64_t ft_steps = 0, ft_batch = 0, eval_every = 0, train_examples = -1, valid_examples = 0, test_mrs = 0;
  int64_t max_new_tokens = 0, style_steps = 0, latency_rounds = 0, timing_rounds = 0;
  std::vector<double> full_lrs, lora_lrs;  // the learning-rate sweeps
  int64_t sweep_extensions = -1;           // learning rates a sweep may add past its edges (-1: the preset's)
  double lora_alpha = 0;                   // the same alpha at every rank (scale alpha / r), as the paper
  uint64_t seed = 1234;
  std::string command;  // the command line, for the report

  // Fills every unset value from the full or --quick preset and checks paths; errors name the flag.
  void finalize(const std::vector<std::string>& argv);
  fs::path data(const std::string& relative) const;
  fs::path tokenizer_file() const;  // --tokenizer, or DATA_DIR/replication/tokenizer.json
  std::vector<std::string> corpus_files() const;
  std::vector<RunSpec> selected_runs() const;
};

// Everything, skipping completed stages; returns the exit status (0, 2 when a check failed, 3 when
// --stop-after interrupted pre-training). --report-only writes the report from the stages done so far;
// --step-timing runs only the step-time measurement (on a quiet machine) and then the report.
int run_all(const Options& o);

}  // namespace lora::replicate
