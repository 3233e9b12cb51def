// CausalLM: the one interface every causal language model implements, and the only one programs,
// LoRA, checkpoints, generation and the memory report see. A model is an nn::Module whose parameters
// carry Hugging Face's names, so that checkpoints and PEFT adapters are read and written as published.
//
// Adding an architecture: a folder under models/ with its config (read from config.json), its blocks, a
// class deriving from CausalLM, and one line in models/registry.cpp (docs/models.md, "Adding a third architecture").
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nn/attention.h"
#include "nn/lora/apply_lora.h"
#include "nn/module.h"

namespace lora::models {

// The sizes programs and reports need, whatever the architecture.
struct ModelDims {
  int64_t vocab_size = 0;
  int64_t context_length = 0;  // positions the model was built for
  int64_t n_layer = 0;
  int64_t hidden = 0;           // the residual stream's width
  int64_t n_head = 0, n_kv_head = 0, head_dim = 0;
};

class CausalLM : public nn::Module {
 public:
  // ---- What it is
  virtual std::string model_type() const = 0;  // config.json's model_type: "gpt2", "llama", "qwen2", ...
  virtual ModelDims dims() const = 0;
  // The config.json that describes this model to transformers (and back to lora.cpp).
  virtual nlohmann::json hf_config() const = 0;
  virtual int64_t bos_token_id() const { return -1; }  // -1: none
  virtual int64_t eos_token_id() const { return -1; }
  // Every token that ends a sequence (Llama 3 has several); generation stops at any of them.
  virtual std::vector<int64_t> eos_token_ids() const;
  Device device() const;  // where its parameters live

  // ---- Computing
  // ids [B, T] (I32/I64) -> logits [B, T, vocab]. With `cache` the tokens continue after the cache.length
  // tokens it holds (their positions start there), and their keys and values are appended to it.
  virtual Tensor forward(const Tensor& ids, nn::KVCache* cache = nullptr) = 0;
  // Mean next-token cross-entropy of targets [B, T] (-100: ignored) for inputs ids [B, T].
  virtual Tensor loss(const Tensor& ids, const Tensor& targets) = 0;
  // An empty cache for `batch` sequences of up to `capacity` tokens (0: the context length).
  nn::KVCache make_kv_cache(int64_t batch, int64_t capacity = 0) const;

  // ---- Hugging Face weight names and layout (what model.safetensors holds)
  // The parameters as saved: HF names, HF layout, tied weights once. A LoRA-wrapped layer contributes its
  // base weight as it is now (with the adapter folded in when merged); adapters are saved separately.
  std::vector<std::pair<std::string, Tensor>> hf_state() const;
  // The HF name of a parameter (the module path without LoRA's ".base_layer"), or "" when it is not saved
  // under a name of its own (a tied head).
  virtual std::string hf_name(const std::string& parameter_name) const;
  // Whether HF stores this weight transposed ([in, out]: GPT-2's Conv1D layers).
  virtual bool hf_transposed(const std::string& hf_name) const { return false; }
  // A key of a checkpoint file as the parameter name it loads into: "" for keys that are not parameters
  // (causal-mask buffers, rotary frequency tables, a tied head stored anyway), another spelling mapped to
  // the canonical one. Other keys are loaded by their own name.
  virtual std::string hf_key_to_name(const std::string& key) const { return key; }

  // ---- LoRA
  // The targets --targets may name besides layer paths: slices of fused projections the model declares
  // ("q", "k", "v" of GPT-2's c_attn), and "all-linear" (every linear layer but the output head).
  std::vector<nn::LoRATarget> lora_targets() const;
  // PEFT's fan_in_fan_out: true when the adapted layers are HF Conv1D ([in, out] weights).
  virtual bool hf_fan_in_fan_out() const { return false; }

 protected:
  virtual std::vector<nn::LoRATarget> declared_lora_targets() const { return {}; }
  // The output head's module path ("lm_head"), left out of "all-linear" as PEFT does; "" when tied.
  virtual std::string output_head_path() const { return ""; }
};

}  // namespace lora::models
