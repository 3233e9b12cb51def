// Kernel contract of decode attention over a pool of sequences (nn/attention.cpp, for continuous batching
// in serve/): one query token per batch row, each row attending over its own sequence of the KV pool.
// Implemented by backends/cpu/decode_attention.cpp and backends/cuda/decode_attention.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// q [B, H, D]; k_pool, v_pool [S, H_kv, capacity, D] (H a multiple of H_kv, G = H / H_kv); rows I64 [B, 2]
// holds (slot, position) of each row: its keys and values are k_pool[slot, h / G, 0..position] (position
// + 1 of them, its own token's already written). For every row b and head h, with L = position + 1:
//   s_j = scale * q[b, h] . k_pool[slot, h / G, j]        j < L
//   out[b, h] = sum_j softmax(s)_j v_pool[slot, h / G, j]                      (out [B, H, D])
struct DecodeAttention {
  static constexpr const char* name = "decode_attention";
  LORA_DEVICE_KERNELS(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool, const Tensor& rows, double scale,
                      Tensor& out);
};

}  // namespace lora::kernels
