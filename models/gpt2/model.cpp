// GPT-2: construction, initialisation, the forward pass and its Hugging Face names.
#include "models/gpt2/model.h"

#include <cmath>

#include "autograd/ops/linear_cross_entropy.h"
#include "nn/checkpoint.h"

namespace lora::gpt2 {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

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
    if (!ends_with(name, ".weight")) {                      // biases
      p.zero_();
      continue;
    }
    const bool residual = ends_with(name, "attn.c_proj.weight") || ends_with(name, "mlp.c_proj.weight");
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

Tensor GPT2LMHeadModel::hidden_states(const Tensor& ids, nn::KVCache* cache) {
  LORA_CHECK(ids.rank() == 2, "GPT-2: token ids must be [batch, time], got {}", ids.shape().str());
  const int64_t T = ids.size(1);
  const bool ragged = cache && cache->ragged();  // each row at its own position (a pool of sequences)
  const int64_t start = cache && !ragged ? cache->length : 0;
  LORA_CHECK(start + T <= config_.n_positions, "GPT-2: {} tokens exceed the context length {}", start + T,
             config_.n_positions);
  if (cache) {
    LORA_CHECK(static_cast<int64_t>(cache->layers.size()) == config_.n_layer, "GPT-2: a KV cache of {} layers for {}",
               cache->layers.size(), config_.n_layer);
    if (ragged) cache->check_rows(ids.size(0), "GPT-2");
    else cache->check_room(T, ids.size(0), "GPT-2");
  }
  // Positions [T] from start, or [B, 1] for the rows of a pool.
  std::vector<int64_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = start + t;
  Shape pos_shape{T};
  if (ragged) {
    LORA_CHECK(T == 1, "GPT-2: a decode step over cache rows takes one token per row, got {}", T);
    positions.clear();
    for (const nn::CacheRow& r : *cache->rows) {
      LORA_CHECK(r.position < config_.n_positions, "GPT-2: position {} is outside the context length {}", r.position,
                 config_.n_positions);
      positions.push_back(r.position);
    }
    pos_shape = Shape{ids.size(0), 1};
  }
  const Tensor pos = Tensor::from_vector(positions, pos_shape, ids.device());

  // x = wte[ids] + wpe[pos]   [B, T, C] + [T, C]
  Tensor x = transformer->drop->forward(transformer->wte->forward(ids) + transformer->wpe->forward(pos));
  for (size_t layer = 0; layer < transformer->h->size(); ++layer) {
    GPT2Block* block = &(*transformer->h)[layer];
    if (cache) {
      x = block->forward(x, &cache->layers[layer], start);
    } else {  // training: checkpointed when CheckpointMode is on (the closure outlives this call)
      x = nn::checkpoint_block(*block, [block, start](const Tensor& h) { return block->forward(h, nullptr, start); }, x);
    }
  }
  if (cache && !ragged) cache->advance(T);
  return transformer->ln_f->forward(x);
}

Tensor GPT2LMHeadModel::forward(const Tensor& ids, nn::KVCache* cache) {
  return ops::linear(hidden_states(ids, cache), head_weight());  // logits = h W_head^T
}

Tensor GPT2LMHeadModel::loss(const Tensor& ids, const Tensor& targets) {
  LORA_CHECK(targets.shape() == ids.shape(), "GPT-2 loss: targets {} do not match ids {}", targets.shape().str(),
             ids.shape().str());
  // The head and the loss as one op: the [B, T, V] logits and their gradient share one buffer.
  return ops::linear_cross_entropy(hidden_states(ids), head_weight(), targets);
}

bool GPT2LMHeadModel::hf_transposed(const std::string& name) const {
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

std::string GPT2LMHeadModel::hf_key_to_name(const std::string& key) const {
  // The causal-mask buffers older checkpoints carry, and a tied head saved anyway, are not parameters.
  if (ends_with(key, ".attn.bias") || ends_with(key, ".attn.masked_bias")) return "";
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
