// How each architecture lora.cpp implements is spelled in GGUF, as llama.cpp's converter writes it
// (convert_hf_to_gguf.py, gguf-py/gguf/constants.py): the general.architecture name, the hyperparameter
// keys, the tensor names, and the row permutation of Llama's q/k projections.
//
//   model_type   GGUF architecture   q/k rows permuted
//   gpt2         gpt2                no
//   llama        llama               yes (llama.cpp rotates adjacent pairs, transformers rotates halves)
//   mistral      llama               yes
//   qwen2        qwen2               no  (llama.cpp rotates halves for qwen2, as transformers does)
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/gguf.h"

namespace lora::models::gguf_io {

// general.architecture for a config.json model_type; throws for a model_type GGUF export does not know.
std::string gguf_architecture(const std::string& model_type);

// The {arch}.* hyperparameters of a config.json (as CausalLM::hf_config() writes it). Refuses what
// llama.cpp's loader would read differently (llama3 rope scaling, which needs a rope_freqs tensor).
std::vector<std::pair<std::string, gguf::Value>> hparams_to_gguf(const nlohmann::json& config);

// The config.json a GGUF file's metadata describes. Every {arch}.* key is either honoured or refused,
// naming it (sliding windows, experts, partial rotary, YaRN, logit soft-capping, ...); general.* and
// tokenizer.* keys are information. `has_output` / `has_bias`: whether the file holds output.weight
// (an untied head) and attention biases. bos/eos come from tokenizer.ggml.*_token_id.
nlohmann::json config_from_gguf(const gguf::File& file);

// A Hugging Face tensor name ("transformer.h.0.attn.c_attn.weight", "model.layers.3.self_attn.q_proj.bias")
// as its GGUF name ("blk.0.attn_qkv.weight", "blk.3.attn_q.bias"); "" for a name GGUF has no place for.
std::string gguf_tensor_name(const std::string& model_type, const std::string& hf_name);
// The other way, for a GGUF architecture; "" when the name is not one of that architecture's tensors.
std::string hf_tensor_name(const std::string& architecture, const std::string& gguf_name);

// The head count whose rows llama.cpp's converter permutes for this tensor (q_proj: num_attention_heads,
// k_proj: num_key_value_heads), or 0 when the tensor is stored as is.
int64_t permuted_heads(const nlohmann::json& config, const std::string& hf_name);

// Row r of the GGUF tensor holds row source_row(r) of the Hugging Face one (rows of `n_heads` heads):
// within a head of D rows, GGUF row 2i + h is HF row h D/2 + i (h = 0, 1), i.e. the converter's
// w.reshape(n_head, 2, D/2, ...).swapaxes(1, 2).
int64_t hf_row_of_gguf_row(int64_t gguf_row, int64_t rows, int64_t n_heads);

}  // namespace lora::models::gguf_io
