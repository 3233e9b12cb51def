// The fine-tuning report: what one training run measured (memory by category from the tracker, process
// peak RSS, step times, losses, checkpoint size) next to an analytical prediction, as a table and JSON,
// and the side-by-side comparison of full fine-tuning and LoRA.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/memory.h"

namespace lora::tools {

struct ModeReport {
  std::string mode;  // "full" or "lora"
  std::string device;
  int64_t batch = 0, seq = 0;
  int64_t trainable_params = 0, total_params = 0;
  DeviceMemoryStats memory;     // measured by the tracker over the training steps
  int64_t peak_rss_bytes = 0;   // the process's high-water mark (getrusage)
  MemoryFigures predicted;      // per category, predicted by the meta-device dry run (tools/memory_prediction.h)
  int64_t predicted_total = 0;  // the predicted peak total
  std::vector<double> step_times_s;
  std::vector<double> losses;
  double val_loss_before = 0, val_loss_after = 0;
  int64_t skipped_steps = 0;  // steps skipped for a non-finite loss or gradient
  // Data parallelism (ranks > 1): the engine, gradient bytes all-reduced per step, buckets, the median
  // time per step inside the all-reduce calls and the share of it hidden behind backward; and every rank's
  // tracker peak and peak RSS (this report's memory figures are rank 0's).
  int ranks = 1;
  std::string comm_engine;
  int64_t allreduce_bytes_per_step = 0, comm_buckets = 0;
  double comm_seconds_per_step = 0, comm_hidden_share = 0;
  std::vector<int64_t> rank_peak_bytes, rank_peak_rss_bytes;
  int64_t saved_bytes = 0;
  std::string saved_path;

  double median_step_time_s() const;
  double tokens_per_s() const;
  nlohmann::json to_json() const;
  static ModeReport from_json(const nlohmann::json& j);
  std::string table() const;  // the per-mode memory table
};

// The process's peak resident set size in bytes.
int64_t process_peak_rss_bytes();

// Full fine-tuning vs LoRA side by side, with ratios.
std::string comparison_table(const ModeReport& full, const ModeReport& lora);
// One column per variant (finetune --variants: "full", "lora+nf4+ckpt", ...), with the predicted peak; ratios
// are against the first column.
std::string variants_table(const std::vector<std::string>& names, const std::vector<ModeReport>& reports);

// Bytes -> "123.4 MiB"
std::string human_bytes(int64_t bytes);

}  // namespace lora::tools
