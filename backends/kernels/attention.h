// Kernel contract of causal scaled-dot-product attention (autograd/ops/attention.cpp); implemented by
// backends/cpu/attention.cpp and backends/cuda/attention.cu.
//
// q, out [B, H, T, D]; k, v [B, Hkv, T, D] with H a multiple of Hkv (grouped-query attention: query head h
// reads kv head h / (H / Hkv); Hkv = H is plain multi-head attention); lse [B, H, T]. key_start: undefined, or
// I32 [B, T] with 0 <= key_start[b, t] <= t (packed segments): query t of batch row b sees keys
// [key_start[b, t], t] instead of [0, t].
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// out = softmax(q k^T * scale + mask) v; lse[b, h, t] = logsumexp of row t of the masked scores.
struct AttentionForward {
  static constexpr const char* name = "attention_forward";
  LORA_DEVICE_KERNELS(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, double scale,
                      Tensor& out, Tensor& lse);
};

// Recomputes the probabilities from q, k and lse (no T x T tensor is kept between forward and backward).
// Writes grad_q [B, H, T, D] and grad_k, grad_v [B, Hkv, T, D] (summed over the query heads of each group).
struct AttentionBackward {
  static constexpr const char* name = "attention_backward";
  LORA_DEVICE_KERNELS(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, const Tensor& out,
                      const Tensor& lse, const Tensor& grad_out, double scale, Tensor& grad_q, Tensor& grad_k,
                      Tensor& grad_v);
};

}  // namespace lora::kernels
