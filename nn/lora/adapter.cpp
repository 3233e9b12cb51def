// Adapter export/import in PEFT's format, files, and the adapter bank.
#include "nn/lora/adapter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "backends/backend.h"
#include "core/atomic_file.h"
#include "core/safetensors.h"

namespace lora::nn {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kPrefix = "base_model.model.";

std::pair<std::string, std::string> split_parent(const std::string& path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

Module& module_or_root(Module& root, const std::string& path) { return path.empty() ? root : *root.module_at(path); }

// "0:768,1536:768" <-> slices
std::string slices_str(const std::vector<OutputSlice>& slices) {
  std::string s;
  for (const auto& sl : slices) s += fmt::format("{}{}:{}", s.empty() ? "" : ",", sl.offset, sl.size);
  return s;
}
std::vector<OutputSlice> parse_slices(const std::string& text, const std::string& source) {
  std::vector<OutputSlice> out;
  std::stringstream ss(text);
  for (std::string part; std::getline(ss, part, ',');) {
    const size_t colon = part.find(':');
    LORA_CHECK(colon != std::string::npos, "{}: malformed slice list '{}'", source, text);
    out.push_back({std::stoll(part.substr(0, colon)), std::stoll(part.substr(colon + 1))});
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Export

AdapterState export_adapter(const Module& model, const std::string& base_model_name, bool fan_in_fan_out) {
  const auto layers = lora_layers(model);
  LORA_CHECK(!layers.empty(), "save adapter: the model has no LoRA layers");
  NoGradGuard no_grad;
  AdapterState state;
  json targets = json::array();
  const LoRAOptions& first = layers[0].second->options();
  int64_t exported_rank = 0;
  double exported_alpha = 0;
  for (const auto& [path, layer] : layers) {
    const LoRAOptions& o = layer->options();
    LORA_CHECK(o.rank == first.rank && o.alpha == first.alpha && o.rslora == first.rslora &&
                   layer->slices().size() == layers[0].second->slices().size(),
               "save adapter: layer '{}' has other LoRA settings than '{}' (PEFT's config holds one rank and alpha)",
               path, layers[0].first);
    const int64_t r = o.rank, S = static_cast<int64_t>(layer->slices().size());
    const int64_t size = layer->slices()[0].size, out = layer->out_features();
    Tensor A = layer->lora_A.to(Device::cpu()).clone();  // [S r, in]
    Tensor B;                                            // [out, S r]
    const bool whole = S == 1 && size == out;
    if (whole) {
      B = layer->lora_B.to(Device::cpu()).clone();
    } else {
      B = Tensor::zeros({out, S * r});
      const Tensor Bs = layer->lora_B.to(Device::cpu());  // [S size, r]
      for (int64_t s = 0; s < S; ++s) {
        for (int64_t i = 0; i < size; ++i) {
          for (int64_t j = 0; j < r; ++j) {
            B.data<float>()[(layer->slices()[s].offset + i) * S * r + s * r + j] = Bs.data<float>()[(s * size + i) * r + j];
          }
        }
      }
      state.metadata["lora_cpp.slices." + path] = slices_str(layer->slices());
    }
    exported_rank = S * r;
    // The scale of rank S r must equal the per-slice scale: alpha' / (S r) = alpha / r (or / sqrt for rsLoRA).
    exported_alpha = o.rslora ? o.alpha * std::sqrt(static_cast<double>(S)) : o.alpha * static_cast<double>(S);
    state.tensors.emplace_back(kPrefix + path + ".lora_A.weight", A);
    state.tensors.emplace_back(kPrefix + path + ".lora_B.weight", B);
    targets.push_back(path);
  }
  state.metadata["format"] = "pt";
  state.metadata["lora_cpp.rank"] = std::to_string(first.rank);
  state.metadata["lora_cpp.alpha"] = fmt::format("{}", first.alpha);
  json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model_name},
      {"r", exported_rank},
      {"lora_alpha", exported_alpha},
      {"lora_dropout", first.dropout},
      {"target_modules", targets},
      {"fan_in_fan_out", fan_in_fan_out},
      {"bias", "none"},
      {"use_rslora", first.rslora},
      {"init_lora_weights", first.gaussian_init ? json("gaussian") : json(true)},
      {"inference_mode", true},
      {"modules_to_save", nullptr},
  };
  state.config_json = config.dump(2) + "\n";
  return state;
}

void save_adapter(const Module& model, const std::string& dir, const std::string& base_model_name, bool fan_in_fan_out) {
  const AdapterState state = export_adapter(model, base_model_name, fan_in_fan_out);
  fs::create_directories(dir);
  save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), state.tensors, state.metadata);
  write_file_atomically((fs::path(dir) / "adapter_config.json").string(),
                        [&](std::ostream& out) { out << state.config_json; });
}

// ---------------------------------------------------------------------------------------------------
// Import

AdapterState read_adapter(const std::string& dir) {
  const fs::path weights = fs::path(dir) / "adapter_model.safetensors", config = fs::path(dir) / "adapter_config.json";
  LORA_CHECK(fs::exists(weights), "adapter '{}': no adapter_model.safetensors in the folder", dir);
  LORA_CHECK(fs::exists(config), "adapter '{}': no adapter_config.json in the folder", dir);
  AdapterState state;
  const SafeTensorsFile file = SafeTensorsFile::open(weights.string());
  for (const std::string& name : file.names()) state.tensors.emplace_back(name, file.load(name));
  state.metadata = file.metadata();
  std::ifstream in(config);
  state.config_json.assign(std::istreambuf_iterator<char>(in), {});
  return state;
}

void remove_lora(Module& model, bool keep_merged) {
  for (auto& [path, layer] : lora_layers(model)) {
    if (!keep_merged) layer->unmerge();
    auto [parent, name] = split_parent(path);
    module_or_root(model, parent).replace_child(name, layer->base_layer);
  }
}

void import_adapter(Module& model, const AdapterState& state, const std::string& source) {
  json config;
  try {
    config = json::parse(state.config_json);
  } catch (const json::exception& e) {
    LORA_FAIL("{}: adapter_config.json is not valid JSON: {}", source, e.what());
  }
  LORA_CHECK(config.is_object() && config.value("peft_type", "LORA") == "LORA", "{}: not a LoRA adapter config", source);
  LORA_CHECK(config.contains("r") && config["r"].is_number_integer(), "{}: adapter_config.json has no integer 'r'", source);
  LORA_CHECK(config.contains("lora_alpha") && config["lora_alpha"].is_number(), "{}: adapter_config.json has no 'lora_alpha'",
             source);
  const int64_t default_rank = config["r"].get<int64_t>();
  const double default_alpha = config["lora_alpha"].get<double>();
  // PEFT's per-module overrides: {"name pattern": value}, matched as the regex (.*\.)?(pattern)$.
  auto pattern_value = [&](const char* field, const std::string& path, double fallback) {
    if (!config.contains(field) || config[field].is_null()) return fallback;
    LORA_CHECK(config[field].is_object(), "{}: adapter_config.json '{}' must be an object", source, field);
    for (const auto& [pattern, value] : config[field].items()) {
      LORA_CHECK(value.is_number(), "{}: adapter_config.json '{}' holds a non-number for '{}'", source, field, pattern);
      try {
        if (std::regex_match(path, std::regex("(.*\\.)?(" + pattern + ")"))) return value.get<double>();
      } catch (const std::regex_error&) {
        LORA_FAIL("{}: adapter_config.json '{}' has an invalid pattern '{}'", source, field, pattern);
      }
    }
    return fallback;
  };
  const bool rslora = config.value("use_rslora", false);
  const double dropout = config.value("lora_dropout", 0.0);

  // Group A and B by module path.
  std::map<std::string, std::pair<Tensor, Tensor>> modules;
  for (const auto& [key, t] : state.tensors) {
    LORA_CHECK(key.rfind(kPrefix, 0) == 0, "{}: unexpected tensor '{}' (expected {}...lora_A.weight / lora_B.weight)",
               source, key, kPrefix);
    std::string rest = key.substr(kPrefix.size());
    for (const std::string dflt : {".lora_A.default.weight", ".lora_B.default.weight"}) {
      if (rest.size() > dflt.size() && rest.compare(rest.size() - dflt.size(), dflt.size(), dflt) == 0) {
        rest = rest.substr(0, rest.size() - dflt.size()) + dflt.substr(0, 7) + ".weight";
      }
    }
    if (rest.size() > 14 && rest.compare(rest.size() - 14, 14, ".lora_A.weight") == 0) {
      modules[rest.substr(0, rest.size() - 14)].first = t;
    } else if (rest.size() > 14 && rest.compare(rest.size() - 14, 14, ".lora_B.weight") == 0) {
      modules[rest.substr(0, rest.size() - 14)].second = t;
    } else {
      LORA_FAIL("{}: unexpected tensor '{}' (only lora_A and lora_B weights are supported)", source, key);
    }
  }
  LORA_CHECK(!modules.empty(), "{}: the adapter holds no tensors", source);

  // Validate everything before touching the model: a refused adapter leaves the model as it was.
  struct Planned {
    std::string path;
    std::shared_ptr<Linear> base;
    LoRAOptions options;
    std::vector<OutputSlice> slices;
    Tensor A, B;  // B in lora.cpp's per-slice layout
  };
  std::vector<Planned> plan;
  for (const auto& [path, ab] : modules) {
    const auto& [A, B] = ab;
    const int64_t r = static_cast<int64_t>(pattern_value("rank_pattern", path, static_cast<double>(default_rank)));
    const double alpha = pattern_value("alpha_pattern", path, default_alpha);
    LORA_CHECK(A.defined(), "{}: module '{}' has lora_B but no lora_A", source, path);
    LORA_CHECK(B.defined(), "{}: module '{}' has lora_A but no lora_B", source, path);
    std::shared_ptr<Module> target;
    try {
      target = model.module_at(path);
    } catch (const Error&) {
      LORA_FAIL("{}: the adapter targets '{}', which this model does not have (an adapter for another model size?)",
                source, path);
    }
    // A layer that already holds an adapter is replaced: the new adapter goes onto its base layer.
    auto base = std::dynamic_pointer_cast<Linear>(target);
    if (auto wrapped = std::dynamic_pointer_cast<LoRALinear>(target)) base = wrapped->base_layer;
    LORA_CHECK(base != nullptr, "{}: '{}' is not a linear layer", source, path);
    const int64_t in = base->in_features(), out = base->out_features();
    LORA_CHECK(A.shape() == (Shape{r, in}), "{}: {}.lora_A has shape {}, expected [{}, {}] (rank {} from the config's r or rank_pattern)",
               source, path, A.shape().str(), r, in, r);
    LORA_CHECK(B.shape() == (Shape{out, r}), "{}: {}.lora_B has shape {}, expected [{}, {}] (rank {} from the config's r or rank_pattern)",
               source, path, B.shape().str(), out, r, r);

    Planned p{path, base, {}, {}, A, B};
    p.options.dropout = dropout;
    p.options.rslora = rslora;
    if (auto it = state.metadata.find("lora_cpp.slices." + path); it != state.metadata.end()) {
      p.slices = parse_slices(it->second, source);
    }
    const int64_t S = p.slices.empty() ? 1 : static_cast<int64_t>(p.slices.size());
    LORA_CHECK(r % S == 0, "{}: rank {} does not split into {} slices", source, r, S);
    p.options.rank = r / S;
    p.options.alpha = rslora ? alpha / std::sqrt(static_cast<double>(S)) : alpha / static_cast<double>(S);
    p.options.validate();
    const int64_t size = p.slices.empty() ? out : p.slices[0].size;
    for (const OutputSlice& sl : p.slices) {
      LORA_CHECK(sl.size == size && sl.offset >= 0 && sl.size > 0 && sl.offset + sl.size <= out,
                 "{}: slice metadata of '{}' does not fit its {} outputs", source, path, out);
    }
    LORA_CHECK(p.options.rank <= std::min(in, size), "{}: rank {} of '{}' exceeds the layer's size", source,
               p.options.rank, path);
    if (!p.slices.empty()) {
      // Take the diagonal blocks B[slice s rows, columns s r .. (s+1) r); everything else must be zero.
      const int64_t rs = p.options.rank;
      Tensor Bs = Tensor::zeros({S * size, rs});
      const float* src = B.data<float>();
      std::vector<bool> covered(static_cast<size_t>(out * r), false);
      for (int64_t s = 0; s < S; ++s) {
        for (int64_t i = 0; i < size; ++i) {
          for (int64_t j = 0; j < rs; ++j) {
            const int64_t at = (p.slices[s].offset + i) * r + s * rs + j;
            Bs.data<float>()[(s * size + i) * rs + j] = src[at];
            covered[at] = true;
          }
        }
      }
      for (int64_t i = 0; i < out * r; ++i) {
        LORA_CHECK(covered[i] || src[i] == 0.0f,
                   "{}: {}.lora_B is not block-structured as its slice metadata says", source, path);
      }
      p.B = Bs;
    }
    plan.push_back(std::move(p));
  }

  // Then swap: unwrap the current adapters, wrap the planned layers.
  remove_lora(model);
  model.freeze();
  NoGradGuard no_grad;
  for (Planned& p : plan) {
    auto layer = std::make_shared<LoRALinear>(p.base, p.options, p.slices);
    layer->lora_A.copy_from(p.A.to(layer->lora_A.device()));
    layer->lora_B.copy_from(p.B.to(layer->lora_B.device()));
    auto [parent, name] = split_parent(p.path);
    module_or_root(model, parent).replace_child(name, layer);
  }
}

void load_adapter(Module& model, const std::string& dir) { import_adapter(model, read_adapter(dir), "adapter '" + dir + "'"); }

// ---------------------------------------------------------------------------------------------------
// AdapterBank

void AdapterBank::add(const std::string& name, AdapterState state) {
  LORA_CHECK(!name.empty(), "adapter bank: an adapter needs a name");
  adapters_[name] = std::move(state);
}

void AdapterBank::activate(Module& model, const std::string& name, bool merge) {
  auto it = adapters_.find(name);
  if (it == adapters_.end()) {
    std::string known;
    for (const auto& [n, s] : adapters_) known += (known.empty() ? "" : ", ") + n;
    LORA_FAIL("adapter bank: no adapter named '{}' (have: {})", name, known.empty() ? "none" : known);
  }
  import_adapter(model, it->second, "adapter '" + name + "'");
  if (merge) merge_lora(model);
  active_ = name;
}

std::vector<std::string> AdapterBank::names() const {
  std::vector<std::string> out;
  for (const auto& [n, s] : adapters_) out.push_back(n);
  return out;
}

}  // namespace lora::nn
