// Load average, resident memory and random adapters for the benchmark programs (tools/bench_support.h).
#include "tools/bench_support.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "autograd/grad_mode.h"
#include "models/lora.h"
#include "nn/lora/lora_linear.h"

namespace lora::tools {

double load_average() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

ResidentMemory resident_memory() {
  ResidentMemory m;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    if (!(fields >> key >> kib)) continue;
    if (key == "VmRSS:") m.rss = kib * 1024;
    if (key == "VmHWM:") m.peak = kib * 1024;
  }
  return m;
}

nn::AdapterState random_adapter(models::CausalLM& model, int64_t rank, const std::vector<std::string>& targets,
                                uint64_t seed) {
  nn::LoRAConfig config;
  config.options.rank = rank;
  config.options.seed = seed;
  config.targets = targets;
  models::apply_lora(model, config);
  Generator gen(seed);
  {
    NoGradGuard no_grad;
    for (auto& [path, layer] : nn::lora_layers(model)) {
      layer->lora_B.copy_from(Tensor::randn(layer->lora_B.shape(), gen, 0.0, 0.02, DType::F32, layer->lora_B.device()));
    }
  }
  nn::AdapterState state = models::export_adapter(model, "bench");
  nn::remove_lora(model);
  return state;
}

}  // namespace lora::tools
