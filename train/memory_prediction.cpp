// The meta-device dry run that predicts a training step's memory, and the check against what is available.
#include "train/memory_prediction.h"

#include <fstream>

#include "autograd/checkpoint.h"
#include "autograd/grad_mode.h"
#include "autograd/tape.h"
#include "models/lora.h"
#include "models/quantize_base.h"
#include "optim/adam.h"
#include "train/train_step.h"

namespace lora::train {

StepMemoryPrediction predict_training_step(const models::ModelConfig& config, const nn::LoRAConfig* lora, int64_t batch,
                                           int64_t seq, QuantFormat base, bool checkpoint,
                                           const models::CompactTables& tables) {
  const Device meta = Device::meta();
  auto& tracker = MemoryTracker::instance();
  StepMemoryPrediction prediction;
  {
    DefaultDeviceGuard shapes_only(meta);
    autograd::CheckpointGuard checkpointing(checkpoint);
    auto model = models::create_model(config, 0);
    if (lora) models::apply_lora(*model, *lora);
    if (lora && base != QuantFormat::F32) models::quantize_base(*model, base);
    if (lora) models::make_tables_compact(*model, tables);
    optim::AdamW optimizer(model->parameters(true), {});
    Batch shapes;
    shapes.ids = Tensor::zeros({batch, seq}, DType::I32, meta);
    shapes.targets = shapes.ids;
    shapes.trained_tokens = batch * seq;
    shapes.sequences = batch;
    tracker.reset_peaks(meta);  // the step alone, with the model and its optimizer already in place
    for (int step = 0; step < 2; ++step) (void)train_step(*model, optimizer, {shapes});
    const DeviceMemoryStats stats = tracker.stats(meta);
    prediction.peak = stats.peak;
    prediction.live_at_peak = stats.live_at_peak;
    prediction.total_peak = stats.global_peak;
  }
  autograd::Tape::current().clear();
  return prediction;
}

int64_t available_host_memory() {
  int64_t available = -1;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    int64_t kib = 0;
    meminfo >> kib;
    if (key == "MemAvailable:") available = kib * 1024;
    meminfo.ignore(1 << 10, '\n');
  }
  // A container's limit (cgroup v2, then v1) may be far below the machine's memory.
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream limit_file(path);
    std::string text;
    if (!(limit_file >> text) || text == "max") continue;
    const int64_t limit = std::strtoll(text.c_str(), nullptr, 10);
    std::ifstream usage_file(std::string(path).find("memory.max") != std::string::npos
                                 ? "/sys/fs/cgroup/memory.current"
                                 : "/sys/fs/cgroup/memory/memory.usage_in_bytes");
    int64_t usage = 0;
    usage_file >> usage;
    if (limit > 0 && limit < (int64_t{1} << 60))
      available = available < 0 ? limit - usage : std::min(available, limit - usage);
  }
  return available;
}

void check_fits(const StepMemoryPrediction& p, int64_t available, int64_t overhead, const std::string& what,
                const std::string& advice) {
  if (available < 0 || p.total_peak + overhead <= available) return;
  std::string categories;
  for (int c = 0; c < kNumMemoryCategories; ++c) {
    if (p.live_at_peak.bytes[c] == 0) continue;
    categories += fmt::format("\n  {:<18} {:>12}", category_name(static_cast<MemoryCategory>(c)),
                              format_bytes(p.live_at_peak.bytes[c]));
  }
  LORA_FAIL(
      "{} will not fit: it needs about {} at its peak ({} predicted for the step, plus about {} for code, "
      "libraries and data), and {} is available. The prediction at the peak, by category:{}\n{}",
      what, format_bytes(p.total_peak + overhead), format_bytes(p.total_peak), format_bytes(overhead),
      format_bytes(available), categories, advice);
}

}  // namespace lora::train
