// QuantizedLinear and quantize_frozen_linears.
#include "nn/quantized_linear.h"

#include <vector>

#include "nn/layers.h"

namespace lora::nn {

QuantizedLinear::QuantizedLinear(const Linear& layer, QuantFormat format, bool double_quant)
    : Linear(layer.in_features(), layer.out_features()) {
  LORA_CHECK(layer.has_dense_weight(), "QuantizedLinear: the layer is already quantized");
  LORA_CHECK(!layer.weight.requires_grad(),
             "QuantizedLinear: cannot quantize a weight that trains (a quantized "
             "weight receives no updates; freeze it, as LoRA does)");
  quantized = std::make_shared<const QuantizedWeight>(quantize_weight(layer.weight, format, double_quant));
  if (layer.bias.defined()) {
    bias = layer.bias;
    register_parameter("bias", bias);
    freeze();  // the bias is frozen like the weight (register_parameter makes it trainable)
  }
}

QuantizedLinear::QuantizedLinear(std::shared_ptr<const QuantizedWeight> weight, Tensor layer_bias)
    : Linear(weight ? weight->cols : 0, weight ? weight->rows : 0) {
  LORA_CHECK(weight != nullptr && weight->format != QuantFormat::F32, "QuantizedLinear: no compact weight given");
  LORA_CHECK(!layer_bias.defined() || (layer_bias.rank() == 1 && layer_bias.size(0) == weight->rows),
             "QuantizedLinear: the bias of shape {} does not match {} outputs", layer_bias.shape().str(), weight->rows);
  quantized = std::move(weight);
  if (layer_bias.defined()) {
    bias = layer_bias;
    register_parameter("bias", bias);
    freeze();
  }
}

void QuantizedLinear::on_to(Device device) {
  if (quantized && quantized->device() != device)
    quantized = std::make_shared<const QuantizedWeight>(quantized_to(*quantized, device));
}

std::vector<std::pair<std::string, std::shared_ptr<const QuantizedWeight>>> named_compact_weights(const Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<const QuantizedWeight>>> out;
  for (const auto& [path, module] : model.named_modules()) {
    if (const auto q = std::dynamic_pointer_cast<const QuantizedLinear>(module); q && q->quantized)
      out.emplace_back(path, q->quantized);
    else if (const auto e = std::dynamic_pointer_cast<const Embedding>(module); e && e->compact)
      out.emplace_back(path, e->compact);
  }
  return out;
}

int64_t num_compact_weights(const Module& model) {
  int64_t n = 0;
  for (const auto& [path, w] : named_compact_weights(model)) n += w->rows * w->cols;
  return n;
}

std::string QuantizeReport::str() const {
  constexpr double MiB = 1024.0 * 1024.0;
  std::string text = fmt::format("{} linear layers: {:.1f} MiB of f32 weights -> {:.1f} MiB", layers,
                                 f32_bytes / MiB, quantized_bytes / MiB);
  if (inference_head_bytes > 0) {
    text += fmt::format("; logits from a {} copy of the output head: {:.1f} MiB", inference_head_format,
                        inference_head_bytes / MiB);
  }
  return text;
}

QuantizeReport quantize_frozen_linears(Module& model, QuantFormat format, bool double_quant,
                                       const std::function<bool(const std::string&)>& include) {
  std::vector<std::pair<std::string, std::shared_ptr<Linear>>> chosen;
  for (const auto& [path, module] : model.named_modules()) {
    auto linear = std::dynamic_pointer_cast<Linear>(module);
    if (!linear || !linear->has_dense_weight() || !include(path)) continue;
    LORA_CHECK(!linear->weight.requires_grad() && !(linear->bias.defined() && linear->bias.requires_grad()),
               "quantize: '{}.weight' trains; a quantized base must be frozen (use LoRA, which freezes it; a full "
               "fine-tune needs the f32 weights)",
               path);
    // Checked before any layer changes, so that a refusal leaves the model whole.
    LORA_CHECK((format != QuantFormat::Q8_0 && format != QuantFormat::Q4_0) || linear->in_features() % kQuantBlock == 0,
               "quantize: {} stores rows in blocks of {} weights, but '{}' has {} input features (this model's "
               "layers need bf16 or nf4)",
               quant_format_name(format), kQuantBlock, path, linear->in_features());
    chosen.emplace_back(path, linear);
  }
  QuantizeReport report;
  if (format == QuantFormat::F32) return report;
  for (const auto& [path, linear] : chosen) {
    const size_t dot = path.rfind('.');
    Module& parent = dot == std::string::npos ? model : *model.module_at(path.substr(0, dot));
    auto q = std::make_shared<QuantizedLinear>(*linear, format, double_quant);
    report.layers += 1;
    report.f32_bytes += static_cast<size_t>(linear->weight.numel()) * 4;
    report.quantized_bytes += q->quantized->nbytes();
    parent.replace_child(dot == std::string::npos ? path : path.substr(dot + 1), q);
    linear->weight = Tensor();  // the f32 weight goes now, not when the old layer does
  }
  return report;
}

}  // namespace lora::nn
