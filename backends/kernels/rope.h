// Kernel contract of the rotary position embedding (autograd/ops/rope.cpp); implemented by
// backends/cpu/rope.cpp and backends/cuda/rope.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// x, y [B, T, H, D] (D even), cos, sin [T, D/2]; rotate-half convention (Hugging Face Llama, GPT-NeoX). For
// i < D/2 at time t, with c = cos[t, i], s = sin[t, i] (s = -sin[t, i] when inverse):
//   y[i] = x[i] c - x[i + D/2] s,   y[i + D/2] = x[i + D/2] c + x[i] s.
// The inverse rotation is the backward (the rotation is orthogonal: its transpose is its inverse). y may be x.
struct Rope {
  static constexpr const char* name = "rope";
  LORA_DEVICE_KERNELS(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& y);
};

}  // namespace lora::kernels
