// RotarySelfAttention: the projections, the rotation of q and k, attention and the output projection.
#include "nn/self_attention.h"

#include "autograd/ops.h"

namespace lora::nn {

RotarySelfAttention::RotarySelfAttention(const Options& o, Generator& gen) : o_(o) {
  LORA_CHECK(o.hidden > 0 && o.heads > 0 && o.kv_heads > 0 && o.head_dim > 0 && o.heads % o.kv_heads == 0,
             "attention: {} heads over {} key/value heads of {} for width {}", o.heads, o.kv_heads, o.head_dim,
             o.hidden);
  const int64_t q_width = o.heads * o.head_dim, kv_width = o.kv_heads * o.head_dim;
  q_proj = std::make_shared<Linear>(o.hidden, q_width, o.qkv_bias, gen);
  k_proj = std::make_shared<Linear>(o.hidden, kv_width, o.qkv_bias, gen);
  v_proj = std::make_shared<Linear>(o.hidden, kv_width, o.qkv_bias, gen);
  o_proj = std::make_shared<Linear>(q_width, o.hidden, o.o_bias, gen);
  dropout_seed_ = gen.next_u64();
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  register_module("o_proj", o_proj);
  register_rng_counter("attention_dropout_calls", dropout_calls_);
}

Tensor RotarySelfAttention::forward(const Tensor& x, const AttentionLayout& layout, KVCache::Layer* cache,
                                    const RotaryTables& rotary) {
  const int64_t B = x.size(0), T = x.size(1), H = o_.heads, H_kv = o_.kv_heads, D = o_.head_dim;
  // [B, T, heads * D] -> [B, T, heads, D] (rotated) -> [B, heads, T, D]
  auto heads = [&](const Tensor& projected, int64_t n, bool rotate) {
    Tensor h = ops::reshape(projected, {B, T, n, D});
    if (rotate) h = apply_rotary(h, rotary);
    return ops::permute(h, {0, 2, 1, 3});
  };
  const Tensor q = heads(q_proj->forward(x), H, true);
  const Tensor k = heads(k_proj->forward(x), H_kv, true);
  const Tensor v = heads(v_proj->forward(x), H_kv, false);
  const double p = is_training() ? o_.dropout : 0.0;
  const uint64_t seed = p > 0 ? splitmix64(dropout_seed_ ^ (0x9E3779B97F4A7C15ull * ++dropout_calls_)) : 0;
  Tensor y = causal_self_attention(q, k, v, layout, cache, p, seed);  // [B, H, T, D]
  return o_proj->forward(ops::reshape(ops::permute(y, {0, 2, 1, 3}), {B, T, H * D}));
}

}  // namespace lora::nn
