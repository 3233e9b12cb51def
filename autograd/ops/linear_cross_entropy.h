// linear_cross_entropy: a language-model head fused with its loss (autograd/ops/linear_cross_entropy.cpp).
#pragma once

#include <memory>

#include "core/quantized.h"
#include "core/tensor.h"

namespace lora::ops {

// mean over rows with target != ignore_index of cross_entropy(x W^T, targets): x [..., C], weight [V, C],
// targets [...] (I32/I64) -> shape []. The same value and gradients as cross_entropy(linear(x, weight),
// targets), with one [N, V] buffer instead of two: backward turns the saved logits into their gradient in
// place.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t ignore_index = -100);

// The same with a frozen head held in a compact format (a GGUF file's quantized output head, or its token
// embedding when tied): the logits and the input gradient go through the dequantizing matmul of
// ops::quantized_linear, a tile of the head at a time; the head takes no gradient. x is f32 (f64 on the CPU).
Tensor linear_cross_entropy(const Tensor& x, const std::shared_ptr<const QuantizedWeight>& weight,
                            const Tensor& targets, int64_t ignore_index = -100);

}  // namespace lora::ops
