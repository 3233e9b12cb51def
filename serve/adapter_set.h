// AdapterSet: many LoRA adapters resident on one base model at once, loaded and unloaded by name while
// the base weights stay as they are. Every layer some adapter targets becomes a MultiLoRALinear
// (serve/multi_lora.h); each forward pass names its rows' adapters in its ForwardBatch, so one pass
// serves a batch that mixes adapters.
//
//   AdapterSet set(model, 64);
//   set.load("sql", nn::read_adapter("adapters/sql"));
//   // ids [2, T]: row 0 with "sql", row 1 the base model
//   Tensor logits = model.forward(models::ForwardBatch(ids).with_adapters({set.slot("sql"), -1}));
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "nn/lora/adapter.h"
#include "serve/multi_lora.h"

namespace lora::serve {

class AdapterSet {
 public:
  // Up to `capacity` adapters resident at once. The model must hold no LoRALinear (a plain base model).
  AdapterSet(models::CausalLM& model, int64_t capacity);
  ~AdapterSet();  // puts the plain base layers back
  AdapterSet(const AdapterSet&) = delete;
  AdapterSet& operator=(const AdapterSet&) = delete;

  // Loads a PEFT adapter under `name`, with the checks of nn::import_adapter (shapes, module paths, config
  // fields). Refuses a name already loaded and a full set; a refused adapter leaves the set as it was.
  // Returns its slot.
  int32_t load(const std::string& name, const nn::AdapterState& state);
  void unload(const std::string& name);  // throws naming the adapters loaded when `name` is not one

  bool contains(const std::string& name) const { return slots_.count(name) > 0; }
  // The slot of a loaded adapter; throws listing the loaded names otherwise.
  int32_t slot(const std::string& name) const;
  std::vector<std::string> names() const;
  int64_t size() const { return static_cast<int64_t>(slots_.size()); }
  int64_t capacity() const { return rows_->slots(); }

 private:
  void unwrap();  // the plain base layers in the model
  void wrap();    // the MultiLoRALinear layers in the model
  models::CausalLM& model_;
  std::shared_ptr<nn::RowAdapters> rows_;  // the model's (CausalLM::row_adapters) while the set exists
  std::map<std::string, int32_t> slots_;
  std::map<std::string, std::shared_ptr<MultiLoRALinear>> layers_;  // by module path
};

}  // namespace lora::serve
