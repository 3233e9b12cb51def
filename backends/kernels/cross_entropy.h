// Kernel contract of the fused cross-entropy over logits [N, V] with integer targets [N]
// (autograd/ops/cross_entropy.cpp, linear_cross_entropy.cpp); implemented by backends/cpu/cross_entropy.cpp
// and backends/cuda/cross_entropy.cu. Rows whose target is ignore_index count for nothing; a target outside
// [0, V) that is not ignore_index is a lora::Error.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// lse[i] = logsumexp(logits[i]) (saved for backward), losses[i] = lse[i] - logits[i, target[i]] (0 if ignored).
struct CrossEntropyForward {
  static constexpr const char* name = "cross_entropy_forward";
  LORA_DEVICE_KERNELS(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& losses, Tensor& lse);
};

// grad_logits[i] = grad_loss * scale * (softmax(logits[i]) - onehot(target[i])), 0 for ignored rows.
// grad_loss is a one-element tensor (read on the device). grad_logits may be logits itself (each element
// is read before it is written): the fused LM head + loss turns its saved logits into their gradient.
struct CrossEntropyBackward {
  static constexpr const char* name = "cross_entropy_backward";
  LORA_DEVICE_KERNELS(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& grad_loss,
                      double scale, int64_t ignore_index, Tensor& grad_logits);
};

}  // namespace lora::kernels
