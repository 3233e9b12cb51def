// A compact base in a Hugging Face folder: the frozen weights of a model held compact (--base-dtype bf16, q8_0,
// q4_0, nf4, or a GGUF file's blocks) saved as they are held, so that a program reads the base it trains or
// decodes on without quantizing it again, and no float32 copy of it ever exists (`quantize` writes one).
//
// Layout. Each compact weight is stored under its Hugging Face name in lora.cpp's own encoding, always [out, in]
// (rows = output features), also where Hugging Face stores the float weight transposed (GPT-2's Conv1D):
//   bf16   NAME               BF16 [rows, cols]
//   q8_0   NAME               U8   [rows, cols / 32 * 34]    ggml's Q8_0 blocks, row after row
//   q4_0   NAME               U8   [rows, cols / 32 * 18]    ggml's Q4_0 blocks, row after row
//   nf4    NAME               U8   [ceil(rows * cols / 2)]   two 4-bit codes a byte (core/quantized.h)
//          NAME.absmax        F32  [blocks]                  plain: the absmax of each block of 64
//     or   NAME.absmax_codes  I8   [blocks]                  double-quantized: the absmaxes' 8-bit codes,
//          NAME.absmax_scale  F32  [ceil(blocks / 256)]      their scale per 256,
//          NAME.absmax_mean   F32  [1]                       and their mean
// Each file's "__metadata__" has "lora.compact_weights": a JSON object of the compact weights that file holds,
// {NAME: {"format": "nf4", "shape": [rows, cols], "double_quant": true}}; its other tensors are the model's
// float parameters as save_hf_checkpoint writes them. config.json carries "quantization_config":
// {"quant_method": "lora.cpp", "formats": [...]}, which names the folder for what it is: transformers 5.25 warns
// that it does not know the method, then refuses the packed weights' shapes (a bf16 Llama aside, whose weights
// are plain bf16 in its own layout and read correctly).
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/quantized.h"
#include "core/safetensors.h"
#include "models/causal_lm.h"

namespace lora::models {

class HFWeights;

inline constexpr const char* kCompactWeightsMetadataKey = "lora.compact_weights";
inline constexpr const char* kCompactQuantMethod = "lora.cpp";

// One compact weight as a file declares it.
struct StoredCompactWeight {
  std::string name;  // its Hugging Face name: "transformer.h.0.attn.c_attn.weight"
  QuantFormat format = QuantFormat::BF16;
  int64_t rows = 0, cols = 0;  // [out, in]
  bool double_quant = false;   // nf4 only
};

// A safetensors entry a compact weight is stored as: key, dtype and shape.
struct StoredTensorEntry {
  std::string key, dtype;
  Shape shape;
};
// NAME and its companions (the table above) for `w`, in the order they are written.
std::vector<StoredTensorEntry> stored_tensor_entries(const StoredCompactWeight& w);

// One file's "lora.compact_weights" value, parsed strictly: a JSON object of objects with exactly the fields
// "format" (bf16, q8_0, q4_0, nf4), "shape" (two positive integers below 2^31; q8_0 and q4_0 rows whole blocks
// of 32) and "double_quant" (a boolean, true only for nf4). Throws lora::Error naming `source` and the weight.
std::vector<StoredCompactWeight> parse_compact_weights_metadata(const std::string& text, const std::string& source);

// Every compact weight the files of a checkpoint declare, by name; each checked against the file that declares
// it: NAME and its companions present there with exactly their dtype and shape, declared once across the files.
// Empty for a float checkpoint.
std::map<std::string, StoredCompactWeight> stored_compact_weights(const HFWeights& weights);
// The keys those weights occupy in the files (NAME and its companions).
std::set<std::string> stored_compact_keys(const std::map<std::string, StoredCompactWeight>& stored);

// The formats those weights are stored in ("nf4", "q8_0", ...), and the same as one "nf4, q8_0" for messages.
std::set<std::string> stored_format_names(const std::map<std::string, StoredCompactWeight>& stored);
std::string stored_formats_text(const std::map<std::string, StoredCompactWeight>& stored);
// Whether the stored weight `key` is the model's token embedding or output head: tables a GGUF-made base keeps in
// a format of their own, apart from the body's.
bool is_compact_table(const CausalLM& model, const std::string& key);

// The format --base-dtype auto gives a checkpoint: the one most of its compact linear weights take (by element
// count), f32 for a float checkpoint. What a program predicts memory with.
QuantFormat dominant_stored_format(const std::map<std::string, StoredCompactWeight>& stored);

// Reads weight `w` onto the host, dropping its pages of the mapping as it goes. Refused with a lora::Error naming
// the checkpoint and the tensor: a scale or absmax that is inf or nan (a bf16 weight's values included).
QuantizedWeight read_compact_weight(const HFWeights& weights, const StoredCompactWeight& w);

// ---- Saving (models/hf_checkpoint.h's save_hf_checkpoint writes a model's compact weights through these)
// The model's compact weights by Hugging Face name (a LoRA-wrapped layer's base included), in module order.
std::vector<std::pair<StoredCompactWeight, std::shared_ptr<const QuantizedWeight>>> compact_weights_to_save(
    const CausalLM& model);
// The records `w` is written as (stored_tensor_entries), reading `weight`'s tensors where they are.
std::vector<SafeTensorsRecord> compact_weight_records(const StoredCompactWeight& w, const QuantizedWeight& weight);
// The "lora.compact_weights" value of a file holding `weights`.
std::string compact_weights_metadata(const std::vector<StoredCompactWeight>& weights);
// config.json's "quantization_config" for a model holding `weights`.
nlohmann::json compact_quantization_config(const std::vector<StoredCompactWeight>& weights);

// The module a stored compact weight replaces: the path of a linear layer, or the token embedding's, for the
// parameter `name` ("...c_attn.weight"). Refused naming `source` otherwise (a norm's weight, a bias).
std::string compact_weight_site(const CausalLM& model, const std::string& name, const std::string& source);

}  // namespace lora::models
