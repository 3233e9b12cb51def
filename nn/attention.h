// Causal self-attention over already-projected heads: the KV cache (a pool of sequences, each at its own
// length), grouped-query attention (fewer key/value heads than query heads) and packed segments (a row
// holding several examples that must not see each other). Models own their projections (GPT-2's fused
// c_attn, Llama's q_proj/k_proj/v_proj) and positional scheme (learned, rotary); this is the part they share.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lora::nn {

// Keys and values of the tokens each of `slots` sequences has seen, one pair per layer:
// [slots, H_kv, capacity, D] each. Slot s holds lengths[s] tokens, at cache positions [0, lengths[s]).
// A forward pass (models/forward_batch.h) appends each batch row's tokens to the slot that row names and
// advances that slot's length once every layer has written. The plain cache for B sequences decoded
// together is a cache of B slots with row b in slot b; a pool for continuous batching has more slots than
// any one batch uses.
struct KVCache {
  struct Layer {
    Tensor k, v;  // [slots, H_kv, capacity, D]
  };
  std::vector<Layer> layers;
  std::vector<int64_t> lengths;  // [slots]: tokens cached per slot

  // Empty caches for `n_layer` layers of slots x kv_heads x capacity x head_dim floats.
  static KVCache allocate(int64_t n_layer, int64_t slots, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                          Device device);
  int64_t slots() const { return static_cast<int64_t>(lengths.size()); }
  int64_t capacity() const { return layers.empty() ? 0 : layers[0].k.size(2); }
  int64_t length(int64_t slot = 0) const;
  void clear();              // every slot empty
  void clear(int64_t slot);  // one slot empty, for the next sequence that takes it
};

// What every attention layer of one forward pass needs besides its q, k and v: where the rows' keys and
// values go in the KV cache, and which keys each query may see. Built once per pass by the layer runner
// (models/layer_runner.h); the same for every layer.
struct AttentionLayout {
  // With a KV cache: row b writes slot slots[b] at positions [starts[b], starts[b] + T) and its query t
  // attends over that slot's positions [0, starts[b] + t]. Empty without a cache.
  std::vector<int64_t> slots, starts;
  bool plain = false;  // slots are 0..B-1 of a B-slot cache and every start is equal: one copy per layer
  // Packed segments (no cache): query (b, t) sees keys [key_start[b, t], t] of its row, the tokens of its
  // own segment. key_start_host is [B * T]; key_start is the same as I32 [B, T] on the model's device.
  // Empty / undefined: every query sees its row from position 0.
  std::vector<int32_t> key_start_host;
  Tensor key_start;

  bool cached() const { return !slots.empty(); }
  bool segmented() const { return key_start.defined(); }
};

// softmax(q k^T * scale + mask) v for q [B, H, T, D] and k, v [B, H_kv, T, D] (H a multiple of H_kv:
// query head h reads key/value head h / (H / H_kv)); returns [B, H, T, D]. The mask is causal, and also
// hides other segments when the layout has them.
//
// Without a cache this is one fused causal attention (differentiable). With `cache` (inference only), the
// new keys and values are first written into it as `layout` says and the queries attend over their slot's
// cached positions: a prompt (start 0) takes the fused path, one token per row the decode kernel over
// the pool, longer chunks after cached tokens the composed ops.
//
// dropout_p > 0 drops attention probabilities (training only; the caller passes 0 in eval mode), with the
// mask drawn from dropout_seed. The fused kernel has no dropout, so this takes the composed route
// (scores, mask, softmax, dropout, matmul: a [B, H, T, T] tensor is saved per layer).
Tensor causal_self_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionLayout& layout,
                             KVCache::Layer* cache = nullptr, double dropout_p = 0.0, uint64_t dropout_seed = 0);

// The first key each query of a packed row may see: key_start[b, t] = the first position of the run of
// equal segment ids that holds t. segments [B * T], row-major. A segment id that appears again after
// another one in the same row (so that its tokens are not one run) is refused, naming the row and position.
std::vector<int32_t> segment_key_starts(const std::vector<int32_t>& segments, int64_t B, int64_t T);

}  // namespace lora::nn
