// quantized_linear: y = x W^T + b with W a quantized frozen weight (core/quantized.h), the base layer of
// QLoRA-style training (autograd/ops/quantized_linear.cpp).
#pragma once

#include <memory>

#include "core/quantized.h"

namespace lora::ops {

// Weight rows dequantized per tile: the f32 workspace is at most this many elements (4 MiB), or one row.
// Chosen by measurement (bench_train lora+nf4:1x256, GPT-2 small, 2 cores, alternating): a 1 MiB tile took
// 0.84-0.86 s per step, 4 MiB 0.72-0.77 s, 16 MiB 0.75 s, against 0.72 s on the f32 base. Each tile is one
// gemm, which packs x again; small tiles pay that and the threads' start-up more often.
inline constexpr int64_t kQuantizedTileElements = int64_t{1} << 20;

// x [..., in], weight [out, in] quantized, bias [out] or undefined -> [..., out]. The weight takes no
// gradient (it is frozen); x and the bias do, when they require one. Nothing is saved for backward: the
// input gradient reads only the weight, which the op holds.
Tensor quantized_linear(const Tensor& x, const std::shared_ptr<const QuantizedWeight>& weight,
                        const Tensor& bias = Tensor());

}  // namespace lora::ops
