// LlamaConfig: the shape of a Llama-family model (Llama 2/3, SmolLM, TinyLlama, Mistral, Qwen2), read from a
// Hugging Face config.json as transformers 4.x writes it (top-level rope_theta and rope_scaling,
// torch_dtype) and as 5.x writes it (rope_parameters, dtype).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "models/config_reader.h"
#include "nn/rotary.h"

namespace lora::llama {

using models::ConfigReader;

struct LlamaConfig {
  std::string model_type = "llama";  // "llama", "mistral" or "qwen2": the same computation, other defaults
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // < num_attention_heads: grouped-query attention
  int64_t head_dim = 128;            // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nn::RopeScaling rope_scaling;
  double attention_dropout = 0.0;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // biases on q_proj, k_proj, v_proj (Llama attention_bias; always on in Qwen2)
  bool o_bias = false;    // bias on o_proj (Llama attention_bias)
  bool mlp_bias = false;  // biases on gate_proj, up_proj, down_proj
  std::vector<int64_t> bos_token_ids, eos_token_ids;

  // Presets: "smollm2-135m" (SmolLM2-135M's shape: 30 layers, hidden 576, 9 heads, 3 KV heads, MLP 1536,
  // vocabulary 49152, tied), "llama-tiny" (2 layers, hidden 64, 4 heads, 2 KV heads, vocabulary 101, for
  // tests). Returns null when `name` is not a Llama preset.
  static nlohmann::json preset_json(const std::string& name);
  // Reads config.json fields strictly: what changes the computation is honoured (GQA, head_dim, biases,
  // tied head, rope_theta, linear and llama3 rope scaling, attention dropout) or refused (other rope
  // scalings, a sliding window shorter than the context, partial or interleaved rotary embeddings, an
  // activation other than SiLU); sizes are bounded.
  static LlamaConfig read(ConfigReader& reader);
  static LlamaConfig from_json(const nlohmann::json& json, const std::string& source);
  // A config.json that transformers reads as LlamaForCausalLM (or Qwen2ForCausalLM / MistralForCausalLM).
  nlohmann::json to_json() const;
  std::string str() const;
  void validate() const;
};

// What the architectures built like Llama share when reading a config.json (models/gemma/ uses them too):
// bos_token_id / eos_token_id as one id, a list of ids or null (ids outside the vocabulary dropped), and
// written back; rope_theta and the rope scaling as transformers 4.x (top-level rope_theta, rope_scaling)
// and 5.x (rope_parameters) write them, unknown scalings refused.
std::vector<int64_t> read_token_ids(ConfigReader& r, const std::string& key, int64_t vocab_size);
nlohmann::json token_ids_json(const std::vector<int64_t>& ids);
void read_rope(ConfigReader& r, double default_theta, double& theta, nn::RopeScaling& scaling);

}  // namespace lora::llama
