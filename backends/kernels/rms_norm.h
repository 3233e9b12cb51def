// Kernel contract of RMS normalisation over the last axis (autograd/ops/rms_norm.cpp, Llama's RMSNorm);
// implemented by backends/cpu/rms_norm.cpp and backends/cuda/rms_norm.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// x [N, C], weight [C] -> y [N, C] and rstd [N] (saved for backward):
// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps), in the dtype of x.
struct RmsNormForward {
  static constexpr const char* name = "rms_norm_forward";
  LORA_DEVICE_KERNELS(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd);
};

// With xhat = x * rstd and gw = grad_y * weight:
//   grad_x = rstd * (gw - xhat * mean(gw * xhat))      (written; needs weight)
//   grad_weight += sum over rows of grad_y * xhat        (accumulated)
// Either output may be undefined (not computed); weight may be undefined when grad_x is.
struct RmsNormBackward {
  static constexpr const char* name = "rms_norm_backward";
  LORA_DEVICE_KERNELS(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& grad_x,
                      Tensor& grad_weight);
};

}  // namespace lora::kernels
