// Models and LoRA adapters as GGUF files, both ways: import a GGUF model (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, Q4_K, Q5_K, Q6_K tensors; memory-mapped) as a CausalLM with its own tokenizer, export a
// CausalLM (merged with its adapter or not) as llama.cpp loads it, and export an adapter as the GGUF LoRA
// adapter `llama-cli --lora` applies.
#pragma once

#include <memory>
#include <string>

#include "core/gguf.h"
#include "models/base_dtype.h"
#include "models/causal_lm.h"
#include "models/gguf/base_blocks.h"
#include "models/gguf/tokenizer.h"

namespace lora::models::gguf_io {

// Whether --weights names a GGUF file (its name ends in .gguf, or it starts with the magic "GGUF").
bool is_gguf_path(const std::string& path);

// What an import did to each tensor type (for the load message and the error report of K-quants).
struct ImportReport {
  std::string architecture;
  std::map<std::string, int64_t> tensors_by_type;  // "q4_K" -> count
  BaseImportReport base;                           // the linear weights held compact (none for an f32 base)
  std::string str() const;
};

// The model a GGUF file holds. Every tensor must be one the model has (by llama.cpp's name, with llama.cpp's
// shape); missing, mis-shaped and unexpected tensors are listed. The model is built on the default device.
// With an f32 base every weight is dequantized to float32. With a compact base (auto, or a format) the
// frozen linear layers of the body (every linear layer but the output head) become nn::QuantizedLinear
// layers built from the file's tensors one at a time (models/gguf/base_blocks.h: Q8_0/Q4_0 blocks kept as they
// are, other types converted), and the model is never held in float32: it is built with shapes only and
// only the embeddings, norms, biases and the output head are allocated in float32 and read. Its linear body
// is then frozen (LoRA wraps those layers; merging into them is refused).
std::shared_ptr<CausalLM> load_gguf_model(const gguf::File& file, uint64_t seed = 0, ImportReport* report = nullptr,
                                          const BaseDtype& base = {});
std::shared_ptr<CausalLM> load_gguf_model(const std::string& path, uint64_t seed = 0, const BaseDtype& base = {});

// The model's config.json as the file describes it (without loading any tensor).
nlohmann::json gguf_model_config(const gguf::File& file);

// export_gguf --type: f32, f16, bf16, q8_0, q4_0. Norms, biases and other 1-D tensors stay f32 (as
// llama.cpp's converter keeps them); a 2-D weight whose rows are not a multiple of 32 is written f16 when
// q8_0/q4_0 is asked for (as the converter does), and counted in the summary.
struct ExportSummary {
  int64_t tensors = 0;
  uint64_t bytes = 0;  // the file's size
  std::map<std::string, int64_t> tensors_by_type;
  std::string str() const;
};
ExportSummary export_gguf(const CausalLM& model, const TokenizerFiles& tokenizer, gguf::TensorType type,
                          const std::string& out, const std::string& name = "");

// The LoRA layers of `model` (unmerged) as a GGUF adapter for the base the model was exported as:
// general.type "adapter", adapter.type "lora", adapter.lora.alpha, and per adapted weight
// "<gguf name>.lora_a" [r, in] and ".lora_b" [out, r] (f32). Slices of a fused projection (GPT-2's
// c_attn q and v) become one adapter of the whole weight, with zero rows of B where no slice is adapted;
// scales that differ between layers are folded into B, so llama.cpp's alpha / rank gives each its own.
ExportSummary export_gguf_adapter(const CausalLM& model, const std::string& out, const std::string& name = "");

}  // namespace lora::models::gguf_io
