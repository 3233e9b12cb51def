// A causal LM's frozen base in a compact format (--base-dtype): every linear layer but the output head
// (which stays f32 like the embeddings: the fused head-and-loss reads it whole). Run it after LoRA is
// applied (LoRA wraps f32 layers; their base layers are then quantized) and after the model is on its device.
#pragma once

#include <set>

#include "models/causal_lm.h"
#include "nn/quantized_linear.h"

namespace lora::models {

// QLoRA's nf4 keeps its absmaxes double-quantized; the other formats have no second level.
inline nn::QuantizeReport quantize_base(CausalLM& model, QuantFormat format) {
  // "all-linear" names every linear layer but the head (LoRA's base layers aside): those, and the base layers.
  std::set<std::string> body;
  for (const nn::LoRATarget& t : model.lora_targets()) {
    if (t.name != "all-linear") continue;
    for (const nn::LoRASite& site : t.sites) body.insert(site.module_path);
  }
  return nn::quantize_frozen_linears(model, format, format == QuantFormat::NF4, [&](const std::string& path) {
    return body.count(path) > 0 || path.ends_with(".base_layer");
  });
}

}  // namespace lora::models
