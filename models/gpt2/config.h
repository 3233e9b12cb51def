// GPT2Config: the shape of a GPT-2 model, read from (and written as) a Hugging Face config.json, and the
// published presets.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "models/config_reader.h"

namespace lora::gpt2 {

using models::ConfigReader;

struct GPT2Config {
  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;  // context length
  int64_t n_embd = 768;
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_inner = 0;  // MLP width; 0: 4 n_embd
  double layer_norm_epsilon = 1e-5;
  double resid_pdrop = 0.0;  // dropout after each residual branch
  double embd_pdrop = 0.0;   // dropout of the embeddings
  double attn_pdrop = 0.0;   // dropout of the attention probabilities
  double initializer_range = 0.02;
  bool tie_word_embeddings = true;  // logits = h wte^T; otherwise a separate lm_head.weight
  int64_t bos_token_id = -1, eos_token_id = -1;

  int64_t mlp_width() const { return n_inner > 0 ? n_inner : 4 * n_embd; }

  // "gpt2" (124M), "gpt2-medium" (355M), "gpt2-large" (774M), "gpt2-xl" (1.5B), and small configs for
  // tests and demos: "tiny" (2 layers, 48 wide, 101 tokens), "small-test" (4 layers, 128 wide, full vocabulary).
  // Returns "" when `name` is not a GPT-2 preset.
  static nlohmann::json preset_json(const std::string& name);
  // The preset as a config; throws when `name` is not a GPT-2 preset.
  static GPT2Config preset(const std::string& name);
  // Reads config.json fields strictly (models/config_reader.h): fields that change GPT-2's computation are
  // honoured or refused (activation_function other than gelu_new, scale_attn_weights false,
  // scale_attn_by_inverse_layer_idx true, ...), sizes are bounded.
  static GPT2Config read(ConfigReader& reader);
  static GPT2Config from_json(const nlohmann::json& json, const std::string& source);
  // A config.json that transformers reads as GPT2LMHeadModel.
  nlohmann::json to_json() const;
  std::string str() const;
  void validate() const;
};

}  // namespace lora::gpt2
