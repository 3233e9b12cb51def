// Transformer layers of the GPT-2 family: MLP, causal self-attention (with a KV cache for generation),
// and the pre-LayerNorm residual block. Child names follow Hugging Face's GPT-2 (c_attn, c_proj, c_fc,
// ln_1, ln_2, attn, mlp) so parameter names match published checkpoints.
#pragma once

#include "nn/layers.h"
#include "nn/linear.h"

namespace lora::nn {

// Feed-forward: dropout(c_proj(gelu(c_fc(x)))), hidden width 4 C.
class MLP : public Layer {
 public:
  MLP(int64_t n_embd, double dropout, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<Layer> c_fc;    // Linear(C, 4C), or a LoRA wrapper of it
  std::shared_ptr<Layer> c_proj;  // Linear(4C, C)
  std::shared_ptr<Dropout> dropout;
};

// Keys and values of the tokens seen so far, for incremental decoding: [B, H, capacity, D].
struct KVCache {
  Tensor k, v;
  int64_t length = 0;
};

// Multi-head causal self-attention with a fused q,k,v projection:
//   q, k, v = split(c_attn(x))      [B, T, C] each, viewed as [B, H, T, D]
//   y = softmax(q k^T / sqrt(D) + causal mask) v,  out = dropout(c_proj(y))
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t n_embd, int64_t n_head, double dropout, Generator& gen);
  // With a cache (inference only): the first call fills it with a prompt of any length, later calls
  // take one new token at a time and attend over everything cached.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr);
  int64_t n_head() const { return n_head_; }

  std::shared_ptr<Layer> c_attn;  // Linear(C, 3C): q, k, v in one projection
  std::shared_ptr<Layer> c_proj;  // Linear(C, C)
  std::shared_ptr<Dropout> resid_dropout;

 private:
  Tensor attend_cached(const Tensor& q, const Tensor& k, const Tensor& v, KVCache& cache);
  int64_t n_embd_, n_head_;
};

// Pre-LayerNorm residual block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)).
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t n_embd, int64_t n_head, double dropout, double layer_norm_eps, Generator& gen);
  Tensor forward(const Tensor& x, KVCache* cache = nullptr);

  std::shared_ptr<LayerNorm> ln_1;
  std::shared_ptr<CausalSelfAttention> attn;
  std::shared_ptr<LayerNorm> ln_2;
  std::shared_ptr<MLP> mlp;
};

}  // namespace lora::nn
