// apply_lora and the model-wide LoRA helpers.
#include "nn/lora/apply_lora.h"

#include <map>
#include <set>
#include <sstream>

#include "nn/transformer.h"

namespace lora::nn {
namespace {

bool is_qkv(const std::string& t) { return t == "q" || t == "k" || t == "v"; }

// '*' matches any run of characters.
bool glob_match(const char* pattern, const char* text) {
  if (*pattern == '\0') return *text == '\0';
  if (*pattern == '*') return glob_match(pattern + 1, text) || (*text && glob_match(pattern, text + 1));
  return *text == *pattern && glob_match(pattern + 1, text + 1);
}

// A target names a module when it equals the path, is a dotted suffix of it, or matches it as a pattern.
bool target_matches(const std::string& target, const std::string& path) {
  if (target.find('*') != std::string::npos) {  // the pattern may match the whole path or a dotted suffix
    if (glob_match(target.c_str(), path.c_str())) return true;
    for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1)) {
      if (glob_match(target.c_str(), path.c_str() + dot + 1)) return true;
    }
    return false;
  }
  if (path == target) return true;
  return path.size() > target.size() && path.compare(path.size() - target.size(), target.size(), target) == 0 &&
         path[path.size() - target.size() - 1] == '.';
}

// The first all-digit component of a dotted path ("transformer.h.3.attn" -> 3), or -1.
int64_t layer_index(const std::string& path) {
  std::stringstream ss(path);
  for (std::string part; std::getline(ss, part, '.');) {
    if (!part.empty() && part.find_first_not_of("0123456789") == std::string::npos) return std::stoll(part);
  }
  return -1;
}

std::pair<std::string, std::string> split_parent(const std::string& path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

Module& module_or_root(Module& root, const std::string& path) { return path.empty() ? root : *root.module_at(path); }

}  // namespace

std::vector<std::string> LoRAConfig::parse_targets(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string t; std::getline(ss, t, ',');) {
    t.erase(0, t.find_first_not_of(" \t"));
    t.erase(t.find_last_not_of(" \t") + 1);
    if (!t.empty()) out.push_back(t);
  }
  LORA_CHECK(!out.empty(), "--targets '{}': expected a comma-separated list such as q,v or attn.c_proj,mlp.c_fc", list);
  return out;
}

double LoRASummary::trainable_percent() const {
  return all_params ? 100.0 * static_cast<double>(trainable_params) / static_cast<double>(all_params) : 0.0;
}

// 124734720 -> "124,734,720"
static std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string LoRASummary::str() const {
  return fmt::format("trainable params: {} || all params: {} || trainable%: {:.4f}", with_commas(trainable_params),
                     with_commas(all_params), trainable_percent());
}

LoRASummary lora_summary(const Module& model) {
  LoRASummary s;
  s.trainable_params = model.num_parameters(true);
  s.all_params = model.num_parameters();
  s.adapted_layers = static_cast<int64_t>(lora_layers(model).size());
  return s;
}

LoRASummary apply_lora(Module& model, const LoRAConfig& config) {
  config.options.validate();
  LORA_CHECK(!config.targets.empty(), "apply_lora: no targets");
  model.freeze();
  const std::set<int64_t> layers(config.layers.begin(), config.layers.end());
  auto layer_selected = [&](const std::string& path) { return layers.empty() || layers.count(layer_index(path)); };
  std::map<std::string, int> hits;
  uint64_t seed = config.options.seed;

  // Collect first, then wrap: wrapping changes the tree being walked.
  const auto modules = model.named_modules();
  for (const auto& [path, module] : modules) {
    if (!layer_selected(path)) continue;
    // q, k, v: slices of a fused attention projection.
    if (auto attn = std::dynamic_pointer_cast<CausalSelfAttention>(module)) {
      auto base = std::dynamic_pointer_cast<Linear>(attn->c_attn);
      if (!base) continue;  // already wrapped
      const int64_t C = base->in_features();
      std::vector<OutputSlice> slices;
      const char* names[3] = {"q", "k", "v"};
      for (int i = 0; i < 3; ++i) {
        for (const std::string& t : config.targets) {
          if (t == names[i]) {
            slices.push_back({i * C, C});
            hits[t]++;
          }
        }
      }
      if (slices.empty()) continue;
      LoRAOptions opts = config.options;
      opts.seed = splitmix64(seed++);
      attn->replace_child("c_attn", std::make_shared<LoRALinear>(base, opts, slices));
      continue;
    }
    // Named linear layers.
    auto linear = std::dynamic_pointer_cast<Linear>(module);
    if (!linear) continue;
    for (const std::string& t : config.targets) {
      if (is_qkv(t) || !target_matches(t, path)) continue;
      hits[t]++;
      LoRAOptions opts = config.options;
      opts.seed = splitmix64(seed++);
      auto [parent, name] = split_parent(path);
      module_or_root(model, parent).replace_child(name, std::make_shared<LoRALinear>(linear, opts));
      break;
    }
  }
  for (const std::string& t : config.targets) {
    LORA_CHECK(hits[t] > 0, "apply_lora: target '{}' matches no layer{} (known: q, k, v, attn.c_attn, attn.c_proj, "
               "mlp.c_fc, mlp.c_proj, or a pattern with *)", t, layers.empty() ? "" : " in the chosen layers");
  }
  return lora_summary(model);
}

std::vector<std::pair<std::string, std::shared_ptr<LoRALinear>>> lora_layers(const Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<LoRALinear>>> out;
  for (const auto& [path, module] : model.named_modules()) {
    if (auto l = std::dynamic_pointer_cast<LoRALinear>(module)) out.emplace_back(path, l);
  }
  return out;
}

void merge_lora(Module& model) {
  for (auto& [path, layer] : lora_layers(model)) layer->merge();
}

void unmerge_lora(Module& model) {
  for (auto& [path, layer] : lora_layers(model)) layer->unmerge();
}

}  // namespace lora::nn
