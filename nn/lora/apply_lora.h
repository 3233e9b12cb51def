// apply_lora: freezes a model and wraps the chosen linear layers in LoRALinear, by name.
//
// A target is either
// - a name the model declares (LoRATarget): "q" is rows [0, C) of every GPT-2 c_attn, "all-linear" every
//   linear layer but the output head; several slices of one layer become one LoRALinear whose base matmul
//   stays whole;
// - or a layer path: the end of a dotted module path ("q_proj", "attn.c_proj", "mlp.c_fc") or a pattern
//   with '*' ("h.*.mlp.c_fc", "layers.1*.self_attn.v_proj"), matched against every linear layer, as PEFT's
//   target_modules are.
// Nothing here knows a concrete model: the model passes its declared targets (models::CausalLM does this
// in models/lora.h).
#pragma once

#include <string>
#include <vector>

#include "nn/lora/lora_linear.h"

namespace lora::nn {

// One place LoRA adapts: a linear layer, whole (rows.size == 0) or some rows of its output.
struct LoRASite {
  std::string module_path;
  OutputSlice rows;
};

// A target a model declares by name.
struct LoRATarget {
  std::string name;
  std::string description;  // for --help and errors: "the query slice of attn.c_attn"
  std::vector<LoRASite> sites;
};

struct LoRAConfig {
  LoRAOptions options;
  std::vector<std::string> targets = {"q", "v"};
  std::vector<int64_t> layers;  // block indices to adapt (the first number in a module's path); empty = all

  // Parses "q,v" / "attn.c_proj,mlp.c_fc" into targets; throws on an empty list.
  static std::vector<std::string> parse_targets(const std::string& list);
};

struct LoRASummary {
  int64_t trainable_params = 0, all_params = 0;
  int64_t adapted_layers = 0;
  double trainable_percent() const;
  std::string str() const;  // "trainable params: N || all params: M || trainable%: P"
};

// Freezes every parameter of `model`, then wraps each targeted layer. Throws lora::Error naming a target
// that matches nothing (listing what the model offers) before changing anything.
LoRASummary apply_lora(Module& model, const LoRAConfig& config, const std::vector<LoRATarget>& declared = {});
LoRASummary lora_summary(const Module& model);

// The sites config.targets select (the plan apply_lora carries out), grouped by layer, slices sorted.
std::vector<std::pair<std::string, std::vector<OutputSlice>>> resolve_lora_targets(
    const Module& model, const LoRAConfig& config, const std::vector<LoRATarget>& declared);

// Every LoRALinear in the model with its dotted path.
std::vector<std::pair<std::string, std::shared_ptr<LoRALinear>>> lora_layers(const Module& model);
// Merge or unmerge every adapter of the model (no-ops for those already in that state).
void merge_lora(Module& model);
void unmerge_lora(Module& model);

// The first all-digit component of a dotted path ("transformer.h.3.attn" -> 3), or -1.
int64_t layer_index(const std::string& path);

}  // namespace lora::nn
