// Helpers of the serving tests: random adapters of different ranks and targets for one base model, and the
// logits each row of a batch gives alone with its adapter applied the ordinary way (LoRALinear).
#pragma once

#include <string>
#include <vector>

#include "models/lora.h"
#include "models/registry.h"
#include "nn/lora/adapter.h"

namespace lora::testing {

struct AdapterSpec {
  std::string name;
  int64_t rank;
  std::vector<std::string> targets;
  bool rslora = false;
};

// Adapters for `model` (which is left as it was): LoRA applied with each spec, every B given random values
// (B starts at zero), exported in PEFT's layout.
inline std::vector<nn::AdapterState> random_adapters(models::CausalLM& model, const std::vector<AdapterSpec>& specs,
                                                     uint64_t seed) {
  std::vector<nn::AdapterState> out;
  Generator gen(seed);
  for (const AdapterSpec& spec : specs) {
    nn::LoRAConfig config;
    config.options.rank = spec.rank;
    config.options.alpha = 2.0 * static_cast<double>(spec.rank) + 1.0;
    config.options.rslora = spec.rslora;
    config.options.seed = gen.next_u64();
    config.targets = spec.targets;
    models::apply_lora(model, config);
    {
      NoGradGuard no_grad;
      for (auto& [path, layer] : nn::lora_layers(model)) {
        layer->lora_B.copy_from(
            Tensor::randn(layer->lora_B.shape(), gen, 0.0, 0.05, DType::F32, layer->lora_B.device()));
      }
    }
    out.push_back(models::export_adapter(model, "test"));
    nn::remove_lora(model);
  }
  return out;
}

// Logits [T, vocab] of ids [T] alone, with `adapter` imported into `model` (none: the base model). The
// model is left without adapters.
inline Tensor row_alone(models::CausalLM& model, const std::vector<int32_t>& ids, const nn::AdapterState* adapter) {
  NoGradGuard no_grad;
  model.eval();
  if (adapter) nn::import_adapter(model, *adapter);
  const int64_t T = static_cast<int64_t>(ids.size());
  Tensor logits = model.forward(Tensor::from_vector(ids, {1, T}, model.device())).to(Device::cpu());
  nn::remove_lora(model);
  return logits.view({T, -1});
}

}  // namespace lora::testing
