// quantized_embedding: the row lookup of a frozen embedding table held in a compact format (core/quantized.h),
// as a GGUF file's quantized token_embd is kept (implemented in autograd/ops/embedding.cpp, beside the dense
// lookup).
#pragma once

#include <memory>

#include "core/quantized.h"

namespace lora::ops {

// out[..., :] = dequantize(weight[ids[...], :]): ids [...] (I32/I64) -> [..., C] f32, with weight [V, C]. Only
// the rows looked up are decoded; the table takes no gradient (it is frozen) and the ids none, so nothing is
// recorded for backward.
Tensor quantized_embedding(const std::shared_ptr<const QuantizedWeight>& weight, const Tensor& ids);

}  // namespace lora::ops
