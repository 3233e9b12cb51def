// A causal LM's frozen base in a compact format (--base-dtype): every linear layer but the output head
// (which stays f32 like the embeddings: the fused head-and-loss reads it whole). Run it after LoRA is
// applied (LoRA wraps f32 layers; their base layers are then quantized) and after the model is on its device.
//
// With `inference_head` (programs that only decode: generate, bench_serve, serve), forward() also takes its
// logits from a quantized copy of the head, as llama.cpp's quantized files do: q8_0 for the 8- and 4-bit
// bases (llama.cpp keeps its output tensor above 4 bits too), bf16 for bf16 and for hidden sizes that are
// not whole blocks of 32. The f32 head stays for the embeddings (a tied head) and for the loss.
#pragma once

#include <set>

#include "models/causal_lm.h"
#include "nn/quantized_linear.h"

namespace lora::models {

// QLoRA's nf4 keeps its absmaxes double-quantized; the other formats have no second level.
inline nn::QuantizeReport quantize_base(CausalLM& model, QuantFormat format, bool inference_head = false) {
  // "all-linear" names every linear layer but the head (LoRA's base layers aside): those, and the base layers.
  std::set<std::string> body;
  for (const nn::LoRATarget& t : model.lora_targets()) {
    if (t.name != "all-linear") continue;
    for (const nn::LoRASite& site : t.sites) body.insert(site.module_path);
  }
  const auto in_base = [&](const std::string& path) { return body.count(path) > 0 || path.ends_with(".base_layer"); };
  // Layers a loader already built compact (a GGUF file's own blocks, models/gguf/base_blocks.h) stay as they
  // are and are counted.
  nn::QuantizeReport held;
  for (const auto& [path, module] : model.named_modules()) {
    const auto compact = std::dynamic_pointer_cast<nn::QuantizedLinear>(module);
    if (!compact || !in_base(path)) continue;
    held.layers += 1;
    held.f32_bytes += static_cast<size_t>(compact->quantized->rows * compact->quantized->cols) * 4;
    held.quantized_bytes += compact->quantized->nbytes();
  }
  nn::QuantizeReport report = nn::quantize_frozen_linears(model, format, format == QuantFormat::NF4, in_base);
  report.layers += held.layers, report.f32_bytes += held.f32_bytes, report.quantized_bytes += held.quantized_bytes;
  if (inference_head && format != QuantFormat::F32) {
    const QuantFormat f =
        format == QuantFormat::BF16 || model.dims().hidden % kQuantBlock != 0 ? QuantFormat::BF16 : QuantFormat::Q8_0;
    model.quantize_inference_head(f);
    report.quantized_bytes += model.inference_head()->nbytes();  // held beside the f32 head
  }
  return report;
}

}  // namespace lora::models
