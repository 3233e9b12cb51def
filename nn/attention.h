// Causal self-attention over already-projected heads, with a KV cache for incremental decoding and
// grouped-query attention (fewer key/value heads than query heads). Models own their projections (GPT-2's
// fused c_attn, Llama's q_proj/k_proj/v_proj) and positional scheme (learned, rotary); this is the part
// they share.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace lora::nn {

// One batch row of a decode step over a pool of sequences (serve/decode_engine.h): the row's token is
// sequence `slot` of the cache, at `position` (the number of tokens that sequence has cached).
struct CacheRow {
  int64_t slot = 0, position = 0;
};

// Keys and values of the tokens seen so far, one pair per layer: [B, H_kv, capacity, D] each. `length`
// tokens are cached; the next forward pass writes its tokens at positions [length, length + T), and the
// model advances `length` once every layer has written (advance()).
//
// A pool of sequences decoded together, each at its own position, sets `rows` instead (set_rows): then a
// forward pass takes one token per batch row, row b writes and reads cache row rows[b].slot at
// rows[b].position, and `length` is not used.
struct KVCache {
  struct Layer {
    Tensor k, v;
    std::shared_ptr<const std::vector<CacheRow>> rows;  // the cache's rows (null: one shared length)
  };
  std::vector<Layer> layers;
  int64_t length = 0;
  std::shared_ptr<const std::vector<CacheRow>> rows;

  // The rows of the next forward pass (empty: back to one shared length).
  void set_rows(std::vector<CacheRow> batch_rows);
  bool ragged() const { return rows != nullptr; }
  // Checks that rows fit: one per batch row, slots inside the cache, positions inside its capacity.
  void check_rows(int64_t batch, const char* model) const;

  // Zeroed-length caches for `n_layer` layers of batch x kv_heads x capacity x head_dim floats.
  static KVCache allocate(int64_t n_layer, int64_t batch, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                          Device device);
  int64_t batch() const { return layers.empty() ? 0 : layers[0].k.size(0); }
  int64_t capacity() const { return layers.empty() ? 0 : layers[0].k.size(2); }
  // Checks that `tokens` more fit, naming `model` in the error.
  void check_room(int64_t tokens, int64_t batch, const char* model) const;
  void advance(int64_t tokens) { length += tokens; }
  void clear() { length = 0; }
};

// softmax(q k^T * scale + causal mask) v for q [B, H, T, D] and k, v [B, H_kv, T, D] (H a multiple of H_kv:
// query head h reads key/value head h / (H / H_kv)); returns [B, H, T, D].
//
// Without a cache this is one fused causal attention. With `cache`, the new keys and values are first
// written into `cache` at positions [start, start + T) and the queries attend over all start + T cached
// positions (query t sees positions <= start + t): the prompt (start 0) takes the fused path, later
// chunks (one token at a time while generating) attend over the cache. The cache is for inference only.
//
// dropout_p > 0 drops attention probabilities (training only; the caller passes 0 in eval mode), with the
// mask drawn from dropout_seed. The fused kernel has no dropout, so this takes the composed route
// (scores, mask, softmax, dropout, matmul: a [B, H, T, T] tensor is saved per layer).
Tensor causal_self_attention(const Tensor& q, const Tensor& k, const Tensor& v, KVCache::Layer* cache = nullptr,
                             int64_t start = 0, double dropout_p = 0.0, uint64_t dropout_seed = 0);

}  // namespace lora::nn
