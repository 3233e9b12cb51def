// GPT-2: construction, initialisation and the forward pass.
#include "models/gpt2/model.h"

#include <cmath>

#include "autograd/ops/linear_cross_entropy.h"

namespace lora::gpt2 {

GPT2Transformer::GPT2Transformer(const GPT2Config& c, Generator& gen) {
  wte = std::make_shared<nn::Embedding>(c.vocab_size, c.n_embd, gen, c.initializer_range);
  wpe = std::make_shared<nn::Embedding>(c.n_positions, c.n_embd, gen, c.initializer_range);
  drop = std::make_shared<nn::Dropout>(c.dropout, gen.next_u64());
  std::vector<std::shared_ptr<nn::TransformerBlock>> blocks;
  for (int64_t i = 0; i < c.n_layer; ++i) {
    blocks.push_back(std::make_shared<nn::TransformerBlock>(c.n_embd, c.n_head, c.dropout, c.layer_norm_epsilon, gen));
  }
  h = std::make_shared<nn::ModuleList<nn::TransformerBlock>>(std::move(blocks));
  ln_f = std::make_shared<nn::LayerNorm>(c.n_embd, c.layer_norm_epsilon);
  register_module("wte", wte);
  register_module("wpe", wpe);
  register_module("drop", drop);  // no parameters, but it must follow train()/eval()
  register_module("h", h);
  register_module("ln_f", ln_f);
}

GPT2::GPT2(const GPT2Config& config, uint64_t seed) : config_(config) {
  config_.validate();
  Generator gen(seed);
  transformer = std::make_shared<GPT2Transformer>(config_, gen);
  register_module("transformer", transformer);
  init_weights(gen);
}

void GPT2::init_weights(Generator& gen) {
  NoGradGuard no_grad;
  const double std = config_.initializer_range;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  for (auto& [name, p] : named_parameters()) {
    const bool is_weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    const bool is_layer_norm = name.find(".ln_") != std::string::npos;
    if (is_layer_norm) continue;  // ones and zeros already
    if (!is_weight) {             // biases
      p.zero_();
      continue;
    }
    const bool residual = name.find("attn.c_proj.weight") != std::string::npos ||
                          name.find("mlp.c_proj.weight") != std::string::npos;
    p.copy_from(Tensor::randn(p.shape(), gen, 0.0, residual ? residual_std : std, p.dtype(), p.device()));
  }
}

Tensor GPT2::hidden_states(const Tensor& ids, std::vector<nn::KVCache>* caches) {
  LORA_CHECK(ids.rank() == 2, "GPT-2: token ids must be [batch, time], got {}", ids.shape().str());
  const int64_t T = ids.size(1);
  const int64_t start = caches && !caches->empty() ? (*caches)[0].length : 0;
  LORA_CHECK(start + T <= config_.n_positions, "GPT-2: {} tokens exceed the context length {}", start + T,
             config_.n_positions);
  if (caches) {
    LORA_CHECK(static_cast<int64_t>(caches->size()) == config_.n_layer, "GPT-2: {} KV caches for {} layers",
               caches->size(), config_.n_layer);
  }
  std::vector<int64_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = start + t;
  const Tensor pos = Tensor::from_vector(positions, {T}, ids.device());

  // x = wte[ids] + wpe[pos]   [B, T, C] + [T, C]
  Tensor x = transformer->drop->forward(transformer->wte->forward(ids) + transformer->wpe->forward(pos));
  for (size_t layer = 0; layer < transformer->h->size(); ++layer) {
    x = (*transformer->h)[layer].forward(x, caches ? &(*caches)[layer] : nullptr);
  }
  return transformer->ln_f->forward(x);
}

Tensor GPT2::forward(const Tensor& ids, std::vector<nn::KVCache>* caches) {
  // The head is tied to the token embedding: logits = h wte^T.
  return ops::linear(hidden_states(ids, caches), transformer->wte->weight);
}

Tensor GPT2::loss(const Tensor& ids, const Tensor& targets) {
  LORA_CHECK(targets.shape() == ids.shape(), "GPT-2 loss: targets {} do not match ids {}", targets.shape().str(),
             ids.shape().str());
  // The tied head and the loss as one op: the [B, T, V] logits and their gradient share one buffer.
  return ops::linear_cross_entropy(hidden_states(ids), transformer->wte->weight, targets);
}

std::vector<nn::KVCache> GPT2::make_kv_caches(int64_t batch) const {
  const int64_t H = config_.n_head, D = config_.n_embd / config_.n_head;
  const Device device = transformer->wte->weight.device();
  std::vector<nn::KVCache> caches(static_cast<size_t>(config_.n_layer));
  for (auto& c : caches) {
    c.k = Tensor::empty({batch, H, config_.n_positions, D}, DType::F32, device);
    c.v = Tensor::empty({batch, H, config_.n_positions, D}, DType::F32, device);
  }
  return caches;
}

}  // namespace lora::gpt2
