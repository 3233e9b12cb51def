// Gemma (Gemma Team, 2024): Llama's decoder with three differences, and nothing else that is its own:
// embeddings scaled by sqrt(hidden_size), RMSNorm weights stored as an offset from 1 (y = norm(x) (1 + w)),
// and a GeGLU MLP (GELU's tanh approximation where Llama has SiLU); the head is tied by default, head_dim
// is its own (256 in the published models) and gemma-2b uses one key/value head. Parameter names are
// Hugging Face's GemmaForCausalLM's: model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight, ...
#pragma once

#include "models/causal_lm.h"
#include "models/gemma/config.h"
#include "nn/layers.h"
#include "nn/linear.h"
#include "nn/quantized_linear.h"
#include "nn/rotary.h"
#include "nn/self_attention.h"

namespace lora::gemma {

// y = x rsqrt(mean(x^2) + eps) (1 + weight); weight starts at 0.
class GemmaRMSNorm : public nn::Layer {
 public:
  GemmaRMSNorm(int64_t dim, double eps);
  Tensor forward(const Tensor& x) override;
  Tensor weight;  // [dim]

 private:
  double eps_;
};

// GeGLU: down_proj(gelu_tanh(gate_proj(x)) * up_proj(x)).
class GemmaMLP : public nn::Module {
 public:
  GemmaMLP(const GemmaConfig& config, Generator& gen);
  Tensor forward(const Tensor& x);

  std::shared_ptr<nn::Layer> gate_proj, up_proj, down_proj;
};

// x = x + self_attn(input_layernorm(x)); x = x + mlp(post_attention_layernorm(x)).
class GemmaDecoderLayer : public models::DecoderBlock {
 public:
  GemmaDecoderLayer(const GemmaConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const models::BlockContext& ctx) override;

  std::shared_ptr<GemmaRMSNorm> input_layernorm;
  std::shared_ptr<nn::RotarySelfAttention> self_attn;
  std::shared_ptr<GemmaRMSNorm> post_attention_layernorm;
  std::shared_ptr<GemmaMLP> mlp;
};

// Hugging Face's GemmaModel: everything but the head. Registered as "model".
class GemmaModel : public nn::Module {
 public:
  GemmaModel(const GemmaConfig& config, Generator& gen);

  std::shared_ptr<nn::Embedding> embed_tokens;  // [vocab, hidden]
  std::shared_ptr<nn::ModuleList<GemmaDecoderLayer>> layers;
  std::shared_ptr<GemmaRMSNorm> norm;
};

class GemmaForCausalLM : public models::CausalLM {
 public:
  // transformers' initialisation: weights ~ N(0, initializer_range), biases and norm weights 0.
  explicit GemmaForCausalLM(const GemmaConfig& config, uint64_t seed = 0);
  const GemmaConfig& config() const { return config_; }

  std::string model_type() const override { return "gemma"; }
  models::ModelDims dims() const override;
  nlohmann::json hf_config() const override { return config_.to_json(); }
  int64_t bos_token_id() const override { return config_.bos_token_ids.empty() ? -1 : config_.bos_token_ids[0]; }
  int64_t eos_token_id() const override { return config_.eos_token_ids.empty() ? -1 : config_.eos_token_ids[0]; }
  std::vector<int64_t> eos_token_ids() const override { return config_.eos_token_ids; }
  std::string hf_key_to_name(const std::string& key) const override;

  std::shared_ptr<GemmaModel> model;
  std::shared_ptr<nn::Linear> lm_head;  // only when the head is untied

 protected:
  // embed_tokens[ids] * sqrt(hidden_size), the factor rounded to float32 as transformers does
  Tensor embed(const Tensor& ids, const models::TokenPositions& positions) override;
  models::DecoderBlock& block(int64_t layer) override { return (*model->layers)[static_cast<size_t>(layer)]; }
  Tensor final_norm(const Tensor& h) override { return model->norm->forward(h); }
  const Tensor& head_weight() const override { return lm_head ? lm_head->weight : model->embed_tokens->weight; }
  std::shared_ptr<const QuantizedWeight> compact_head() const override {
    return lm_head ? nn::compact_weight_of(lm_head) : model->embed_tokens->compact;
  }
  const nn::RotaryEmbedding* rotary() const override { return &rotary_; }
  // "q", "k", "v": every layer's q_proj, k_proj, v_proj.
  std::vector<nn::LoRATarget> declared_lora_targets() const override;
  std::string output_head_path() const override { return lm_head ? "lm_head" : ""; }
  std::string token_embedding_path() const override { return "model.embed_tokens"; }

 private:
  GemmaConfig config_;
  nn::RotaryEmbedding rotary_;
};

}  // namespace lora::gemma
