// Kernel contract of the embedding lookup (autograd/ops/embedding.cpp); implemented by
// backends/cpu/embedding.cpp and backends/cuda/embedding.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// weight [V, C], ids [N] (I32 or I64) -> out [N, C]: out[i] = weight[ids[i]]. An id outside [0, V) is a
// lora::Error.
struct EmbeddingForward {
  static constexpr const char* name = "embedding_forward";
  LORA_DEVICE_KERNELS(const Tensor& weight, const Tensor& ids, Tensor& out);
};

// grad_weight[ids[i]] += grad_out[i] (scatter-add: repeated ids add up). Ids are checked before anything is
// written.
struct EmbeddingBackward {
  static constexpr const char* name = "embedding_backward";
  LORA_DEVICE_KERNELS(const Tensor& ids, const Tensor& grad_out, Tensor& grad_weight);
};

}  // namespace lora::kernels
