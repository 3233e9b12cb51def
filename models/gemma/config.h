// GemmaConfig: the shape of a Gemma model (Gemma 1: google/gemma-2b, gemma-7b), read from a Hugging Face
// config.json as transformers 4.x and 5.x write it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "models/config_reader.h"
#include "nn/rotary.h"

namespace lora::gemma {

using models::ConfigReader;

struct GemmaConfig {
  int64_t vocab_size = 256000;
  int64_t hidden_size = 3072;
  int64_t intermediate_size = 24576;
  int64_t num_hidden_layers = 28;
  int64_t num_attention_heads = 16;
  int64_t num_key_value_heads = 16;  // 1 in gemma-2b (multi-query attention)
  int64_t head_dim = 256;            // transformers' default, whatever hidden_size / num_attention_heads is
  int64_t max_position_embeddings = 8192;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nn::RopeScaling rope_scaling;
  double attention_dropout = 0.0;
  double initializer_range = 0.02;
  bool tie_word_embeddings = true;
  bool attention_bias = false;  // biases on q_proj, k_proj, v_proj and o_proj
  std::vector<int64_t> bos_token_ids, eos_token_ids;

  // "gemma-tiny" (2 layers, hidden 64, 4 heads over 1 key/value head of 32, vocabulary 101, for tests);
  // null when `name` is not a Gemma preset.
  static nlohmann::json preset_json(const std::string& name);
  // Reads config.json fields strictly: GELU other than the tanh approximation, bidirectional attention and
  // unknown rope scalings are refused; sizes are bounded.
  static GemmaConfig read(ConfigReader& reader);
  static GemmaConfig from_json(const nlohmann::json& json, const std::string& source);
  // A config.json that transformers reads as GemmaForCausalLM.
  nlohmann::json to_json() const;
  std::string str() const;
  void validate() const;
};

}  // namespace lora::gemma
