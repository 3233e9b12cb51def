// GPT-2 (Radford et al., 2019): token and position embeddings, n_layer pre-LayerNorm blocks, a final
// LayerNorm, and a language-model head tied to the token embedding (logits = h wte^T) or, when the config
// unties it, a separate lm_head. Parameter names are Hugging Face's GPT2LMHeadModel's
// (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...), with Linear weights in PyTorch's
// [out, in] layout; HF stores the four Conv1D weights per block [in, out] (hf_transposed).
#pragma once

#include "models/causal_lm.h"
#include "models/gpt2/blocks.h"
#include "nn/quantized_linear.h"

namespace lora::gpt2 {

// Hugging Face's GPT2Model: everything but the head. Registered as "transformer".
class GPT2Model : public nn::Module {
 public:
  GPT2Model(const GPT2Config& config, Generator& gen);

  std::shared_ptr<nn::Embedding> wte;  // [vocab_size, n_embd]
  std::shared_ptr<nn::Embedding> wpe;  // [n_positions, n_embd]
  std::shared_ptr<nn::Dropout> drop;
  std::shared_ptr<nn::ModuleList<GPT2Block>> h;
  std::shared_ptr<nn::LayerNorm> ln_f;
};

class GPT2LMHeadModel : public models::CausalLM {
 public:
  // GPT-2's initialisation: weights ~ N(0, initializer_range), the residual projections (attn.c_proj,
  // mlp.c_proj) ~ N(0, initializer_range / sqrt(2 n_layer)), biases 0, LayerNorms 1 and 0.
  explicit GPT2LMHeadModel(const GPT2Config& config, uint64_t seed = 0);
  const GPT2Config& config() const { return config_; }

  std::string model_type() const override { return "gpt2"; }
  models::ModelDims dims() const override;
  nlohmann::json hf_config() const override { return config_.to_json(); }
  int64_t bos_token_id() const override { return config_.bos_token_id; }
  int64_t eos_token_id() const override { return config_.eos_token_id; }

  bool hf_transposed(const std::string& hf_name) const override;
  std::string hf_key_to_name(const std::string& key) const override;
  bool hf_fan_in_fan_out() const override { return true; }

  std::shared_ptr<GPT2Model> transformer;
  std::shared_ptr<nn::Linear> lm_head;  // only when the head is untied

 protected:
  // x = dropout(wte[ids] + wpe[positions])   [B, T, C]
  Tensor embed(const Tensor& ids, const models::TokenPositions& positions) override;
  models::DecoderBlock& block(int64_t layer) override { return (*transformer->h)[static_cast<size_t>(layer)]; }
  Tensor final_norm(const Tensor& h) override { return transformer->ln_f->forward(h); }
  const Tensor& head_weight() const override { return lm_head ? lm_head->weight : transformer->wte->weight; }
  std::shared_ptr<const QuantizedWeight> compact_head() const override {
    return lm_head ? nn::compact_weight_of(lm_head) : transformer->wte->compact;
  }
  // "q", "k", "v": those rows of every block's fused c_attn.
  std::vector<nn::LoRATarget> declared_lora_targets() const override;
  std::string output_head_path() const override { return lm_head ? "lm_head" : ""; }
  std::string token_embedding_path() const override { return "transformer.wte"; }

 private:
  void init_weights(Generator& gen);
  GPT2Config config_;
};

}  // namespace lora::gpt2
