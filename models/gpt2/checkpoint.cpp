// Hugging Face GPT-2 checkpoint loading and saving.
#include "models/gpt2/checkpoint.h"

#include <filesystem>
#include <map>
#include <set>

#include "core/safetensors.h"

namespace lora::gpt2 {
namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Our parameter name -> HF name: a LoRA wrapper's base layer is the plain layer in HF's model.
std::string hf_name(std::string name) {
  for (size_t at; (at = name.find(".base_layer.")) != std::string::npos;) name.erase(at, 11);
  return name;
}

bool is_ignored_buffer(const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") || name == "lm_head.weight";
}

}  // namespace

bool is_conv1d_weight(const std::string& name) {
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

std::string resolve_weights_file(const std::string& weights_path) {
  LORA_CHECK(fs::exists(weights_path), "--weights '{}': no such file or folder", weights_path);
  if (fs::is_directory(weights_path)) {
    const fs::path file = fs::path(weights_path) / "model.safetensors";
    LORA_CHECK(fs::exists(file), "--weights '{}': the folder has no model.safetensors", weights_path);
    return file.string();
  }
  return weights_path;
}

GPT2Config resolve_config(const std::string& weights_path, const std::string& preset_name) {
  LORA_CHECK(fs::exists(weights_path), "--weights '{}': no such file or folder", weights_path);
  const fs::path p(weights_path);
  const fs::path beside = fs::is_directory(p) ? p / "config.json" : p.parent_path() / "config.json";
  if (!preset_name.empty() && !fs::is_directory(p)) return GPT2Config::preset(preset_name);
  if (fs::exists(beside)) return GPT2Config::from_json_file(beside.string());
  LORA_CHECK(!preset_name.empty(),
             "--weights '{}': no config.json found beside it; pass --config NAME (gpt2, gpt2-medium, ...)", weights_path);
  return GPT2Config::preset(preset_name);
}

void load_hf_weights(GPT2& model, const std::string& path) {
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  // HF name (without "transformer." prefix normalisation) -> file key
  std::map<std::string, std::string> file_keys;
  for (const std::string& key : file.names()) {
    if (is_ignored_buffer(key)) continue;
    const std::string full = key.rfind("transformer.", 0) == 0 ? key : "transformer." + key;
    file_keys[full] = key;
  }
  std::vector<std::string> missing, misshaped;
  std::set<std::string> used;
  NoGradGuard no_grad;
  for (auto& [name, param] : model.named_parameters()) {
    if (name.find(".lora_") != std::string::npos) continue;  // adapters are not part of a base checkpoint
    const std::string hf = hf_name(name);
    auto it = file_keys.find(hf);
    if (it == file_keys.end()) {
      missing.push_back(hf);
      continue;
    }
    used.insert(hf);
    const TensorInfo& info = file.info(it->second);
    Shape expected = param.shape();
    if (is_conv1d_weight(hf)) expected = Shape{param.size(1), param.size(0)};
    if (info.shape != expected) {
      misshaped.push_back(fmt::format("{} (file {}, model expects {})", it->second, info.shape.str(), expected.str()));
      continue;
    }
    Tensor value = file.load(it->second, DType::F32);
    if (is_conv1d_weight(hf)) value = ops::transpose(value, 0, 1);  // [in, out] -> [out, in]
    param.copy_from(value.to(param.device()));
  }
  std::vector<std::string> unexpected;
  for (const auto& [full, key] : file_keys) {
    if (!used.count(full)) unexpected.push_back(key);
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 10; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 10) s += fmt::format(", ... ({} in all)", v.size());
    return s;
  };
  std::string problems;
  if (!missing.empty()) problems += "\n  missing tensors: " + list(missing);
  if (!misshaped.empty()) problems += "\n  mis-shaped tensors: " + list(misshaped);
  if (!unexpected.empty()) problems += "\n  unexpected tensors: " + list(unexpected);
  LORA_CHECK(problems.empty(), "GPT-2 checkpoint '{}' does not match the model ({}):{}", path, model.config().str(),
             problems);
}

std::shared_ptr<GPT2> load_pretrained(const std::string& weights_path, const std::string& preset_name) {
  const GPT2Config config = resolve_config(weights_path, preset_name);
  auto model = std::make_shared<GPT2>(config);
  load_hf_weights(*model, resolve_weights_file(weights_path));
  return model;
}

std::vector<std::pair<std::string, Tensor>> hf_state(const GPT2& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  NoGradGuard no_grad;
  for (auto& [name, param] : model.named_parameters()) {
    if (name.find(".lora_") != std::string::npos) continue;
    const std::string hf = hf_name(name);
    out.emplace_back(hf, is_conv1d_weight(hf) ? ops::transpose(param, 0, 1) : param);
  }
  return out;
}

void save_hf_checkpoint(const GPT2& model, const std::string& dir) {
  fs::create_directories(dir);
  model.config().save_json_file((fs::path(dir) / "config.json").string());
  save_safetensors((fs::path(dir) / "model.safetensors").string(), hf_state(model), {{"format", "pt"}});
}

}  // namespace lora::gpt2
