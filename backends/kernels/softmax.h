// Kernel contract of softmax and log_softmax over the last axis (autograd/ops/softmax.cpp); implemented by
// backends/cpu/softmax.cpp and backends/cuda/softmax.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// softmax: y = exp(x - max) / sum(exp(x - max));  log (log_softmax): y = x - logsumexp(x). x, y: one shape.
struct SoftmaxForward {
  static constexpr const char* name = "softmax_forward";
  LORA_DEVICE_KERNELS(const Tensor& x, Tensor& y, bool log);
};

// softmax: grad_x = y * (grad_y - sum(grad_y * y));  log: grad_x = grad_y - exp(y) * sum(grad_y).
// grad_x may be grad_y (each row's sum is read first).
struct SoftmaxBackward {
  static constexpr const char* name = "softmax_backward";
  LORA_DEVICE_KERNELS(const Tensor& y, const Tensor& grad_y, Tensor& grad_x, bool log);
};

}  // namespace lora::kernels
