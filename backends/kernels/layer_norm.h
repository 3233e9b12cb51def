// Kernel contract of layer normalisation over the last axis (autograd/ops/layer_norm.cpp); implemented by
// backends/cpu/layer_norm.cpp and backends/cuda/layer_norm.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// x [N, C], weight and bias [C] -> y [N, C], and mean, rstd [N] (saved for backward):
// y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) (biased variance).
struct LayerNormForward {
  static constexpr const char* name = "layer_norm_forward";
  LORA_DEVICE_KERNELS(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, Tensor& y, Tensor& mean,
                      Tensor& rstd);
};

// With xhat = (x - mean) * rstd: grad_x = rstd * (g w - mean(g w) - xhat * mean(g w xhat)) (written);
// grad_weight += sum over rows of g * xhat, grad_bias += sum over rows of g (accumulated).
// Any of the three outputs may be undefined (not computed).
struct LayerNormBackward {
  static constexpr const char* name = "layer_norm_backward";
  LORA_DEVICE_KERNELS(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& mean,
                      const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias);
};

}  // namespace lora::kernels
