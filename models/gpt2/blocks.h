// GPT-2's transformer block: causal self-attention with a fused q,k,v projection, the GELU MLP, and the
// pre-LayerNorm residual block. Child names follow Hugging Face's GPT-2 (c_attn, c_proj, c_fc, ln_1, ln_2,
// attn, mlp) so parameter names match published checkpoints.
#pragma once

#include "models/gpt2/config.h"
#include "models/layer_runner.h"
#include "nn/attention.h"
#include "nn/layers.h"
#include "nn/linear.h"

namespace lora::gpt2 {

// Feed-forward: dropout(c_proj(gelu(c_fc(x)))), hidden width n_inner (4 C by default).
class GPT2MLP : public nn::Module {
 public:
  GPT2MLP(const GPT2Config& config, Generator& gen);
  Tensor forward(const Tensor& x);

  std::shared_ptr<nn::Layer> c_fc;    // Linear(C, n_inner), or a LoRA wrapper of it
  std::shared_ptr<nn::Layer> c_proj;  // Linear(n_inner, C)
  std::shared_ptr<nn::Dropout> dropout;
};

// Multi-head causal self-attention:
//   q, k, v = split(c_attn(x))      [B, T, C] each, viewed as [B, H, T, D]
//   y = softmax(q k^T / sqrt(D) + causal mask) v,  out = resid_dropout(c_proj(y))
class GPT2Attention : public nn::Module {
 public:
  GPT2Attention(const GPT2Config& config, Generator& gen);
  Tensor forward(const Tensor& x, const models::BlockContext& ctx = {});

  std::shared_ptr<nn::Layer> c_attn;  // Linear(C, 3C): q, k, v in one projection
  std::shared_ptr<nn::Layer> c_proj;  // Linear(C, C)
  std::shared_ptr<nn::Dropout> resid_dropout;

 private:
  int64_t n_embd_, n_head_;
  double attn_pdrop_;
  uint64_t attn_seed_, attn_calls_ = 0;
};

// Pre-LayerNorm residual block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)).
class GPT2Block : public models::DecoderBlock {
 public:
  GPT2Block(const GPT2Config& config, Generator& gen);
  Tensor forward(const Tensor& x, const models::BlockContext& ctx) override;

  std::shared_ptr<nn::LayerNorm> ln_1;
  std::shared_ptr<GPT2Attention> attn;
  std::shared_ptr<nn::LayerNorm> ln_2;
  std::shared_ptr<GPT2MLP> mlp;
};

}  // namespace lora::gpt2
