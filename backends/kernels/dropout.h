// Kernel contract of dropout (autograd/ops/dropout.cpp); implemented by backends/cpu/dropout.cpp and
// backends/cuda/dropout.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// y[i] = x[i] / (1 - p) when counter_uniform(seed, i) >= float(p), else 0 (compared in float on every device,
// so every device keeps the same elements). Forward applies it to x, backward to grad_y with the same seed:
// the mask is regenerated, never stored.
struct DropoutMask {
  static constexpr const char* name = "dropout";
  LORA_DEVICE_KERNELS(const Tensor& x, Tensor& y, double p, uint64_t seed);
};

}  // namespace lora::kernels
