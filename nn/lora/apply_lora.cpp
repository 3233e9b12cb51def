// apply_lora and the model-wide LoRA helpers.
#include "nn/lora/apply_lora.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "nn/quantized_linear.h"

namespace lora::nn {
namespace {

// '*' matches any run of characters (iterative, so a long pattern cannot exhaust the stack).
bool glob_match(const std::string& pattern, const std::string& text) {
  size_t p = 0, t = 0, star = std::string::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p, ++t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// A target names a layer when it equals its path, is a dotted suffix of it, or matches it (or a dotted
// suffix of it) as a pattern.
bool target_matches(const std::string& target, const std::string& path) {
  if (target.find('*') != std::string::npos) {
    if (glob_match(target, path)) return true;
    for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1)) {
      if (glob_match(target, path.substr(dot + 1))) return true;
    }
    return false;
  }
  if (path == target) return true;
  return path.size() > target.size() && path.compare(path.size() - target.size(), target.size(), target) == 0 &&
         path[path.size() - target.size() - 1] == '.';
}

std::pair<std::string, std::string> split_parent(const std::string& path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

Module& module_or_root(Module& root, const std::string& path) {
  return path.empty() ? root : *root.module_at(path);
}

// The linear layers a target can name, in the model's order: plain Linear modules (a LoRALinear's base
// layer is not offered again).
std::vector<std::pair<std::string, std::shared_ptr<Linear>>> linear_layers(const Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<Linear>>> out;
  for (const auto& [path, module] : model.named_modules()) {
    if (auto linear = std::dynamic_pointer_cast<Linear>(module)) out.emplace_back(path, linear);
  }
  return out;
}

// What the model offers, for an error message: declared names, then layer names (last path component,
// and the last two, without block numbers).
std::string offered_targets(const Module& model, const std::vector<LoRATarget>& declared) {
  std::vector<std::string> names;
  for (const auto& t : declared) names.push_back(t.name);
  std::set<std::string> seen;
  for (const auto& [path, layer] : linear_layers(model)) {
    auto [parent, name] = split_parent(path);
    auto [grandparent, parent_name] = split_parent(parent);
    for (const std::string& n : {name, parent_name.empty() ? name : parent_name + "." + name}) {
      if (n.find_first_not_of("0123456789.") != std::string::npos && seen.insert(n).second) names.push_back(n);
    }
  }
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s + ", or a pattern with *";
}

}  // namespace

int64_t layer_index(const std::string& path) {
  std::stringstream ss(path);
  for (std::string part; std::getline(ss, part, '.');) {
    if (!part.empty() && part.size() < 10 && part.find_first_not_of("0123456789") == std::string::npos) {
      return std::stoll(part);
    }
  }
  return -1;
}

std::vector<std::string> LoRAConfig::parse_targets(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string t; std::getline(ss, t, ',');) {
    t.erase(0, t.find_first_not_of(" \t"));
    t.erase(t.find_last_not_of(" \t") + 1);
    if (!t.empty()) out.push_back(t);
  }
  LORA_CHECK(!out.empty(), "--targets '{}': expected a comma-separated list such as q,v or q_proj,v_proj", list);
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
  s.all_params = model.num_parameters() + num_compact_weights(model);  // a compact base's weights count too
  s.adapted_layers = static_cast<int64_t>(lora_layers(model).size());
  return s;
}

std::vector<std::pair<std::string, std::vector<OutputSlice>>> resolve_lora_targets(
    const Module& model, const LoRAConfig& config, const std::vector<LoRATarget>& declared) {
  LORA_CHECK(!config.targets.empty(), "apply_lora: no targets");
  LORA_CHECK(lora_layers(model).empty(), "apply_lora: the model already has LoRA layers (remove them first)");
  const std::set<int64_t> layers(config.layers.begin(), config.layers.end());
  auto selected = [&](const std::string& path) { return layers.empty() || layers.count(layer_index(path)) > 0; };
  const auto linears = linear_layers(model);
  std::map<std::string, std::shared_ptr<Linear>> by_path(linears.begin(), linears.end());

  std::map<std::string, std::vector<OutputSlice>> plan;  // path -> slices (empty vector: the whole output)
  std::map<std::string, std::string> first_target;       // path -> the target that claimed it, for errors
  auto add = [&](const std::string& target, const std::string& path, OutputSlice rows) {
    auto it = by_path.find(path);
    LORA_CHECK(it != by_path.end(), "apply_lora: target '{}' names '{}', which is not a linear layer of the model",
               target, path);
    const bool whole = rows.size == 0;
    auto [slot, inserted] = plan.try_emplace(path);
    auto& slices = slot->second;
    if (inserted) {
      first_target[path] = target;
      if (!whole) slices.push_back(rows);
      return;
    }
    const bool had_whole = slices.empty();
    if (whole && had_whole) return;  // named twice (e.g. c_attn and all-linear): one adapter, as in PEFT
    LORA_CHECK(!whole && !had_whole,
               "apply_lora: targets '{}' and '{}' both adapt '{}', one of them whole and the "
               "other a slice of it",
               first_target[path], target, path);
    for (const OutputSlice& s : slices) {
      if (s.offset == rows.offset && s.size == rows.size) return;
      LORA_CHECK(rows.offset + rows.size <= s.offset || s.offset + s.size <= rows.offset,
                 "apply_lora: targets '{}' and '{}' adapt overlapping rows of '{}'", first_target[path], target, path);
    }
    slices.push_back(rows);
  };

  for (const std::string& t : config.targets) {
    size_t hits = 0;
    auto declared_it = std::find_if(declared.begin(), declared.end(), [&](const LoRATarget& d) { return d.name == t; });
    if (declared_it != declared.end()) {
      for (const LoRASite& site : declared_it->sites) {
        if (!selected(site.module_path)) continue;
        add(t, site.module_path, site.rows);
        ++hits;
      }
    } else {
      for (const auto& [path, layer] : linears) {
        if (!selected(path) || !target_matches(t, path)) continue;
        add(t, path, {});
        ++hits;
      }
    }
    LORA_CHECK(hits > 0, "apply_lora: target '{}' matches no layer{} (this model offers: {})", t,
               layers.empty() ? "" : " in the chosen layers", offered_targets(model, declared));
  }

  // In the model's order, slices sorted by offset.
  std::vector<std::pair<std::string, std::vector<OutputSlice>>> out;
  for (const auto& [path, layer] : linears) {
    auto it = plan.find(path);
    if (it == plan.end()) continue;
    auto slices = it->second;
    std::sort(slices.begin(), slices.end(),
              [](const OutputSlice& a, const OutputSlice& b) { return a.offset < b.offset; });
    out.emplace_back(path, std::move(slices));
  }
  return out;
}

LoRASummary apply_lora(Module& model, const LoRAConfig& config, const std::vector<LoRATarget>& declared) {
  config.options.validate();
  const auto plan = resolve_lora_targets(model, config, declared);  // every check before any change
  model.freeze();
  uint64_t seed = config.options.seed;
  for (const auto& [path, slices] : plan) {
    auto base = std::dynamic_pointer_cast<Linear>(model.module_at(path));
    LoRAOptions opts = config.options;
    opts.seed = splitmix64(seed++);
    auto [parent, name] = split_parent(path);
    module_or_root(model, parent).replace_child(name, std::make_shared<LoRALinear>(base, opts, slices));
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
