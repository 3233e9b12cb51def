// AdapterSet: loading adapters through nn::import_adapter's checks, and installing the layers.
#include "serve/adapter_set.h"

#include "autograd/grad_mode.h"

namespace lora::serve {
namespace {

// "transformer.h.0.attn.c_attn" -> the module that holds it and its name there.
void replace_at(nn::Module& root, const std::string& path, std::shared_ptr<nn::Module> replacement) {
  const size_t dot = path.rfind('.');
  nn::Module& parent = dot == std::string::npos ? root : *root.module_at(path.substr(0, dot));
  parent.replace_child(dot == std::string::npos ? path : path.substr(dot + 1), std::move(replacement));
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none" : s;
}

}  // namespace

AdapterSet::AdapterSet(models::CausalLM& model, int64_t capacity) : model_(model) {
  LORA_CHECK(capacity > 0 && capacity <= (1 << 16), "adapters: capacity {} outside [1, 65536]", capacity);
  LORA_CHECK(nn::lora_layers(model_).empty(),
             "adapters: the model already holds LoRA layers (give a plain base model)");
  LORA_CHECK(!model_.row_adapters(), "adapters: the model already serves another adapter set");
  rows_ = std::make_shared<nn::RowAdapters>(capacity);
  model_.set_row_adapters(rows_);
}

AdapterSet::~AdapterSet() {
  try {
    unwrap();
  } catch (...) {  // a destructor must not throw; the model is going away with the set in every caller
  }
  model_.set_row_adapters(nullptr);
}

void AdapterSet::unwrap() {
  for (auto& [path, layer] : layers_) replace_at(model_, path, layer->base_layer);
}
void AdapterSet::wrap() {
  for (auto& [path, layer] : layers_) replace_at(model_, path, layer);
}

int32_t AdapterSet::load(const std::string& name, const nn::AdapterState& state) {
  LORA_CHECK(!name.empty(), "adapters: an adapter needs a name");
  LORA_CHECK(!contains(name), "adapters: '{}' is already loaded (unload it first)", name);
  LORA_CHECK(size() < capacity(), "adapters: all {} slots are taken (unload one first)", capacity());
  int32_t slot = 0;
  while (true) {
    bool taken = false;
    for (const auto& [n, s] : slots_) taken = taken || s == slot;
    if (!taken) break;
    ++slot;
  }

  // The PEFT reader wraps plain Linear layers in LoRALinear after checking everything: let it, on the plain
  // base layers, then take the adapter out of its LoRALinear layers and put the base layers back. The base
  // weights are never written (an unmerged LoRALinear leaves them alone).
  std::vector<std::pair<std::string, MultiLoRALinear::Adapter>> harvested;
  unwrap();
  try {
    nn::import_adapter(model_, state, "adapter '" + name + "'");
    for (auto& [path, layer] : nn::lora_layers(model_)) {
      harvested.push_back({path,
                           {layer->slices(), layer->rank(), layer->scaling(), layer->lora_A.detach().clone(),
                            layer->lora_B.detach().clone()}});
    }
    nn::remove_lora(model_);
  } catch (...) {
    nn::remove_lora(model_);
    wrap();
    throw;
  }
  NoGradGuard no_grad;
  try {
    for (auto& [path, adapter] : harvested) {
      auto it = layers_.find(path);
      if (it == layers_.end()) {
        auto base = std::dynamic_pointer_cast<nn::Linear>(model_.module_at(path));
        LORA_CHECK(base != nullptr, "adapters: '{}' is not a linear layer", path);
        it = layers_.emplace(path, std::make_shared<MultiLoRALinear>(base, rows_)).first;
      }
      it->second->set(slot, std::move(adapter));  // refuses a rank over the kernel's limit
    }
  } catch (...) {
    for (auto& [path, layer] : layers_) layer->clear(slot);
    wrap();
    throw;
  }
  wrap();
  slots_[name] = slot;
  return slot;
}

void AdapterSet::unload(const std::string& name) {
  const int32_t s = slot(name);
  for (auto& [path, layer] : layers_) layer->clear(s);
  slots_.erase(name);
}

int32_t AdapterSet::slot(const std::string& name) const {
  auto it = slots_.find(name);
  LORA_CHECK(it != slots_.end(), "adapters: no adapter named '{}' (loaded: {})", name, joined(names()));
  return it->second;
}

std::vector<std::string> AdapterSet::names() const {
  std::vector<std::string> out;
  for (const auto& [n, s] : slots_) out.push_back(n);
  return out;
}

}  // namespace lora::serve
