// Module: the building block of models. A module owns named parameters and named child modules, so
// that named_parameters() yields dotted names ("transformer.h.0.attn.c_attn.weight") that match the
// checkpoints others publish. Parameters and children are class members; registration records where
// they live, so a child can be swapped in place (that is how LoRA wraps a layer).
//
// Modules are created with std::make_shared and never copied or moved (the registry points at members).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"
#include "core/tensor.h"

namespace lora::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // ---- Introspection (recursive; names are dotted paths)
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool trainable_only = false) const;
  std::vector<Tensor> parameters(bool trainable_only = false) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // Every descendant with its dotted path (not including this module itself).
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules() const;
  int64_t num_parameters(bool trainable_only = false) const;
  // The descendant at a dotted path ("h.0.attn"); throws lora::Error naming the path when missing.
  std::shared_ptr<Module> module_at(const std::string& path) const;
  // Replaces the child `name` of this module (the new module must fit the member's type).
  void replace_child(const std::string& name, std::shared_ptr<Module> replacement);

  // ---- Modes
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Stops (or resumes) gradients for every parameter below; frozen parameters are re-charged to the
  // frozen-parameter memory category and their gradients are released.
  void freeze();
  void unfreeze();
  // Moves every parameter to `device` (in place: handles held elsewhere see the move).
  void to(Device device);

  // ---- Checkpoints: dotted name -> tensor (shared with the module, not copied)
  std::map<std::string, Tensor> state_dict() const;
  // Copies values into the parameters. strict: every parameter must be given and nothing else; the
  // error lists missing, unexpected and mis-shaped keys. Non-strict: loads what matches by name and
  // shape, and returns the report of what did not (mis-shaped keys are an error in both modes).
  struct LoadReport {
    std::vector<std::string> missing, unexpected;
  };
  LoadReport load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  // The random streams of the model's stochastic layers (dropout): a counter per stream, advanced once per
  // call in training mode, by dotted name. Saved in training checkpoints so that a resumed run draws the
  // same masks as an uninterrupted one.
  std::vector<std::pair<std::string, uint64_t*>> named_rng_counters() const;

  // A short human-readable tree of the module (names, shapes, trainable or frozen).
  std::string summary() const;

 protected:
  // Registers a parameter member (a leaf that requires a gradient, charged to TrainableParameter).
  void register_parameter(const std::string& name, Tensor& member);
  // Registers a child module member; replace_child(name, m) later assigns to that member.
  template <typename M>
  void register_module(const std::string& name, std::shared_ptr<M>& member) {
    add_child(
        name, [&member]() -> std::shared_ptr<Module> { return member; },
        [&member, name](std::shared_ptr<Module> m) {
          auto typed = std::dynamic_pointer_cast<M>(m);
          LORA_CHECK(typed != nullptr, "replace_child: the module given for '{}' has the wrong type", name);
          member = std::move(typed);
        });
  }
  // Registers a random-stream counter member (see named_rng_counters()).
  void register_rng_counter(const std::string& name, uint64_t& counter);
  // Called by train(); modules with their own mode state override it.
  virtual void on_train(bool on) {}
  // Called by to() on every module below; a module holding tensors that are not parameters moves them.
  virtual void on_to(Device device) {}

 private:
  struct ParameterSlot {
    std::string name;
    Tensor* member;
  };
  struct ChildSlot {
    std::string name;
    std::function<std::shared_ptr<Module>()> get;
    std::function<void(std::shared_ptr<Module>)> set;
  };
  void add_child(const std::string& name, std::function<std::shared_ptr<Module>()> get,
                 std::function<void(std::shared_ptr<Module>)> set);
  void collect_parameters(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out,
                          bool trainable_only) const;

  std::vector<ParameterSlot> parameters_;
  std::vector<std::pair<std::string, uint64_t*>> rng_counters_;
  std::vector<ChildSlot> children_;
  bool training_ = true;
};

// A module that maps one tensor to one tensor (Linear, LayerNorm, LoRALinear, ...), so that layers can
// be swapped for one another.
class Layer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// A numbered list of child modules ("0", "1", ...), like PyTorch's ModuleList.
template <typename M>
class ModuleList : public Module {
 public:
  explicit ModuleList(std::vector<std::shared_ptr<M>> items) : items_(std::move(items)) {
    for (size_t i = 0; i < items_.size(); ++i) register_module(std::to_string(i), items_[i]);
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) { return *items_[i]; }
  const std::vector<std::shared_ptr<M>>& items() const { return items_; }

 private:
  std::vector<std::shared_ptr<M>> items_;  // never resized after registration
};

}  // namespace lora::nn
