// Transformer layers: MLP, causal self-attention with a KV cache, and the residual block.
#include "nn/transformer.h"

#include <cmath>

#include "backends/backend.h"

namespace lora::nn {

// ---------------------------------------------------------------------------------------------------
// MLP

MLP::MLP(int64_t n_embd, double p, Generator& gen) {
  c_fc = std::make_shared<Linear>(n_embd, 4 * n_embd, true, gen);
  c_proj = std::make_shared<Linear>(4 * n_embd, n_embd, true, gen);
  dropout = std::make_shared<Dropout>(p, gen.next_u64());
  register_module("c_fc", c_fc);
  register_module("c_proj", c_proj);
  register_module("dropout", dropout);  // no parameters, but it must follow train()/eval()
}

Tensor MLP::forward(const Tensor& x) { return dropout->forward(c_proj->forward(ops::gelu(c_fc->forward(x)))); }

// ---------------------------------------------------------------------------------------------------
// CausalSelfAttention

CausalSelfAttention::CausalSelfAttention(int64_t n_embd, int64_t n_head, double p, Generator& gen)
    : n_embd_(n_embd), n_head_(n_head) {
  LORA_CHECK(n_head > 0 && n_embd % n_head == 0, "CausalSelfAttention: n_embd {} is not divisible by n_head {}", n_embd,
             n_head);
  c_attn = std::make_shared<Linear>(n_embd, 3 * n_embd, true, gen);
  c_proj = std::make_shared<Linear>(n_embd, n_embd, true, gen);
  resid_dropout = std::make_shared<Dropout>(p, gen.next_u64());
  register_module("c_attn", c_attn);
  register_module("c_proj", c_proj);
  register_module("resid_dropout", resid_dropout);
}

Tensor CausalSelfAttention::forward(const Tensor& x, KVCache* cache) {
  LORA_CHECK(x.rank() == 3 && x.size(2) == n_embd_, "attention: input {} is not [B, T, {}]", x.shape().str(), n_embd_);
  const int64_t B = x.size(0), T = x.size(1), C = n_embd_, H = n_head_, D = C / H;
  Tensor qkv = c_attn->forward(x);  // [B, T, 3C]
  // [B, T, C] slice -> [B, T, H, D] -> [B, H, T, D]
  auto head_view = [&](int which) {
    Tensor part = ops::slice(qkv, 2, which * C, (which + 1) * C);
    return ops::permute(ops::reshape(part, {B, T, H, D}), {0, 2, 1, 3});
  };
  Tensor q = head_view(0), k = head_view(1), v = head_view(2);
  Tensor y = cache ? attend_cached(q, k, v, *cache) : ops::causal_attention(q, k, v);  // [B, H, T, D]
  y = ops::reshape(ops::permute(y, {0, 2, 1, 3}), {B, T, C});
  return resid_dropout->forward(c_proj->forward(y));
}

Tensor CausalSelfAttention::attend_cached(const Tensor& q, const Tensor& k, const Tensor& v, KVCache& cache) {
  LORA_CHECK(!GradMode::is_enabled() || !q.requires_grad(), "attention: the KV cache is for inference (use NoGradGuard)");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  LORA_CHECK(cache.k.defined(), "attention: the KV cache is not allocated");
  const int64_t capacity = cache.k.size(2);
  LORA_CHECK(cache.k.size(0) == B, "attention: the KV cache holds batch {}, input has {}", cache.k.size(0), B);
  LORA_CHECK(cache.length + T <= capacity, "attention: {} cached + {} new tokens exceed the context of {}", cache.length,
             T, capacity);
  // Append k and v at positions [length, length + T).
  Backend& be = backend_for(q);
  be.copy_block(k, cache.k, B * H, T, capacity, D, 0, cache.length, T, false);
  be.copy_block(v, cache.v, B * H, T, capacity, D, 0, cache.length, T, false);
  const int64_t start = cache.length;
  cache.length += T;
  if (start == 0) return ops::causal_attention(q, k, v);  // the prompt: plain causal attention
  LORA_CHECK(T == 1, "attention: after the prompt, the KV cache takes one token at a time (got {})", T);
  // One query against every cached key: no mask needed.
  Tensor keys = ops::slice(cache.k, 2, 0, cache.length);    // [B, H, L, D]
  Tensor values = ops::slice(cache.v, 2, 0, cache.length);  // [B, H, L, D]
  Tensor scores = ops::matmul(q, keys, false, true) * (1.0 / std::sqrt(static_cast<double>(D)));  // [B, H, 1, L]
  return ops::matmul(ops::softmax(scores), values);                                               // [B, H, 1, D]
}

// ---------------------------------------------------------------------------------------------------
// TransformerBlock

TransformerBlock::TransformerBlock(int64_t n_embd, int64_t n_head, double p, double eps, Generator& gen) {
  ln_1 = std::make_shared<LayerNorm>(n_embd, eps);
  attn = std::make_shared<CausalSelfAttention>(n_embd, n_head, p, gen);
  ln_2 = std::make_shared<LayerNorm>(n_embd, eps);
  mlp = std::make_shared<MLP>(n_embd, p, gen);
  register_module("ln_1", ln_1);
  register_module("attn", attn);
  register_module("ln_2", ln_2);
  register_module("mlp", mlp);
}

Tensor TransformerBlock::forward(const Tensor& x, KVCache* cache) {
  Tensor h = x + attn->forward(ln_1->forward(x), cache);
  return h + mlp->forward(ln_2->forward(h));
}

}  // namespace lora::nn
