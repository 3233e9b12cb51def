// apply_lora: freezes a model and wraps the chosen linear layers in LoRALinear, by name.
//
// Targets: "q", "k", "v" adapt those slices of a CausalSelfAttention's fused c_attn (one LoRALinear per
// attention holding one adapter per chosen slice, the base matmul left whole); any other target names
// linear layers by the end of their dotted path ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj",
// "c_proj") or by a pattern with '*' ("h.*.mlp.c_fc").
#pragma once

#include <string>
#include <vector>

#include "nn/lora/lora_linear.h"

namespace lora::nn {

struct LoRAConfig {
  LoRAOptions options;
  std::vector<std::string> targets = {"q", "v"};
  std::vector<int64_t> layers;  // block indices to adapt (the first number in a module's path); empty = all

  // Parses "q,v" / "attn.c_proj,mlp.c_fc" into targets; throws on an empty or unknown-looking list.
  static std::vector<std::string> parse_targets(const std::string& list);
};

struct LoRASummary {
  int64_t trainable_params = 0, all_params = 0;
  int64_t adapted_layers = 0;
  double trainable_percent() const;
  std::string str() const;  // "trainable params: N || all params: M || trainable%: P"
};

// Freezes every parameter of `model`, then wraps each targeted layer. Returns what it did; throws
// lora::Error naming the target when a target matches nothing.
LoRASummary apply_lora(Module& model, const LoRAConfig& config);
LoRASummary lora_summary(const Module& model);

// Every LoRALinear in the model with its dotted path.
std::vector<std::pair<std::string, std::shared_ptr<LoRALinear>>> lora_layers(const Module& model);
// Merge or unmerge every adapter of the model (no-ops for those already in that state).
void merge_lora(Module& model);
void unmerge_lora(Module& model);

}  // namespace lora::nn
