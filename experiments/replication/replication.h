// The pieces of the LoRA replication (examples/replicate_lora.cpp): progress lines with an ETA, stage
// files written atomically, pre-training with periodic checkpoints that resume bit-exactly, fine-tuning on
// masked LM examples, held-out loss, greedy generation, and equality checks.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/stopwatch.h"
#include "experiments/replication/e2e_data.h"
#include "models/causal_lm.h"

namespace lora::tools {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// "label 12/300 | ... | 3.1 s elapsed | ETA 55 s" lines, flushed.
class Progress {
 public:
  // `first`: the count already done when this process started (a resumed stage), left out of the rate.
  Progress(std::string label, int64_t total, int64_t first = 0)
      : label_(std::move(label)), total_(total), first_(first), start_(Clock::now()) {}
  void update(int64_t done, const std::string& detail) const;
  double elapsed_s() const { return seconds_since(start_); }

 private:
  std::string label_;
  int64_t total_, first_;
  Clock::time_point start_;
};

// Stage results: JSON written through a temporary file and a rename, so a stage is either done or not.
void write_json_atomically(const fs::path& path, const nlohmann::json& j);
nlohmann::json read_json(const fs::path& path);
void write_text_atomically(const fs::path& path, const std::string& text);
int64_t directory_bytes(const fs::path& dir);

// ---- Pre-training
struct PretrainOptions {
  int64_t steps = 1000, batch = 16, seq = 128, warmup = 50, eval_every = 100, eval_batches = 8;
  double lr = 1e-3, min_lr = 1e-4, grad_clip = 1.0;
  uint64_t seed = 1234;
  double checkpoint_minutes = 3.0;  // a checkpoint at least this often (and at the end)
  int64_t stop_after = 0;           // > 0: stop after this many steps of this process (tests an interruption)
  // Measured beside the held-out loss at every evaluation, never trained on (the replication: E2E's validation
  // loss, so the log shows when the base becomes fair); empty: nothing.
  std::function<double(models::CausalLM&)> side_eval;
};

// The training windows of step `step`: window w of an epoch is tokens [w seq, w seq + seq + 1); each epoch
// visits every window once in the order of a permutation drawn from Generator(seed + epoch); step s takes
// the positions [s B, (s + 1) B) of that endless sequence. A function of (seed, step) alone, so a resumed
// run sees exactly the batches an uninterrupted one would.
std::vector<int64_t> pretrain_windows(int64_t n_windows, int64_t batch, int64_t step, uint64_t seed);

// Trains `model` from its state under dir (the latest complete checkpoint dir/ckpt-N, if any) to
// options.steps, writing a checkpoint (weights, AdamW moments and step counts, loss log) every
// checkpoint_minutes into dir/ckpt-N.tmp, renamed to dir/ckpt-N when complete. Returns the log
// ({"losses": [...], "evals": [[step, loss], ...], "side_evals": [[step, value], ...] with side_eval, "tokens_per_s",
// "train_seconds", "resumed_from"}); the
// model holds the final weights. When stop_after ends it early, the log has "stopped_at".
nlohmann::json pretrain(models::CausalLM& model, const std::vector<int32_t>& train, const std::vector<int32_t>& val,
                        const PretrainOptions& options, const fs::path& dir);

// Mean next-token loss over fixed held-out windows (evenly spaced, `batches` x batch of them).
double heldout_window_loss(models::CausalLM& model, const std::vector<int32_t>& tokens, int64_t batch, int64_t seq,
                           int64_t batches);

// ---- Masked LM examples (E2E)
// Mean loss per target token over all `examples`, in batches of `batch`.
double heldout_example_loss(models::CausalLM& model, const std::vector<LMExample>& examples, int64_t batch,
                            int32_t pad);

// Greedy continuation of each prompt, up to max_new_tokens, stopping after <|endoftext|> (not returned).
std::vector<std::vector<int32_t>> greedy_generate(models::CausalLM& model,
                                                  const std::vector<std::vector<int32_t>>& prompts,
                                                  int64_t max_new_tokens, bool stop_at_eos = true);

// ---- Checks
// The model's parameters (HF names, as hf_state() gives them, adapters not folded unless merged) copied.
std::vector<std::pair<std::string, std::vector<float>>> snapshot_weights(const models::CausalLM& model);
// Largest |a - b| over equal-named tensors; -1 when the names or sizes differ.
double max_abs_difference(const std::vector<std::pair<std::string, std::vector<float>>>& a,
                          const std::vector<std::pair<std::string, std::vector<float>>>& b);

}  // namespace lora::tools
