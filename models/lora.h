// LoRA on a causal LM: apply_lora with the targets the model declares, and PEFT adapters in its layout.
#pragma once

#include <string>

#include "models/causal_lm.h"
#include "nn/lora/adapter.h"
#include "nn/lora/apply_lora.h"

namespace lora::models {

// nn::apply_lora with model.lora_targets() (GPT-2's q/k/v slices, "all-linear", ...).
inline nn::LoRASummary apply_lora(CausalLM& model, const nn::LoRAConfig& config) {
  return nn::apply_lora(model, config, model.lora_targets());
}

// PEFT adapter files for the model's adapters; base_model_name goes into adapter_config.json.
inline nn::AdapterState export_adapter(const CausalLM& model, const std::string& base_model_name) {
  return nn::export_adapter(model, base_model_name, model.hf_fan_in_fan_out());
}
inline void save_adapter(const CausalLM& model, const std::string& dir, const std::string& base_model_name) {
  nn::save_adapter(model, dir, base_model_name, model.hf_fan_in_fan_out());
}

}  // namespace lora::models
