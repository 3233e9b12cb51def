// LoRA adapters on disk, in PEFT's format, and several adapters held in memory and switched by name.
//
// DIR/adapter_model.safetensors holds "base_model.model.<module path>.lora_A.weight" [r, in] and
// ".lora_B.weight" [out, r]; DIR/adapter_config.json holds r, lora_alpha, target_modules, lora_dropout,
// fan_in_fan_out (true for layers Hugging Face stores [in, out], such as GPT-2's Conv1D), use_rslora.
//
// PEFT has no per-slice LoRA on a fused projection. A LoRALinear that adapts S slices of c_attn (q and
// v: S = 2) is written as one c_attn adapter of rank S r whose B is block-structured (zero rows for the
// unadapted slice k, B_s in the rows of slice s and columns of A_s), with lora_alpha = S alpha (sqrt(S)
// alpha for rsLoRA) so the scale is unchanged: the same function, exactly. The file's metadata records
// the slices, so lora.cpp loads it back into its per-slice form.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nn/lora/apply_lora.h"

namespace lora::nn {

// An adapter in PEFT's layout, in memory.
struct AdapterState {
  std::vector<std::pair<std::string, Tensor>> tensors;  // PEFT key -> tensor (CPU)
  std::map<std::string, std::string> metadata;          // safetensors metadata
  std::string config_json;                              // adapter_config.json text
};

// The model's adapters in PEFT's layout. models/lora.h passes a CausalLM's name and layout.
AdapterState export_adapter(const Module& model, const std::string& base_model_name, bool fan_in_fan_out);
// Replaces the model's adapters with `state` (unmerging and unwrapping any present first). Refuses an
// adapter whose rank, shapes or module paths do not fit the model, or that misses A or B for a module.
void import_adapter(Module& model, const AdapterState& state, const std::string& source = "adapter");

void save_adapter(const Module& model, const std::string& dir, const std::string& base_model_name, bool fan_in_fan_out);
void load_adapter(Module& model, const std::string& dir);
AdapterState read_adapter(const std::string& dir);

// Removes every LoRA wrapper, leaving the frozen base layers in place: unmerged first (the base model
// again), or, with keep_merged, holding whatever is merged into them (a plain model with the adapters
// folded in: what merge_lora writes).
void remove_lora(Module& model, bool keep_merged = false);

// Several adapters for one base model, switched by name: activate() unmerges the current one and puts
// the named one in place (merged for zero-latency inference, or not).
class AdapterBank {
 public:
  void add(const std::string& name, AdapterState state);
  void add_from_dir(const std::string& name, const std::string& dir) { add(name, read_adapter(dir)); }
  void activate(Module& model, const std::string& name, bool merge);
  std::vector<std::string> names() const;
  const std::string& active() const { return active_; }

 private:
  std::map<std::string, AdapterState> adapters_;
  std::string active_;
};

}  // namespace lora::nn
