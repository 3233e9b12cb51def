// GPT2Config: the shape of a GPT-2 model, with the published presets and config.json reading/writing.
#pragma once

#include <cstdint>
#include <string>

namespace lora::gpt2 {

struct GPT2Config {
  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;  // context length
  int64_t n_embd = 768;
  int64_t n_layer = 12;
  int64_t n_head = 12;
  double layer_norm_epsilon = 1e-5;
  double dropout = 0.0;            // embedding and residual dropout (HF: embd_pdrop, resid_pdrop)
  double initializer_range = 0.02;

  // "gpt2" (124M), "gpt2-medium" (355M), "gpt2-large" (774M), "gpt2-xl" (1.5B), and small configs for
  // tests and demos: "tiny" (2 layers, 48 wide, 101 tokens), "small-test" (4 layers, 128 wide, full vocabulary).
  static GPT2Config preset(const std::string& name);
  // Reads a Hugging Face config.json (n_layer, n_head, n_embd, n_positions, vocab_size, layer_norm_epsilon,
  // resid_pdrop, initializer_range); missing or malformed fields give a lora::Error naming the file.
  static GPT2Config from_json_file(const std::string& path);
  // Writes a config.json that Hugging Face transformers reads as GPT2LMHeadModel.
  void save_json_file(const std::string& path) const;
  std::string str() const;
  void validate() const;
};

}  // namespace lora::gpt2
