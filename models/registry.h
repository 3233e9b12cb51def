// The architectures lora.cpp implements, chosen by config.json's model_type, and how programs get a model:
// from a Hugging Face folder, a bare .safetensors file plus a config, or a named preset (random weights).
// This is the one place that names concrete model classes.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "models/base_dtype.h"
#include "models/causal_lm.h"

namespace lora::models {

// model_type values that build a model: "gemma", "gpt2", "llama", "qwen2", "mistral".
std::vector<std::string> supported_model_types();
// Names --config accepts besides a config.json path, e.g. "gpt2", "gpt2-xl", "smollm2-135m".
std::vector<std::string> preset_names();
// The config.json of a preset; throws listing the presets when `name` is none.
nlohmann::json preset_config(const std::string& name);

// A config.json object and where it came from (for errors).
struct ModelConfig {
  nlohmann::json json;
  std::string source;  // "'path/config.json'" or "preset 'gpt2'"
  // The formats config.json's "quantization_config" names when it is lora.cpp's own (a compact checkpoint,
  // models/compact_checkpoint.h), taken out of `json`; empty otherwise. Any other quantization_config is
  // refused when read.
  std::set<std::string> compact_formats = {};
};
// --config VALUE: a preset name, or a path to a config.json.
ModelConfig read_config_arg(const std::string& value);

// The model a config describes, randomly initialised from `seed`. An unsupported model_type, or a field
// the implementation does not honour, is refused naming the field.
std::shared_ptr<CausalLM> create_model(const ModelConfig& config, uint64_t seed = 0);

// What --weights and --config select:
// - weights a model folder: its config.json (or --config) and its weights (model.safetensors, or shards
//   listed by model.safetensors.index.json);
// - weights a .safetensors file or an index .json: --config when given, else the config.json beside it;
// - weights a .gguf file (models/gguf/): the model its metadata describes (--config must be empty), its
//   tensors dequantized to float32, or with a compact `base` (--base-dtype auto or a format) its frozen linear
//   layers built from the file's blocks without a float32 copy (models/gguf/model_io.h);
// - a compact checkpoint (a base saved quantized, models/compact_checkpoint.h): its weights as stored, with a
//   BaseDtype that is auto or their format (the token embedding and head may differ); refused otherwise,
//   naming the formats: nothing of it loads as float32;
// - no weights: a random model from --config (default_preset when --config is empty).
// The weights' names and shapes are checked against the config before anything is loaded.
ModelConfig resolve_config(const std::string& weights, const std::string& config_arg,
                           const std::string& default_preset = "gpt2");
std::shared_ptr<CausalLM> load_model(const std::string& weights, const std::string& config_arg, uint64_t seed = 0,
                                     const std::string& default_preset = "gpt2");
// The same with the frozen base's format known at load (only a GGUF file uses it; other weights load in
// float32 and a program quantizes them after, as models/quantize_base.h does).
std::shared_ptr<CausalLM> load_model(const std::string& weights, const std::string& config_arg, uint64_t seed,
                                     const BaseDtype& base, const std::string& default_preset = "gpt2");

}  // namespace lora::models
