// What the benchmark programs share: the machine's load average (printed beside every figure, since other
// work on the cores makes timings noisy), the process's resident memory, and a random LoRA adapter for a
// model (serving benchmarks need many distinct ones; their values do not matter, their shapes do).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "nn/lora/adapter.h"

namespace lora::tools {

// The 1-minute load average, or -1 where /proc/loadavg cannot be read.
double load_average();

// This process's resident set (VmRSS) and its high-water mark (VmHWM) in bytes, from /proc/self/status;
// 0 where it cannot be read.
struct ResidentMemory {
  int64_t rss = 0, peak = 0;
};
ResidentMemory resident_memory();

// A random adapter for `model` (left as it was): LoRA of `rank` on `targets`, B drawn N(0, 0.02) so that the
// adapter changes the outputs.
nn::AdapterState random_adapter(models::CausalLM& model, int64_t rank, const std::vector<std::string>& targets,
                                uint64_t seed);

}  // namespace lora::tools
