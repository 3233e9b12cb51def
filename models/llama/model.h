// Llama (Touvron et al., 2023) and the models built like it (SmolLM, TinyLlama, Mistral, Qwen2): token
// embeddings, n pre-RMSNorm decoder layers with rotary grouped-query attention and a SwiGLU MLP, a final
// RMSNorm, and a language-model head (tied to the embedding or not). Parameter names are Hugging Face's
// LlamaForCausalLM's: model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight, ..., lm_head.weight.
#pragma once

#include "models/causal_lm.h"
#include "models/llama/config.h"
#include "nn/layers.h"
#include "nn/linear.h"
#include "nn/quantized_linear.h"
#include "nn/rotary.h"
#include "nn/self_attention.h"

namespace lora::llama {

// SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x)).
class LlamaMLP : public nn::Module {
 public:
  LlamaMLP(const LlamaConfig& config, Generator& gen);
  Tensor forward(const Tensor& x);

  std::shared_ptr<nn::Layer> gate_proj, up_proj, down_proj;
};

// x = x + self_attn(input_layernorm(x)); x = x + mlp(post_attention_layernorm(x)).
class LlamaDecoderLayer : public models::DecoderBlock {
 public:
  LlamaDecoderLayer(const LlamaConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const models::BlockContext& ctx) override;

  std::shared_ptr<nn::RMSNorm> input_layernorm;
  std::shared_ptr<nn::RotarySelfAttention> self_attn;  // q_proj, k_proj, v_proj, o_proj; rotary; GQA
  std::shared_ptr<nn::RMSNorm> post_attention_layernorm;
  std::shared_ptr<LlamaMLP> mlp;
};

// Hugging Face's LlamaModel: everything but the head. Registered as "model".
class LlamaModel : public nn::Module {
 public:
  LlamaModel(const LlamaConfig& config, Generator& gen);

  std::shared_ptr<nn::Embedding> embed_tokens;  // [vocab, hidden]
  std::shared_ptr<nn::ModuleList<LlamaDecoderLayer>> layers;
  std::shared_ptr<nn::RMSNorm> norm;
};

class LlamaForCausalLM : public models::CausalLM {
 public:
  // transformers' initialisation: every weight ~ N(0, initializer_range), biases 0, RMSNorm weights 1.
  explicit LlamaForCausalLM(const LlamaConfig& config, uint64_t seed = 0);
  const LlamaConfig& config() const { return config_; }

  std::string model_type() const override { return config_.model_type; }
  models::ModelDims dims() const override;
  nlohmann::json hf_config() const override { return config_.to_json(); }
  int64_t bos_token_id() const override { return config_.bos_token_ids.empty() ? -1 : config_.bos_token_ids[0]; }
  int64_t eos_token_id() const override { return config_.eos_token_ids.empty() ? -1 : config_.eos_token_ids[0]; }
  std::vector<int64_t> eos_token_ids() const override { return config_.eos_token_ids; }

  std::string hf_key_to_name(const std::string& key) const override;

  std::shared_ptr<LlamaModel> model;
  std::shared_ptr<nn::Linear> lm_head;  // only when the head is untied

 protected:
  Tensor embed(const Tensor& ids, const models::TokenPositions&) override { return model->embed_tokens->forward(ids); }
  models::DecoderBlock& block(int64_t layer) override { return (*model->layers)[static_cast<size_t>(layer)]; }
  Tensor final_norm(const Tensor& h) override { return model->norm->forward(h); }
  const Tensor& head_weight() const override { return lm_head ? lm_head->weight : model->embed_tokens->weight; }
  std::shared_ptr<const QuantizedWeight> compact_head() const override {
    return lm_head ? nn::compact_weight_of(lm_head) : model->embed_tokens->compact;
  }
  const nn::RotaryEmbedding* rotary() const override { return &rotary_; }
  // "q", "k", "v": every layer's q_proj, k_proj, v_proj (so --targets q,v means the same on every model).
  std::vector<nn::LoRATarget> declared_lora_targets() const override;
  std::string output_head_path() const override { return lm_head ? "lm_head" : ""; }
  std::string token_embedding_path() const override { return "model.embed_tokens"; }

 private:
  LlamaConfig config_;
  nn::RotaryEmbedding rotary_;
};

}  // namespace lora::llama
