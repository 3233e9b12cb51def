// GPT-2: token and position embeddings, n_layer pre-LayerNorm transformer blocks, a final LayerNorm,
// and a language-model head tied to the token embedding (logits = h wte^T). Parameter names are
// Hugging Face's (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...), with Linear weights
// in PyTorch's [out, in] layout (models/gpt2/checkpoint.h converts from and to HF's Conv1D [in, out]).
#pragma once

#include <vector>

#include "models/gpt2/config.h"
#include "nn/transformer.h"

namespace lora::gpt2 {

// Hugging Face's GPT2Model: everything but the head. Registered as "transformer".
class GPT2Transformer : public nn::Module {
 public:
  GPT2Transformer(const GPT2Config& config, Generator& gen);

  std::shared_ptr<nn::Embedding> wte;  // [vocab_size, n_embd]
  std::shared_ptr<nn::Embedding> wpe;  // [n_positions, n_embd]
  std::shared_ptr<nn::Dropout> drop;
  std::shared_ptr<nn::ModuleList<nn::TransformerBlock>> h;
  std::shared_ptr<nn::LayerNorm> ln_f;
};

class GPT2 : public nn::Module {
 public:
  // A model with GPT-2's initialisation: weights ~ N(0, 0.02), the residual projections (attn.c_proj,
  // mlp.c_proj) ~ N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorms 1 and 0.
  explicit GPT2(const GPT2Config& config, uint64_t seed = 0);
  const GPT2Config& config() const { return config_; }

  // ids [B, T] (I32/I64) -> final hidden states [B, T, n_embd]. With caches (one per layer, from
  // make_kv_caches), positions continue after what the caches hold.
  Tensor hidden_states(const Tensor& ids, std::vector<nn::KVCache>* caches = nullptr);
  // ids [B, T] -> logits [B, T, vocab_size].
  Tensor forward(const Tensor& ids, std::vector<nn::KVCache>* caches = nullptr);
  // Mean next-token cross-entropy of targets [B, T] (ignore_index -100) under the model.
  Tensor loss(const Tensor& ids, const Tensor& targets);

  std::vector<nn::KVCache> make_kv_caches(int64_t batch) const;

  std::shared_ptr<GPT2Transformer> transformer;

 private:
  void init_weights(Generator& gen);
  GPT2Config config_;
};

}  // namespace lora::gpt2
