// CausalLM: what every model shares: its device, KV caches, Hugging Face state, LoRA targets.
#include "models/causal_lm.h"

#include "nn/linear.h"

namespace lora::models {

Device CausalLM::device() const {
  const auto params = named_parameters();
  return params.empty() ? Device::cpu() : params.front().second.device();
}

std::vector<int64_t> CausalLM::eos_token_ids() const {
  const int64_t eos = eos_token_id();
  return eos >= 0 ? std::vector<int64_t>{eos} : std::vector<int64_t>{};
}

nn::KVCache CausalLM::make_kv_cache(int64_t batch, int64_t capacity) const {
  const ModelDims d = dims();
  if (capacity <= 0) capacity = d.context_length;
  LORA_CHECK(capacity <= d.context_length, "{}: a KV cache of {} tokens exceeds the context length {}", model_type(),
             capacity, d.context_length);
  return nn::KVCache::allocate(d.n_layer, batch, d.n_kv_head, capacity, d.head_dim, device());
}

std::string CausalLM::hf_name(const std::string& parameter_name) const {
  std::string name = parameter_name;
  for (size_t at; (at = name.find(".base_layer.")) != std::string::npos;) name.erase(at, 11);
  return name;
}

std::vector<std::pair<std::string, Tensor>> CausalLM::hf_state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  NoGradGuard no_grad;
  for (auto& [name, param] : named_parameters()) {
    if (name.find(".lora_") != std::string::npos) continue;  // adapters are saved on their own
    const std::string hf = hf_name(name);
    if (hf.empty()) continue;
    out.emplace_back(hf, hf_transposed(hf) ? ops::transpose(param, 0, 1) : param);
  }
  return out;
}

std::vector<nn::LoRATarget> CausalLM::lora_targets() const {
  std::vector<nn::LoRATarget> targets = declared_lora_targets();
  // PEFT's "all-linear": every linear layer except the output head.
  nn::LoRATarget all{"all-linear", "every linear layer except the output head", {}};
  const std::string head = output_head_path();
  for (const auto& [path, module] : named_modules()) {
    if (!std::dynamic_pointer_cast<nn::Linear>(module) || path == head) continue;
    if (path.ends_with(".base_layer")) continue;
    all.sites.push_back({path, {}});
  }
  targets.push_back(std::move(all));
  return targets;
}

}  // namespace lora::models
