// GPT-2: construction, initialisation, its embeddings and its Hugging Face names.
#include "models/gpt2/model.h"

#include <cmath>

namespace lora::gpt2 {

GPT2Model::GPT2Model(const GPT2Config& c, Generator& gen) {
  wte = std::make_shared<nn::Embedding>(c.vocab_size, c.n_embd, gen, c.initializer_range);
  wpe = std::make_shared<nn::Embedding>(c.n_positions, c.n_embd, gen, c.initializer_range);
  drop = std::make_shared<nn::Dropout>(c.embd_pdrop, gen.next_u64());
  std::vector<std::shared_ptr<GPT2Block>> blocks;
  for (int64_t i = 0; i < c.n_layer; ++i) blocks.push_back(std::make_shared<GPT2Block>(c, gen));
  h = std::make_shared<nn::ModuleList<GPT2Block>>(std::move(blocks));
  ln_f = std::make_shared<nn::LayerNorm>(c.n_embd, c.layer_norm_epsilon);
  register_module("wte", wte);
  register_module("wpe", wpe);
  register_module("drop", drop);  // no parameters, but it must follow train()/eval()
  register_module("h", h);
  register_module("ln_f", ln_f);
}

GPT2LMHeadModel::GPT2LMHeadModel(const GPT2Config& config, uint64_t seed) : config_(config) {
  config_.validate();
  Generator gen(seed);
  transformer = std::make_shared<GPT2Model>(config_, gen);
  register_module("transformer", transformer);
  if (!config_.tie_word_embeddings) {
    lm_head = std::make_shared<nn::Linear>(config_.n_embd, config_.vocab_size, false, gen);
    register_module("lm_head", lm_head);
  }
  init_weights(gen);
}

void GPT2LMHeadModel::init_weights(Generator& gen) {
  NoGradGuard no_grad;
  const double std = config_.initializer_range;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  for (auto& [name, p] : named_parameters()) {
    if (name.find(".ln_") != std::string::npos) continue;  // LayerNorms: ones and zeros already
    if (!name.ends_with(".weight")) {                      // biases
      p.zero_();
      continue;
    }
    const bool residual = name.ends_with("attn.c_proj.weight") || name.ends_with("mlp.c_proj.weight");
    p.copy_from(Tensor::randn(p.shape(), gen, 0.0, residual ? residual_std : std, p.dtype(), p.device()));
  }
}

models::ModelDims GPT2LMHeadModel::dims() const {
  return {.vocab_size = config_.vocab_size,
          .context_length = config_.n_positions,
          .n_layer = config_.n_layer,
          .hidden = config_.n_embd,
          .n_head = config_.n_head,
          .n_kv_head = config_.n_head,
          .head_dim = config_.n_embd / config_.n_head};
}

Tensor GPT2LMHeadModel::embed(const Tensor& ids, const models::TokenPositions& positions) {
  // [B, T, C] + [T, C] (every row at the same positions) or + [B, T, C]
  return transformer->drop->forward(transformer->wte->forward(ids) +
                                    transformer->wpe->forward(positions.tensor(ids.device())));
}

bool GPT2LMHeadModel::hf_transposed(const std::string& name) const {
  return name.ends_with("attn.c_attn.weight") || name.ends_with("attn.c_proj.weight") ||
         name.ends_with("mlp.c_fc.weight") || name.ends_with("mlp.c_proj.weight");
}

std::string GPT2LMHeadModel::hf_key_to_name(const std::string& key) const {
  // The causal-mask buffers older checkpoints carry, and a tied head saved anyway, are not parameters.
  if (key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")) return "";
  if (key == "lm_head.weight") return lm_head ? key : "";
  // GPT2Model checkpoints (as published for openai-community/gpt2) name tensors without "transformer.".
  return key.rfind("transformer.", 0) == 0 ? key : "transformer." + key;
}

std::vector<nn::LoRATarget> GPT2LMHeadModel::declared_lora_targets() const {
  const int64_t C = config_.n_embd;
  std::vector<nn::LoRATarget> targets;
  const char* names[3] = {"q", "k", "v"};
  const char* what[3] = {"query", "key", "value"};
  for (int which = 0; which < 3; ++which) {
    nn::LoRATarget t{names[which], fmt::format("the {} rows of every attn.c_attn", what[which]), {}};
    for (int64_t layer = 0; layer < config_.n_layer; ++layer) {
      t.sites.push_back({fmt::format("transformer.h.{}.attn.c_attn", layer), {which * C, C}});
    }
    targets.push_back(std::move(t));
  }
  return targets;
}

}  // namespace lora::gpt2
