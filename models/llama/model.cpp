// Llama-family models: the MLP and decoder layer, construction, initialisation and Hugging Face names.
#include "models/llama/model.h"

#include "nn/attention.h"

namespace lora::llama {

// ---------------------------------------------------------------------------------------------------
// LlamaMLP

LlamaMLP::LlamaMLP(const LlamaConfig& c, Generator& gen) {
  gate_proj = std::make_shared<nn::Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias, gen);
  up_proj = std::make_shared<nn::Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias, gen);
  down_proj = std::make_shared<nn::Linear>(c.intermediate_size, c.hidden_size, c.mlp_bias, gen);
  register_module("gate_proj", gate_proj);
  register_module("up_proj", up_proj);
  register_module("down_proj", down_proj);
}

Tensor LlamaMLP::forward(const Tensor& x) {
  return down_proj->forward(ops::swiglu(gate_proj->forward(x), up_proj->forward(x)));
}

// ---------------------------------------------------------------------------------------------------
// LlamaDecoderLayer and LlamaModel

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, Generator& gen) {
  input_layernorm = std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps);
  self_attn =
      std::make_shared<nn::RotarySelfAttention>(nn::RotarySelfAttention::Options{.hidden = c.hidden_size,
                                                                                 .heads = c.num_attention_heads,
                                                                                 .kv_heads = c.num_key_value_heads,
                                                                                 .head_dim = c.head_dim,
                                                                                 .qkv_bias = c.qkv_bias,
                                                                                 .o_bias = c.o_bias,
                                                                                 .dropout = c.attention_dropout},
                                                gen);
  post_attention_layernorm = std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps);
  mlp = std::make_shared<LlamaMLP>(c, gen);
  register_module("self_attn", self_attn);
  register_module("mlp", mlp);
  register_module("input_layernorm", input_layernorm);
  register_module("post_attention_layernorm", post_attention_layernorm);
}

Tensor LlamaDecoderLayer::forward(const Tensor& x, const models::BlockContext& ctx) {
  Tensor h = x + self_attn->forward(input_layernorm->forward(x), ctx.attention(), ctx.cache, ctx.rotary());
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

LlamaModel::LlamaModel(const LlamaConfig& c, Generator& gen) {
  embed_tokens = std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, gen, c.initializer_range);
  std::vector<std::shared_ptr<LlamaDecoderLayer>> blocks;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) blocks.push_back(std::make_shared<LlamaDecoderLayer>(c, gen));
  layers = std::make_shared<nn::ModuleList<LlamaDecoderLayer>>(std::move(blocks));
  norm = std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps);
  register_module("embed_tokens", embed_tokens);
  register_module("layers", layers);
  register_module("norm", norm);
}

// ---------------------------------------------------------------------------------------------------
// LlamaForCausalLM

LlamaForCausalLM::LlamaForCausalLM(const LlamaConfig& config, uint64_t seed)
    : config_(config), rotary_(config.head_dim, config.rope_theta, config.rope_scaling) {
  config_.validate();
  Generator gen(seed);
  model = std::make_shared<LlamaModel>(config_, gen);
  register_module("model", model);
  if (!config_.tie_word_embeddings) {
    lm_head = std::make_shared<nn::Linear>(config_.hidden_size, config_.vocab_size, false, gen);
    register_module("lm_head", lm_head);
  }
  NoGradGuard no_grad;
  for (auto& [name, p] : named_parameters()) {
    if (name.ends_with("norm.weight")) continue;  // RMSNorm: ones already
    if (name.ends_with(".bias")) {
      p.zero_();
      continue;
    }
    p.copy_from(Tensor::randn(p.shape(), gen, 0.0, config_.initializer_range, p.dtype(), p.device()));
  }
}

models::ModelDims LlamaForCausalLM::dims() const {
  return {.vocab_size = config_.vocab_size,
          .context_length = config_.max_position_embeddings,
          .n_layer = config_.num_hidden_layers,
          .hidden = config_.hidden_size,
          .n_head = config_.num_attention_heads,
          .n_kv_head = config_.num_key_value_heads,
          .head_dim = config_.head_dim};
}

std::string LlamaForCausalLM::hf_key_to_name(const std::string& key) const {
  // Older checkpoints store the rotary frequencies; they are recomputed from the config.
  if (key.ends_with("rotary_emb.inv_freq")) return "";
  if (key == "lm_head.weight" && !lm_head) return "";  // a tied head saved anyway
  return key;
}

std::vector<nn::LoRATarget> LlamaForCausalLM::declared_lora_targets() const {
  std::vector<nn::LoRATarget> targets;
  for (const char* name : {"q", "k", "v"}) {
    nn::LoRATarget t{name, fmt::format("every self_attn.{}_proj", name), {}};
    for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
      t.sites.push_back({fmt::format("model.layers.{}.self_attn.{}_proj", layer, name), {}});
    }
    targets.push_back(std::move(t));
  }
  return targets;
}

}  // namespace lora::llama
