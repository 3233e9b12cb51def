// Kernel contract of SwiGLU's gating, the Llama family's MLP (autograd/ops/swiglu.cpp); implemented by
// backends/cpu/swiglu.cpp and backends/cuda/swiglu.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// gate, up [n] (same shape, contiguous) -> y [n]:
//   y = silu(gate) * up,   silu(x) = x sigmoid(x) = x / (1 + e^-x)
// with the elementwise table's Silu formula, so that y is ops::silu(gate) * up bit for bit.
struct SwigluForward {
  static constexpr const char* name = "swiglu_forward";
  LORA_DEVICE_KERNELS(const Tensor& gate, const Tensor& up, Tensor& y);
};

// With s = sigmoid(gate):
//   grad_gate = grad_y * up * s (1 + gate (1 - s))     (needs up)
//   grad_up   = grad_y * silu(gate)
// in the order the composed ops round them (grad_y * up first, then Silu's derivative), so the gradients are
// those of ops::silu(gate) * up bit for bit. Either output may be undefined (not computed); up may be undefined
// when grad_gate is.
struct SwigluBackward {
  static constexpr const char* name = "swiglu_backward";
  LORA_DEVICE_KERNELS(const Tensor& grad_y, const Tensor& gate, const Tensor& up, Tensor& grad_gate, Tensor& grad_up);
};

}  // namespace lora::kernels
