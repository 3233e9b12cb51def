// The model registry: model_type -> architecture, presets, and loading from --weights / --config.
#include "models/registry.h"

#include <filesystem>

#include "models/gemma/model.h"
#include "models/gguf/model_io.h"
#include "models/gpt2/model.h"
#include "models/hf_checkpoint.h"
#include "models/llama/model.h"

namespace lora::models {
namespace fs = std::filesystem;

std::vector<std::string> supported_model_types() {
  return {"gemma", "gpt2", "llama", "mistral", "qwen2"};
}

std::vector<std::string> preset_names() {
  return {"gpt2", "gpt2-medium",  "gpt2-large", "gpt2-xl",   "small-test",
          "tiny", "smollm2-135m", "llama-tiny", "gemma-tiny"};
}

nlohmann::json preset_config(const std::string& name) {
  nlohmann::json j = gpt2::GPT2Config::preset_json(name);
  if (j.is_null()) j = llama::LlamaConfig::preset_json(name);
  if (j.is_null()) j = gemma::GemmaConfig::preset_json(name);
  if (!j.is_null()) return j;
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  LORA_FAIL("unknown model preset '{}' (presets: {}; or give a config.json path)", name, known);
}

ModelConfig read_config_arg(const std::string& value) {
  LORA_CHECK(!value.empty(), "--config: empty (a preset name or a config.json path)");
  std::error_code ec;
  if (value.ends_with(".json") || fs::is_regular_file(value, ec)) {
    const ConfigReader reader = ConfigReader::from_file(value);
    return {reader.json(), reader.source()};
  }
  return {preset_config(value), "preset '" + value + "'"};
}

std::shared_ptr<CausalLM> create_model(const ModelConfig& config, uint64_t seed) {
  LORA_CHECK(config.json.is_object(), "config {}: expected a JSON object", config.source);
  LORA_CHECK(config.json.contains("model_type") && config.json["model_type"].is_string(),
             "config {}: 'model_type' is missing (expected one of gemma, gpt2, llama, mistral, qwen2)", config.source);
  const std::string type = config.json["model_type"].get<std::string>();
  if (type == "gpt2")
    return std::make_shared<gpt2::GPT2LMHeadModel>(gpt2::GPT2Config::from_json(config.json, config.source), seed);
  if (type == "llama" || type == "mistral" || type == "qwen2") {
    return std::make_shared<llama::LlamaForCausalLM>(llama::LlamaConfig::from_json(config.json, config.source), seed);
  }
  if (type == "gemma")
    return std::make_shared<gemma::GemmaForCausalLM>(gemma::GemmaConfig::from_json(config.json, config.source), seed);
  std::string known;
  for (const auto& t : supported_model_types()) known += (known.empty() ? "" : ", ") + t;
  LORA_FAIL("config {}: 'model_type' = '{}' is not supported (supported: {})", config.source, type, known);
}

ModelConfig resolve_config(const std::string& weights, const std::string& config_arg,
                           const std::string& default_preset) {
  if (!config_arg.empty()) return read_config_arg(config_arg);
  if (weights.empty()) return read_config_arg(default_preset);
  if (gguf_io::is_gguf_path(weights)) {  // a GGUF file describes its model itself
    return {gguf_io::gguf_model_config(gguf::File::open(weights, gguf::MetadataArrays::LengthOnly)),
            fmt::format("GGUF file '{}'", weights)};
  }
  std::error_code ec;
  LORA_CHECK(fs::exists(weights, ec), "--weights '{}': no such file or folder", weights);
  const fs::path p(weights);
  const fs::path beside = fs::is_directory(p, ec) ? p / "config.json" : p.parent_path() / "config.json";
  LORA_CHECK(fs::exists(beside, ec),
             "--weights '{}': no config.json {}; pass --config with a preset name ({}, ...) or a "
             "config.json path",
             weights, fs::is_directory(p, ec) ? "in the folder" : "beside the file", default_preset);
  return read_config_arg(beside.string());
}

std::shared_ptr<CausalLM> load_model(const std::string& weights, const std::string& config_arg, uint64_t seed,
                                     const std::string& default_preset) {
  return load_model(weights, config_arg, seed, BaseDtype{}, default_preset);
}

std::shared_ptr<CausalLM> load_model(const std::string& weights, const std::string& config_arg, uint64_t seed,
                                     const BaseDtype& base, const std::string& default_preset) {
  if (!weights.empty() && gguf_io::is_gguf_path(weights)) {
    LORA_CHECK(config_arg.empty(),
               "--config '{}': a GGUF file (--weights '{}') describes its model itself; leave --config "
               "out",
               config_arg, weights);
    return gguf_io::load_gguf_model(weights, seed, base);
  }
  const ModelConfig config = resolve_config(weights, config_arg, default_preset);
  if (weights.empty()) return create_model(config, seed);
  const HFWeights files = HFWeights::open(weights);  // headers validated before the model exists
  {
    // The model built with shapes only (nothing allocated): a checkpoint its config contradicts is refused
    // before gigabytes are allocated and initialised for nothing.
    DefaultDeviceGuard shapes_only(Device::meta());
    check_hf_weights(*create_model(config, seed), files);
  }
  if (!base.automatic && base.format != QuantFormat::F32) {
    // Quantize while loading: the frozen body never exists in float32 (models/hf_checkpoint.h).
    std::shared_ptr<CausalLM> model;
    {
      DefaultDeviceGuard shapes_only(Device::meta());
      model = create_model(config, seed);
    }
    const nn::QuantizeReport report = load_hf_weights_compact(*model, files, base.format);
    fmt::print(stderr, "quantized while loading to {}: {}\n", quant_format_name(base.format), report.str());
    if (!default_device().is_cpu()) model->to(default_device());
    return model;
  }
  auto model = create_model(config, seed);
  load_hf_weights(*model, files);
  return model;
}

}  // namespace lora::models
