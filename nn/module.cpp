// Module: registration, recursive traversal, modes, freezing, device moves and state dicts.
#include "nn/module.h"

#include <algorithm>
#include <set>

namespace lora::nn {

void Module::register_parameter(const std::string& name, Tensor& member) {
  LORA_CHECK(member.defined(), "register_parameter: '{}' is undefined", name);
  for (const auto& p : parameters_) LORA_CHECK(p.name != name, "register_parameter: '{}' is registered twice", name);
  member.set_requires_grad(true);
  member.set_name(name);
  member.storage()->recharge(MemoryCategory::TrainableParameter);
  parameters_.push_back({name, &member});
}

void Module::add_child(const std::string& name, std::function<std::shared_ptr<Module>()> get,
                       std::function<void(std::shared_ptr<Module>)> set) {
  for (const auto& c : children_) LORA_CHECK(c.name != name, "register_module: '{}' is registered twice", name);
  children_.push_back({name, std::move(get), std::move(set)});
}

void Module::collect_parameters(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out,
                                bool trainable_only) const {
  for (const auto& p : parameters_) {
    if (!trainable_only || p.member->requires_grad()) out.emplace_back(prefix + p.name, *p.member);
  }
  for (const auto& c : children_) {
    if (auto child = c.get()) child->collect_parameters(prefix + c.name + ".", out, trainable_only);
  }
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool trainable_only) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect_parameters("", out, trainable_only);
  return out;
}

std::vector<Tensor> Module::parameters(bool trainable_only) const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters(trainable_only)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  for (const auto& c : children_) {
    if (auto child = c.get()) out.emplace_back(c.name, child);
  }
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules() const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  for (auto& [name, child] : named_children()) {
    out.emplace_back(name, child);
    for (auto& [sub, m] : child->named_modules()) out.emplace_back(name + "." + sub, m);
  }
  return out;
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters(trainable_only)) n += t.numel();
  return n;
}

std::shared_ptr<Module> Module::module_at(const std::string& path) const {
  const size_t dot = path.find('.');
  const std::string head = path.substr(0, dot);
  for (const auto& c : children_) {
    if (c.name != head) continue;
    auto child = c.get();
    if (dot == std::string::npos) return child;
    return child->module_at(path.substr(dot + 1));
  }
  LORA_FAIL("module_at: no module named '{}' (looking for '{}')", head, path);
}

void Module::replace_child(const std::string& name, std::shared_ptr<Module> replacement) {
  for (auto& c : children_) {
    if (c.name == name) {
      c.set(std::move(replacement));
      return;
    }
  }
  LORA_FAIL("replace_child: this module has no child named '{}'", name);
}

void Module::train(bool on) {
  training_ = on;
  on_train(on);
  for (auto& [name, child] : named_children()) child->train(on);
}

void Module::freeze() {
  for (auto& [name, t] : named_parameters()) {
    t.set_requires_grad(false);
    t.set_grad(Tensor());
    t.storage()->recharge(MemoryCategory::FrozenParameter);
  }
}

void Module::unfreeze() {
  for (auto& [name, t] : named_parameters()) {
    t.set_requires_grad(true);
    t.storage()->recharge(MemoryCategory::TrainableParameter);
  }
}

void Module::to(Device device) {
  for (auto& [name, t] : named_parameters()) {
    if (t.device() == device) continue;
    // Replace the storage inside the shared TensorImpl so every handle to the parameter moves with it.
    Tensor moved = t.to(device);
    t.impl()->storage = moved.storage();
    t.impl()->offset_bytes = moved.impl()->offset_bytes;
    t.set_grad(Tensor());
  }
  on_to(device);
  for (const auto& [path, module] : named_modules()) module->on_to(device);
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : named_parameters()) out.emplace(name, t);
  return out;
}

Module::LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  LoadReport report;
  std::vector<std::string> misshaped;
  std::set<std::string> known;
  const auto params = named_parameters();
  for (const auto& [name, t] : params) {
    known.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      report.missing.push_back(name);
    } else if (it->second.shape() != t.shape()) {
      misshaped.push_back(fmt::format("{} (expected {}, got {})", name, t.shape().str(), it->second.shape().str()));
    }
  }
  for (const auto& [name, t] : state) {
    if (!known.count(name)) report.unexpected.push_back(name);
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 20; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 20) s += fmt::format(", ... ({} in all)", v.size());
    return s;
  };
  std::string problems;
  if (!misshaped.empty()) problems += "\n  mis-shaped keys: " + list(misshaped);
  if (strict && !report.missing.empty()) problems += "\n  missing keys: " + list(report.missing);
  if (strict && !report.unexpected.empty()) problems += "\n  unexpected keys: " + list(report.unexpected);
  LORA_CHECK(problems.empty(), "load_state_dict{}:{}", strict ? " (strict)" : "", problems);

  NoGradGuard no_grad;
  for (auto [name, t] : params) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    Tensor src = it->second;
    if (src.dtype() != t.dtype()) src = src.to(t.dtype());
    t.copy_from(src);
  }
  return report;
}

void Module::register_rng_counter(const std::string& name, uint64_t& counter) {
  for (const auto& [n, c] : rng_counters_)
    LORA_CHECK(n != name, "register_rng_counter: '{}' is registered twice", name);
  rng_counters_.emplace_back(name, &counter);
}

std::vector<std::pair<std::string, uint64_t*>> Module::named_rng_counters() const {
  std::vector<std::pair<std::string, uint64_t*>> out(rng_counters_.begin(), rng_counters_.end());
  for (auto& [name, child] : named_children()) {
    for (auto& [sub, counter] : child->named_rng_counters()) out.emplace_back(name + "." + sub, counter);
  }
  return out;
}

std::string Module::summary() const {
  std::string s;
  for (auto& [name, t] : named_parameters()) {
    s += fmt::format("{:<48} {:<16} {}\n", name, t.shape().str(), t.requires_grad() ? "trainable" : "frozen");
  }
  s += fmt::format("{} parameters, {} trainable\n", num_parameters(), num_parameters(true));
  return s;
}

}  // namespace lora::nn
