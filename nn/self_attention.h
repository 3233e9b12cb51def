// RotarySelfAttention: multi-head self-attention with separate q, k, v and o projections (named q_proj,
// k_proj, v_proj, o_proj as Hugging Face names them), grouped-query heads and rotary position embeddings:
// the attention of Llama and of the architectures built like it (Mistral, Qwen2, Gemma).
//
//   q = q_proj(x), k = k_proj(x), v = v_proj(x)     over H, H_kv and H_kv heads of head_dim
//   q, k rotated by the pass's tables; y = attention(q, k, v) (nn/attention.h); out = o_proj(y)
#pragma once

#include <memory>

#include "core/random.h"
#include "nn/attention.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/rotary.h"

namespace lora::nn {

class RotarySelfAttention : public Module {
 public:
  struct Options {
    int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0;
    bool qkv_bias = false, o_bias = false;
    double dropout = 0.0;  // on the attention probabilities, in training
  };
  RotarySelfAttention(const Options& options, Generator& gen);
  // x [B, T, hidden] -> [B, T, hidden]; `layout` and `cache` as nn::causal_self_attention takes them.
  Tensor forward(const Tensor& x, const AttentionLayout& layout, KVCache::Layer* cache, const RotaryTables& rotary);

  std::shared_ptr<Layer> q_proj, k_proj, v_proj, o_proj;

 private:
  Options o_;
  uint64_t dropout_seed_, dropout_calls_ = 0;
};

}  // namespace lora::nn
