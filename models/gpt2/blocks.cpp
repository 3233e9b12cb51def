// GPT-2's MLP, attention and residual block.
#include "models/gpt2/blocks.h"

namespace lora::gpt2 {

// ---------------------------------------------------------------------------------------------------
// GPT2MLP

GPT2MLP::GPT2MLP(const GPT2Config& c, Generator& gen) {
  c_fc = std::make_shared<nn::Linear>(c.n_embd, c.mlp_width(), true, gen);
  c_proj = std::make_shared<nn::Linear>(c.mlp_width(), c.n_embd, true, gen);
  dropout = std::make_shared<nn::Dropout>(c.resid_pdrop, gen.next_u64());
  register_module("c_fc", c_fc);
  register_module("c_proj", c_proj);
  register_module("dropout", dropout);  // no parameters, but it must follow train()/eval()
}

Tensor GPT2MLP::forward(const Tensor& x) {
  return dropout->forward(c_proj->forward(ops::gelu(c_fc->forward(x))));
}

// ---------------------------------------------------------------------------------------------------
// GPT2Attention

GPT2Attention::GPT2Attention(const GPT2Config& c, Generator& gen)
    : n_embd_(c.n_embd), n_head_(c.n_head), attn_pdrop_(c.attn_pdrop) {
  LORA_CHECK(c.n_head > 0 && c.n_embd % c.n_head == 0, "GPT-2 attention: n_embd {} is not divisible by n_head {}",
             c.n_embd, c.n_head);
  c_attn = std::make_shared<nn::Linear>(c.n_embd, 3 * c.n_embd, true, gen);
  c_proj = std::make_shared<nn::Linear>(c.n_embd, c.n_embd, true, gen);
  const uint64_t dropout_seed = gen.next_u64();
  resid_dropout = std::make_shared<nn::Dropout>(c.resid_pdrop, dropout_seed);
  attn_seed_ = splitmix64(dropout_seed ^ 0xA7E5A7E5A7E5A7E5ull);  // derived: the generator's sequence is unchanged
  register_module("c_attn", c_attn);
  register_module("c_proj", c_proj);
  register_module("resid_dropout", resid_dropout);
  register_rng_counter("attn_dropout_calls", attn_calls_);
}

Tensor GPT2Attention::forward(const Tensor& x, const models::BlockContext& ctx) {
  LORA_CHECK(x.rank() == 3 && x.size(2) == n_embd_, "GPT-2 attention: input {} is not [B, T, {}]", x.shape().str(),
             n_embd_);
  const int64_t B = x.size(0), T = x.size(1), C = n_embd_, H = n_head_, D = C / H;
  Tensor qkv = c_attn->forward(x);  // [B, T, 3C]
  // [B, T, C] slice -> [B, T, H, D] -> [B, H, T, D]
  auto head_view = [&](int which) {
    Tensor part = ops::slice(qkv, 2, which * C, (which + 1) * C);
    return ops::permute(ops::reshape(part, {B, T, H, D}), {0, 2, 1, 3});
  };
  const double p = is_training() ? attn_pdrop_ : 0.0;
  const uint64_t seed = p > 0 ? splitmix64(attn_seed_ ^ (0x9E3779B97F4A7C15ull * ++attn_calls_)) : 0;
  Tensor y = nn::causal_self_attention(head_view(0), head_view(1), head_view(2), ctx.attention(), ctx.cache, p,
                                       seed);  // [B, H, T, D]
  y = ops::reshape(ops::permute(y, {0, 2, 1, 3}), {B, T, C});
  return resid_dropout->forward(c_proj->forward(y));
}

// ---------------------------------------------------------------------------------------------------
// GPT2Block

GPT2Block::GPT2Block(const GPT2Config& c, Generator& gen) {
  ln_1 = std::make_shared<nn::LayerNorm>(c.n_embd, c.layer_norm_epsilon);
  attn = std::make_shared<GPT2Attention>(c, gen);
  ln_2 = std::make_shared<nn::LayerNorm>(c.n_embd, c.layer_norm_epsilon);
  mlp = std::make_shared<GPT2MLP>(c, gen);
  register_module("ln_1", ln_1);
  register_module("attn", attn);
  register_module("ln_2", ln_2);
  register_module("mlp", mlp);
}

Tensor GPT2Block::forward(const Tensor& x, const models::BlockContext& ctx) {
  Tensor h = x + attn->forward(ln_1->forward(x), ctx);
  return h + mlp->forward(ln_2->forward(h));
}

}  // namespace lora::gpt2
