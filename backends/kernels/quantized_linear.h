// Kernel contract of the matmul with a quantized frozen weight (autograd/ops/quantized_linear.cpp; the
// formats are core/quantized.h); implemented by backends/cpu/quantized_linear.cpp and
// backends/cuda/quantized_linear.cu.
//
// W [out, in] is never formed whole: the kernels dequantize it a tile of rows at a time into `tile`
// [tile_rows, in] (allocated by the op, the only f32 copy of W that exists) and run a gemm on that tile.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/quantized.h"

namespace lora::kernels {

// x [rows, in] -> y [rows, out] (written): for each tile of weight rows [j0, j0 + t):
//   tile = dequantize(W[j0 : j0 + t, :])            [t, in]
//   y[:, j0 : j0 + t] = x tile^T                     (a gemm writing a column block of y, ld = out)
// x, tile and y share one dtype: f32 (both devices) or f64 (the CPU, for gradient checks). Where
// needs_tile(x) is false, tile may be undefined (the kernel does not use one).
struct QuantizedLinearForward {
  static constexpr const char* name = "quantized_linear_forward";
  LORA_DEVICE_KERNELS(const Tensor& x, const QuantizedWeight& w, Tensor& tile, Tensor& y);
  // False for up to kSkinnyCrossover rows of f32 x on the CPU (and on the meta device, which predicts the
  // CPU's memory): the skinny product reads W once and dequantizes it in registers
  // (backends/cpu/skinny_matmul.h), so a decoding step asks for no tile.
  static bool needs_tile(const Tensor& x);
};

// grad_y [rows, out] -> grad_x [rows, in] (written) = grad_y W = sum over tiles of
//   grad_y[:, j0 : j0 + t] tile                       (beta = 0 on the first tile, 1 after)
struct QuantizedLinearBackward {
  static constexpr const char* name = "quantized_linear_backward";
  LORA_DEVICE_KERNELS(const Tensor& grad_y, const QuantizedWeight& w, Tensor& tile, Tensor& grad_x);
};

// ids [N] (I32 or I64) -> out [N, in] (written): out[i] = dequantize(W[ids[i], :]), the lookup of a frozen
// embedding table held compact (autograd/ops/quantized_embedding.h). out is f32 (both devices) or f64 (the
// CPU); an id outside [0, out rows of W) is a lora::Error, checked before anything is written.
struct QuantizedGatherRows {
  static constexpr const char* name = "quantized_gather_rows";
  LORA_DEVICE_KERNELS(const QuantizedWeight& w, const Tensor& ids, Tensor& out);
};

// Rows [row0, row0 + count) of W into out [count, in] (f32): what the matmuls do per tile, exposed for the
// parity test of the CUDA dequantizer.
struct QuantizedDequantize {
  static constexpr const char* name = "quantized_dequantize";
  LORA_DEVICE_KERNELS(const QuantizedWeight& w, int64_t row0, int64_t count, Tensor& out);
};

}  // namespace lora::kernels
