// Adapter export/import in PEFT's format, files, and the adapter bank.
#include "nn/lora/adapter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <charconv>
#include <set>

#include "backends/backend.h"
#include "backends/finite.h"
#include "core/atomic_file.h"
#include "core/files.h"
#include "core/json.h"
#include "core/json_object_reader.h"
#include "core/safetensors.h"

namespace lora::nn {
namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;  // keeps the file's key order: PEFT's patterns match first-in-file

namespace {

const std::string kPrefix = "base_model.model.";

std::pair<std::string, std::string> split_parent(const std::string& path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

Module& module_or_root(Module& root, const std::string& path) {
  return path.empty() ? root : *root.module_at(path);
}

// "0:768,1536:768" <-> slices
std::string slices_str(const std::vector<OutputSlice>& slices) {
  std::string s;
  for (const auto& sl : slices) s += fmt::format("{}{}:{}", s.empty() ? "" : ",", sl.offset, sl.size);
  return s;
}
// "offset:size,offset:size": non-negative integers, nothing else (no sign, no trailing characters).
std::vector<OutputSlice> parse_slices(const std::string& text, const std::string& source) {
  std::vector<OutputSlice> out;
  std::stringstream ss(text);
  auto number = [&](const std::string& part) {
    int64_t v = -1;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    LORA_CHECK(ec == std::errc() && end == part.data() + part.size() && v >= 0 && !part.empty(),
               "{}: malformed slice list '{}' (expected offset:size pairs of non-negative integers)", source, text);
    return v;
  };
  for (std::string part; std::getline(ss, part, ',');) {
    const size_t colon = part.find(':');
    LORA_CHECK(colon != std::string::npos, "{}: malformed slice list '{}'", source, text);
    out.push_back({number(part.substr(0, colon)), number(part.substr(colon + 1))});
  }
  LORA_CHECK(!out.empty(), "{}: empty slice list", source);
  return out;
}

// PEFT's rank_pattern / alpha_pattern keys are regular expressions matched against a module's path as
// re.match(r"(.*\.)?(KEY)$", path). PCRE2 with match and depth limits, so that a hostile pattern fails with
// an error instead of exhausting the stack or the clock.
bool pattern_matches(const std::string& key, const std::string& path, const std::string& what) {
  LORA_CHECK(key.size() <= 1024, "{}: the pattern '{}...' is longer than 1024 characters", what, key.substr(0, 32));
  const std::string regex = "(?:.*\\.)?(?:" + key + ")$";
  int code = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* re =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.c_str()), regex.size(), PCRE2_ANCHORED, &code, &offset, nullptr);
  if (!re) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(code, message, sizeof(message));
    LORA_FAIL("{}: the pattern '{}' is not a valid regular expression: {}", what, key,
              reinterpret_cast<char*>(message));
  }
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(context, 1'000'000);
  pcre2_set_depth_limit(context, 10'000);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(re, nullptr);
  const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(path.c_str()), path.size(), 0, 0, data, context);
  pcre2_match_data_free(data);
  pcre2_match_context_free(context);
  pcre2_code_free(re);
  LORA_CHECK(rc >= 0 || rc == PCRE2_ERROR_NOMATCH, "{}: matching the pattern '{}' failed (error {}: too complex?)",
             what, key, rc);
  return rc >= 0;
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
            B.data<float>()[(layer->slices()[s].offset + i) * S * r + s * r + j] =
                Bs.data<float>()[(s * size + i) * r + j];
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

void save_adapter(const Module& model, const std::string& dir, const std::string& base_model_name,
                  bool fan_in_fan_out) {
  const AdapterState state = export_adapter(model, base_model_name, fan_in_fan_out);
  require_finite(state.tensors, "saving the adapter to '" + dir + "'");  // nothing non-finite is ever written
  // Weights and config as one commit: a reader never sees the weights of one adapter with another's config.
  write_directory_atomically(
      dir,
      [&](const std::string& staging) {
        save_safetensors((fs::path(staging) / "adapter_model.safetensors").string(), state.tensors, state.metadata);
        write_file_atomically((fs::path(staging) / "adapter_config.json").string(),
                              [&](std::ostream& out) { out << state.config_json; });
      },
      [](const std::string& name) { return name != "adapter_model.safetensors" && name != "adapter_config.json"; });
}

// ---------------------------------------------------------------------------------------------------
// Import

AdapterState read_adapter(const std::string& dir) {
  const fs::path weights = fs::path(dir) / "adapter_model.safetensors", config = fs::path(dir) / "adapter_config.json";
  LORA_CHECK(is_directory(dir),
             "adapter '{}': no such folder (expected a PEFT adapter folder with adapter_config.json and "
             "adapter_model.safetensors)",
             dir);
  LORA_CHECK(is_regular_file(weights.string()), "adapter '{}': no adapter_model.safetensors in the folder", dir);
  LORA_CHECK(is_regular_file(config.string()), "adapter '{}': no adapter_config.json in the folder", dir);
  AdapterState state;
  const SafeTensorsFile file = SafeTensorsFile::open(weights.string());
  for (const std::string& name : file.names()) state.tensors.emplace_back(name, file.load(name));
  state.metadata = file.metadata();
  state.config_json = read_json_text(config.string(), "adapter config", 16 << 20);
  return state;
}

void remove_lora(Module& model, bool keep_merged) {
  for (auto& [path, layer] : lora_layers(model)) {
    if (!keep_merged) layer->unmerge();
    auto [parent, name] = split_parent(path);
    module_or_root(model, parent).replace_child(name, layer->base_layer);
  }
}

// ---------------------------------------------------------------------------------------------------
// Import, in four steps: parse adapter_config.json, group the tensors by module, validate each module
// against the model (planning its layer), then apply the plan. Nothing touches the model before the last
// step, so a refused adapter leaves it as it was.

namespace {

// adapter_config.json, read and checked: what the import honours.
struct AdapterSettings {
  ordered_json config;  // kept for the per-module patterns (in the file's order)
  int64_t rank = 0;     // r
  double alpha = 0;     // lora_alpha
  bool rslora = false;
  double dropout = 0;

  // PEFT's per-module overrides, {"name pattern": value}: the first key in the file that matches wins.
  double pattern_value(const char* field, const std::string& path, double fallback, const std::string& source) const {
    if (!config.contains(field) || config[field].is_null()) return fallback;
    LORA_CHECK(config[field].is_object(), "{}: adapter_config.json '{}' must be an object", source, field);
    for (const auto& [pattern, value] : config[field].items()) {
      LORA_CHECK(value.is_number() && std::isfinite(value.get<double>()) && value.get<double>() > 0,
                 "{}: adapter_config.json '{}' holds {} for '{}', expected a positive number", source, field,
                 value.dump(), pattern);
      if (pattern_matches(pattern, path, fmt::format("{}: adapter_config.json '{}'", source, field))) {
        return value.get<double>();
      }
    }
    return fallback;
  }
};

// adapter_config.json's fields: those honoured are read; those that record how the adapter was made or where
// it belongs (no effect on what it computes) are accepted; those that would change the computation are
// refused unless they say "off"; any other field is refused (core/json_object_reader.h).
AdapterSettings parse_adapter_config(const std::string& config_json, const std::string& source) {
  static const std::set<std::string> metadata = {
      "task_type",         "auto_mapping",       "peft_version",      "base_model_name_or_path",
      "revision",          "inference_mode",     "init_lora_weights", "loftq_config",
      "eva_config",        "corda_config",       "lora_ga_config",    "megatron_core",
      "qalora_group_size", "ensure_weight_tying"};
  // field -> the values that mean "not used" (the first is the one messages name)
  static const std::vector<std::pair<std::string, std::vector<nlohmann::json>>> off = {
      {"bias", {"none"}},
      {"use_dora", {false}},
      {"lora_bias", {false}},
      {"use_qalora", {false}},
      {"modules_to_save", {nullptr, nlohmann::json::array()}},
      {"layer_replication", {nullptr}},
      {"trainable_token_indices", {nullptr}},
      {"target_parameters", {nullptr, nlohmann::json::array()}},
      {"alora_invocation_tokens", {nullptr}},
      {"megatron_config", {nullptr}},
      {"velora_config", {nullptr}},
      {"monteclora_config", {nullptr}},
      {"use_bdlora", {nullptr, false}},
      {"arrow_config", {nullptr}},
      {"kasa_config", {nullptr}}};
  const std::string context = source + ": adapter_config.json";
  AdapterSettings settings;
  settings.config = parse_json_ordered(config_json, context);
  JsonObjectReader r(parse_json(config_json, context), context, &metadata);
  r.expect_one_of("peft_type", {"LORA"}, "not a LoRA adapter");
  settings.rank = r.required_integer("r", 1, 1 << 20);
  if (!r.has("lora_alpha")) r.fail("lora_alpha", "is missing");
  settings.alpha = r.number("lora_alpha", 0, 0, 1e30);
  if (!(settings.alpha > 0)) r.fail("lora_alpha", "must be a positive number");
  settings.rslora = r.boolean("use_rslora", false);
  settings.dropout = r.number("lora_dropout", 0.0, 0.0, 1.0);
  if (settings.dropout >= 1) r.fail("lora_dropout", fmt::format("= {} is outside [0, 1)", settings.dropout));
  // Honoured where the modules are matched (plan_layer and the pattern lookups).
  for (const char* key : {"target_modules", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "layers_to_transform",
                          "layers_pattern", "exclude_modules"}) {
    r.mark_read(key);
  }
  for (const auto& [key, values] : off) {
    r.expect_one_of(key, values, fmt::format("only {} is supported", values.front().dump()));
  }
  r.finish();
  return settings;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// PEFT's tensor names, base_model.model.<path>.lora_A.weight (or .lora_A.default.weight, as older PEFT
// saves the default adapter), grouped into (A, B) by module path.
std::map<std::string, std::pair<Tensor, Tensor>> group_by_module(const AdapterState& state, const std::string& source) {
  std::map<std::string, std::pair<Tensor, Tensor>> modules;
  for (const auto& [key, t] : state.tensors) {
    LORA_CHECK(key.rfind(kPrefix, 0) == 0, "{}: unexpected tensor '{}' (expected {}...lora_A.weight / lora_B.weight)",
               source, key, kPrefix);
    const std::string rest = key.substr(kPrefix.size());
    bool matched = false;
    for (const bool is_a : {true, false}) {
      const std::string plain = is_a ? ".lora_A.weight" : ".lora_B.weight";
      const std::string named = is_a ? ".lora_A.default.weight" : ".lora_B.default.weight";
      for (const std::string& suffix : {named, plain}) {
        if (matched || !ends_with(rest, suffix)) continue;
        auto& [A, B] = modules[rest.substr(0, rest.size() - suffix.size())];
        (is_a ? A : B) = t;
        matched = true;
      }
    }
    LORA_CHECK(matched, "{}: unexpected tensor '{}' (only lora_A and lora_B weights are supported)", source, key);
  }
  LORA_CHECK(!modules.empty(), "{}: the adapter holds no tensors", source);
  return modules;
}

// One module's layer, validated against the model and ready to swap in.
struct PlannedLayer {
  std::string path;
  std::shared_ptr<Linear> base;
  LoRAOptions options;
  std::vector<OutputSlice> slices;
  Tensor A, B;  // B in lora.cpp's per-slice layout
};

// B [out, S r] as the file holds a sliced adapter (PEFT's view of one rank-S r adapter on the whole layer:
// slice s's rows are non-zero only in columns s r .. (s+1) r) -> lora.cpp's per-slice layout [S size, r].
// Everything outside the diagonal blocks must be zero, or the file is not what its slice metadata says.
Tensor per_slice_B(const Tensor& B, const std::vector<OutputSlice>& slices, int64_t rank_per_slice,
                   const std::string& path, const std::string& source) {
  const int64_t S = static_cast<int64_t>(slices.size()), size = slices[0].size, rs = rank_per_slice;
  const int64_t out = B.shape()[0], r = B.shape()[1];
  Tensor Bs = Tensor::zeros({S * size, rs});
  const float* src = B.data<float>();
  std::vector<bool> covered(static_cast<size_t>(out * r), false);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < size; ++i) {
      for (int64_t j = 0; j < rs; ++j) {
        const int64_t at = (slices[s].offset + i) * r + s * rs + j;
        Bs.data<float>()[(s * size + i) * rs + j] = src[at];
        covered[at] = true;
      }
    }
  }
  for (int64_t i = 0; i < out * r; ++i) {
    LORA_CHECK(covered[i] || src[i] == 0.0f, "{}: {}.lora_B is not block-structured as its slice metadata says", source,
               path);
  }
  return Bs;
}

PlannedLayer plan_layer(Module& model, const AdapterState& state, const AdapterSettings& settings,
                        const std::string& path, const Tensor& A, const Tensor& B, const std::string& source) {
  const double rank_value = settings.pattern_value("rank_pattern", path, static_cast<double>(settings.rank), source);
  LORA_CHECK(rank_value == std::floor(rank_value) && rank_value <= (1 << 20),
             "{}: the rank of '{}' from rank_pattern, {}, is not a whole number", source, path, rank_value);
  const int64_t r = static_cast<int64_t>(rank_value);
  const double alpha = settings.pattern_value("alpha_pattern", path, settings.alpha, source);
  LORA_CHECK(A.defined(), "{}: module '{}' has lora_B but no lora_A", source, path);
  LORA_CHECK(B.defined(), "{}: module '{}' has lora_A but no lora_B", source, path);
  LORA_CHECK(all_finite(A) && all_finite(B), "{}: {}.lora_A or lora_B holds inf or nan values", source, path);
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
  LORA_CHECK(A.shape() == (Shape{r, in}),
             "{}: {}.lora_A has shape {}, expected [{}, {}] (rank {} from the config's r or rank_pattern)", source,
             path, A.shape().str(), r, in, r);
  LORA_CHECK(B.shape() == (Shape{out, r}),
             "{}: {}.lora_B has shape {}, expected [{}, {}] (rank {} from the config's r or rank_pattern)", source,
             path, B.shape().str(), out, r, r);

  PlannedLayer p{path, base, {}, {}, A, B};
  p.options.dropout = settings.dropout;
  p.options.rslora = settings.rslora;
  if (auto it = state.metadata.find("lora_cpp.slices." + path); it != state.metadata.end()) {
    p.slices = parse_slices(it->second, source);
  }
  const int64_t S = p.slices.empty() ? 1 : static_cast<int64_t>(p.slices.size());
  LORA_CHECK(r % S == 0, "{}: rank {} does not split into {} slices", source, r, S);
  p.options.rank = r / S;
  // The scale of rank S r must equal the per-slice scale: alpha' / (S r) = alpha / r (or / sqrt for rsLoRA).
  p.options.alpha = settings.rslora ? alpha / std::sqrt(static_cast<double>(S)) : alpha / static_cast<double>(S);
  p.options.validate();
  const int64_t size = p.slices.empty() ? out : p.slices[0].size;
  for (const OutputSlice& sl : p.slices) {
    // offset <= out - size rather than offset + size <= out: offsets are read from the file, and a hostile
    // one near 2^63 would wrap the sum and pass, then index B far out of bounds in per_slice_B.
    LORA_CHECK(sl.size == size && sl.offset >= 0 && sl.size > 0 && sl.size <= out && sl.offset <= out - sl.size,
               "{}: slice metadata of '{}' ({}:{}) does not fit its {} outputs", source, path, sl.offset, sl.size, out);
  }
  LORA_CHECK(p.options.rank <= std::min(in, size), "{}: rank {} of '{}' exceeds the layer's size", source,
             p.options.rank, path);
  if (!p.slices.empty()) p.B = per_slice_B(B, p.slices, p.options.rank, path, source);
  return p;
}

// Unwraps the current adapters and wraps the planned layers.
void apply_plan(Module& model, std::vector<PlannedLayer>& plan) {
  remove_lora(model);
  model.freeze();
  NoGradGuard no_grad;
  for (PlannedLayer& p : plan) {
    auto layer = std::make_shared<LoRALinear>(p.base, p.options, p.slices);
    layer->lora_A.copy_from(p.A.to(layer->lora_A.device()));
    layer->lora_B.copy_from(p.B.to(layer->lora_B.device()));
    auto [parent, name] = split_parent(p.path);
    module_or_root(model, parent).replace_child(name, layer);
  }
}

}  // namespace

void import_adapter(Module& model, const AdapterState& state, const std::string& source) {
  const AdapterSettings settings = parse_adapter_config(state.config_json, source);
  std::vector<PlannedLayer> plan;
  for (const auto& [path, ab] : group_by_module(state, source)) {
    plan.push_back(plan_layer(model, state, settings, path, ab.first, ab.second, source));
  }
  apply_plan(model, plan);
}

void load_adapter(Module& model, const std::string& dir) {
  const AdapterState state = read_adapter(dir);
  try {
    import_adapter(model, state, "adapter '" + dir + "'");
  } catch (const Error& e) {
    // When the model refuses the adapter, the model it was trained on is usually the problem: name it.
    std::string trained_on;
    try {
      trained_on = parse_json(state.config_json, "").value("base_model_name_or_path", "");
    } catch (const std::exception&) {
    }
    if (trained_on.empty()) throw;
    LORA_FAIL("{}\n  (the adapter was trained on '{}')", e.what(), trained_on);
  }
}

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
