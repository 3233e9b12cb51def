// The model registry: model_type -> architecture, presets, and loading from --weights / --config.
#include "models/registry.h"

#include <filesystem>
#include <set>

#include "core/json_object_reader.h"
#include "models/compact_checkpoint.h"
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

namespace {

// config.json's "quantization_config": lora.cpp's own (a compact checkpoint, whose files' metadata the loader
// reads) is taken out of the architecture's fields; another method's (bitsandbytes, GPTQ, AWQ) is refused.
void take_quantization_config(ModelConfig& config) {
  const auto it = config.json.find("quantization_config");
  if (it == config.json.end() || it->is_null()) return;
  const nlohmann::json& q = *it;
  const std::string method = q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
                                 ? q["quant_method"].get<std::string>()
                                 : "";
  LORA_CHECK(method == kCompactQuantMethod,
             "config {}: quantization_config (quant_method '{}') is not supported: lora.cpp reads float checkpoints "
             "and the compact bases it writes itself; load the unquantized model (--base-dtype quantizes it while "
             "loading)",
             config.source, method);
  JsonObjectReader reader(q, fmt::format("config {}: quantization_config", config.source));
  reader.mark_read("quant_method");
  const nlohmann::json formats = reader.value("formats");
  LORA_CHECK(formats.is_array() && !formats.empty(),
             "config {}: quantization_config.formats must be a non-empty list of formats", config.source);
  for (const nlohmann::json& f : formats) {
    LORA_CHECK(f.is_string() && (f == "bf16" || f == "q8_0" || f == "q4_0" || f == "nf4"),
               "config {}: quantization_config.formats: {} is not bf16, q8_0, q4_0 or nf4", config.source, f.dump());
    config.compact_formats.insert(f.get<std::string>());
  }
  reader.finish();
  config.json.erase("quantization_config");
}

}  // namespace

ModelConfig read_config_arg(const std::string& value) {
  LORA_CHECK(!value.empty(), "--config: empty (a preset name or a config.json path)");
  std::error_code ec;
  if (value.ends_with(".json") || fs::is_regular_file(value, ec)) {
    const ConfigReader reader = ConfigReader::from_file(value);
    ModelConfig config{reader.json(), reader.source()};
    take_quantization_config(config);
    return config;
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

namespace {

// A compact base loads as it is stored: with auto, or with the format its layers were saved in (the token
// embedding and the head, which a GGUF-made base keeps in a format of their own, aside).
void check_stored_formats(const CausalLM& model, const std::map<std::string, StoredCompactWeight>& stored,
                          const BaseDtype& base, const std::string& weights) {
  if (base.automatic) return;
  for (const auto& [key, w] : stored) {
    if (base.format != QuantFormat::F32 && is_compact_table(model, key)) continue;
    LORA_CHECK(w.format == base.format,
               "--weights '{}' holds a base stored compact ({}; '{}' is {}): it loads only as it is stored, under "
               "LoRA or for decoding (--base-dtype auto or {}), not as {}. A full fine-tune, merging or exporting "
               "needs the float weights it was made from",
               weights, stored_formats_text(stored), key, quant_format_name(w.format), quant_format_name(w.format),
               quant_format_name(base.format));
  }
}

}  // namespace

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
  const auto stored = stored_compact_weights(files);
  LORA_CHECK(config.compact_formats.empty() || !stored.empty(),
             "--weights '{}': config {} says the model is a compact base (quantization_config '{}'), but no file "
             "declares a compact weight",
             weights, config.source, kCompactQuantMethod);
  if (!config.compact_formats.empty()) {
    const std::set<std::string> formats = stored_format_names(stored);
    LORA_CHECK(formats == config.compact_formats,
               "--weights '{}': config {} names the formats {} (quantization_config), but the files hold {}", weights,
               config.source, nlohmann::json(config.compact_formats).dump(), nlohmann::json(formats).dump());
  }
  {
    // The model built with shapes only (nothing allocated): a checkpoint its config contradicts is refused
    // before gigabytes are allocated and initialised for nothing.
    DefaultDeviceGuard shapes_only(Device::meta());
    check_hf_weights(*create_model(config, seed), files);
  }
  if (!stored.empty()) {
    // A compact base, read as stored: its body is held in the format it was saved in.
    std::shared_ptr<CausalLM> model;
    {
      DefaultDeviceGuard shapes_only(Device::meta());
      model = create_model(config, seed);
    }
    check_stored_formats(*model, stored, base, weights);
    const nn::QuantizeReport report = load_hf_weights_as_stored(*model, files);
    fmt::print(stderr, "compact base read as stored ({}): {}\n", stored_formats_text(stored), report.str());
    if (!default_device().is_cpu()) model->to(default_device());
    return model;
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
  // Built with shapes only and given the storage each weight is read into: no random initialisation to throw
  // away, and no weight held twice.
  std::shared_ptr<CausalLM> model;
  {
    DefaultDeviceGuard shapes_only(Device::meta());
    model = create_model(config, seed);
  }
  load_hf_weights(*model, files);
  if (!default_device().is_cpu()) model->to(default_device());
  return model;
}

}  // namespace lora::models
