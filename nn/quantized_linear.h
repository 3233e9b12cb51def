// QuantizedLinear: a frozen Linear whose weight is held in a compact format (core/quantized.h) and
// multiplied through ops::quantized_linear; the base of QLoRA-style training. quantize_frozen_linears
// swaps a model's frozen linear layers for it, LoRA wrappers' base layers included.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops/quantized_linear.h"
#include "nn/linear.h"

namespace lora::nn {

class QuantizedLinear : public Linear {
 public:
  // Quantizes `layer`'s weight on its device; the bias stays f32 (frozen). The layer must be frozen.
  QuantizedLinear(const Linear& layer, QuantFormat format, bool double_quant = false);
  // A layer over a weight already in a compact format (built by a loader straight from a file's blocks);
  // `bias` (f32 [out], or undefined) is registered frozen.
  QuantizedLinear(std::shared_ptr<const QuantizedWeight> weight, Tensor bias);
  Tensor forward(const Tensor& x) override { return ops::quantized_linear(x, quantized, bias); }

  std::shared_ptr<const QuantizedWeight> quantized;

 protected:
  // The weight moves with the module (Module::to), as a parameter would.
  void on_to(Device device) override;
};

// The compact weight of a layer that is a QuantizedLinear; null for any other layer (or none).
inline std::shared_ptr<const QuantizedWeight> compact_weight_of(const std::shared_ptr<Linear>& layer) {
  const auto q = std::dynamic_pointer_cast<QuantizedLinear>(layer);
  return q ? q->quantized : nullptr;
}

// Every weight below `model` held in a compact format, by module path: the QuantizedLinear layers and the
// compact embedding tables (nn/layers.h). They are not parameters, so what identifies a base must list them.
std::vector<std::pair<std::string, std::shared_ptr<const QuantizedWeight>>> named_compact_weights(const Module& model);
// The weights those hold (rows x cols each): with num_parameters(), the model's size whatever its base's format.
int64_t num_compact_weights(const Module& model);

struct QuantizeReport {
  int64_t layers = 0;
  size_t f32_bytes = 0, quantized_bytes = 0;  // of the weights replaced
  // A compact copy of the output head that decoding reads its logits from (beside the f32 head, which the
  // embedding shares): not one of the layers above.
  size_t inference_head_bytes = 0;
  std::string inference_head_format;
  // "48 linear layers: 324.0 MiB of f32 weights -> 45.6 MiB", then "; logits from a q8_0 copy of the output
  // head: 39.1 MiB" when there is one.
  std::string str() const;
};

// Replaces every Linear of `model` whose path `include` accepts by a QuantizedLinear (the weight's f32
// storage is released when nothing else holds it). Throws lora::Error before changing anything when one of
// them has a weight that trains: a quantized weight cannot be updated (use LoRA, which freezes the base).
// The f32 format changes nothing.
QuantizeReport quantize_frozen_linears(Module& model, QuantFormat format, bool double_quant,
                                       const std::function<bool(const std::string&)>& include);

}  // namespace lora::nn
