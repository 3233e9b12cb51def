// TEMPORARY: SiLU, RMSNorm and RoPE composed from existing ops, until their fused kernels land in
// autograd/ops.h with the same signatures (this file is then deleted).
#pragma once

#include "autograd/ops.h"

namespace lora::ops {

// y = x * sigmoid(x) = x / (1 + e^-x)
inline Tensor silu(const Tensor& x) { return x / (ops::exp(-x) + 1.0); }

// y = x / sqrt(mean(x^2) + eps) * weight, over the last axis
inline Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6) {
  return x / ops::sqrt(ops::mean(ops::square(x), -1, true) + eps) * weight;
}

// x [B, T, H, D], cos/sin [T, D/2]: y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin (rotate-half layout)
inline Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t T = x.size(1), half = x.size(3) / 2;
  const Tensor c = ops::reshape(cos, {T, 1, half}), s = ops::reshape(sin, {T, 1, half});
  const Tensor x1 = ops::slice(x, 3, 0, half), x2 = ops::slice(x, 3, half, 2 * half);
  return ops::concat({x1 * c - x2 * s, x2 * c + x1 * s}, 3);
}

}  // namespace lora::ops
