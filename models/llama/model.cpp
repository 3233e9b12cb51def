// Llama-family models: construction, initialisation, the forward pass and Hugging Face names.
#include "models/llama/model.h"

#include "autograd/ops/linear_cross_entropy.h"
#include "backends/backend.h"
#include "nn/attention.h"
#include "nn/checkpoint.h"

namespace lora::llama {

// ---------------------------------------------------------------------------------------------------
// LlamaAttention

LlamaAttention::LlamaAttention(const LlamaConfig& c, Generator& gen)
    : n_head_(c.num_attention_heads), n_kv_head_(c.num_key_value_heads), head_dim_(c.head_dim),
      dropout_(c.attention_dropout) {
  const int64_t q_width = c.num_attention_heads * c.head_dim, kv_width = c.num_key_value_heads * c.head_dim;
  q_proj = std::make_shared<nn::Linear>(c.hidden_size, q_width, c.qkv_bias, gen);
  k_proj = std::make_shared<nn::Linear>(c.hidden_size, kv_width, c.qkv_bias, gen);
  v_proj = std::make_shared<nn::Linear>(c.hidden_size, kv_width, c.qkv_bias, gen);
  o_proj = std::make_shared<nn::Linear>(q_width, c.hidden_size, c.o_bias, gen);
  dropout_seed_ = gen.next_u64();
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  register_module("o_proj", o_proj);
  register_rng_counter("attention_dropout_calls", dropout_calls_);
}

Tensor LlamaAttention::forward(const Tensor& x, const Tensor& cos, const Tensor& sin, nn::KVCache::Layer* cache,
                               int64_t start) {
  const int64_t B = x.size(0), T = x.size(1), H = n_head_, H_kv = n_kv_head_, D = head_dim_;
  // [B, T, heads * D] -> [B, T, heads, D] (rotated) -> [B, heads, T, D]
  // Rows of a pool of sequences (one token each, cos and sin [B, D/2]) are rotated as B time steps of one row.
  const bool ragged = cache && cache->rows;
  auto heads = [&](const Tensor& projected, int64_t n, bool rotate) {
    Tensor h = ops::reshape(projected, {B, T, n, D});
    if (rotate && ragged) h = ops::reshape(ops::rope(ops::reshape(h, {1, B, n, D}), cos, sin), {B, T, n, D});
    else if (rotate) h = ops::rope(h, cos, sin);
    return ops::permute(h, {0, 2, 1, 3});
  };
  const Tensor q = heads(q_proj->forward(x), H, true);
  const Tensor k = heads(k_proj->forward(x), H_kv, true);
  const Tensor v = heads(v_proj->forward(x), H_kv, false);
  const double p = is_training() ? dropout_ : 0.0;
  const uint64_t seed = p > 0 ? splitmix64(dropout_seed_ ^ (0x9E3779B97F4A7C15ull * ++dropout_calls_)) : 0;
  Tensor y = nn::causal_self_attention(q, k, v, cache, start, p, seed);  // [B, H, T, D]
  return o_proj->forward(ops::reshape(ops::permute(y, {0, 2, 1, 3}), {B, T, H * D}));
}

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
  return down_proj->forward(ops::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

// ---------------------------------------------------------------------------------------------------
// LlamaDecoderLayer and LlamaModel

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, Generator& gen) {
  input_layernorm = std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps);
  self_attn = std::make_shared<LlamaAttention>(c, gen);
  post_attention_layernorm = std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps);
  mlp = std::make_shared<LlamaMLP>(c, gen);
  register_module("self_attn", self_attn);
  register_module("mlp", mlp);
  register_module("input_layernorm", input_layernorm);
  register_module("post_attention_layernorm", post_attention_layernorm);
}

Tensor LlamaDecoderLayer::forward(const Tensor& x, const Tensor& cos, const Tensor& sin, nn::KVCache::Layer* cache,
                                  int64_t start) {
  Tensor h = x + self_attn->forward(input_layernorm->forward(x), cos, sin, cache, start);
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

Tensor LlamaForCausalLM::hidden_states(const Tensor& ids, nn::KVCache* cache) {
  LORA_CHECK(ids.rank() == 2, "{}: token ids must be [batch, time], got {}", config_.model_type, ids.shape().str());
  const bool ragged = cache && cache->ragged();  // each row at its own position (a pool of sequences)
  const int64_t T = ids.size(1), start = cache && !ragged ? cache->length : 0;
  LORA_CHECK(start + T <= config_.max_position_embeddings, "{}: {} tokens exceed the context length {}",
             config_.model_type, start + T, config_.max_position_embeddings);
  if (cache) {
    LORA_CHECK(static_cast<int64_t>(cache->layers.size()) == config_.num_hidden_layers, "{}: a KV cache of {} layers for {}",
               config_.model_type, cache->layers.size(), config_.num_hidden_layers);
    if (ragged) cache->check_rows(ids.size(0), config_.model_type.c_str());
    else cache->check_room(T, ids.size(0), config_.model_type.c_str());
  }
  // cos, sin [T, head_dim / 2] for positions [start, start + T); for the rows of a pool, [B, head_dim / 2],
  // row b's position in row b (the attention then rotates its one token per row with them).
  auto [cos, sin] = rotary_.tables(start, T, ids.device());
  if (ragged) {
    LORA_CHECK(T == 1, "{}: a decode step over cache rows takes one token per row, got {}", config_.model_type, T);
    const int64_t B = ids.size(0), half = config_.head_dim / 2;
    cos = Tensor::empty({B, half}, DType::F32, ids.device());
    sin = Tensor::empty({B, half}, DType::F32, ids.device());
    Backend& be = backend_for(cos);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t position = (*cache->rows)[static_cast<size_t>(b)].position;
      LORA_CHECK(position < config_.max_position_embeddings, "{}: position {} is outside the context length {}",
                 config_.model_type, position, config_.max_position_embeddings);
      const auto [c, s] = rotary_.tables(position, 1, ids.device());  // [1, half]
      be.copy_block(c, cos, 1, 1, B, half, 0, b, 1, false);
      be.copy_block(s, sin, 1, 1, B, half, 0, b, 1, false);
    }
  }
  Tensor x = model->embed_tokens->forward(ids);                     // [B, T, hidden]
  for (size_t i = 0; i < model->layers->size(); ++i) {
    LlamaDecoderLayer* layer = &(*model->layers)[i];
    if (cache) {
      x = layer->forward(x, cos, sin, &cache->layers[i], start);
    } else {  // training: checkpointed when CheckpointMode is on (the closure outlives this call)
      x = nn::checkpoint_block(
          *layer, [layer, cos = cos, sin = sin, start](const Tensor& h) { return layer->forward(h, cos, sin, nullptr, start); },
          x);
    }
  }
  if (cache && !ragged) cache->advance(T);
  return model->norm->forward(x);
}

Tensor LlamaForCausalLM::forward(const Tensor& ids, nn::KVCache* cache) {
  return ops::linear(hidden_states(ids, cache), head_weight());
}

Tensor LlamaForCausalLM::loss(const Tensor& ids, const Tensor& targets) {
  LORA_CHECK(targets.shape() == ids.shape(), "{} loss: targets {} do not match ids {}", config_.model_type,
             targets.shape().str(), ids.shape().str());
  return ops::linear_cross_entropy(hidden_states(ids), head_weight(), targets);
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
