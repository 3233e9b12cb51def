// Optimizer: the base of SGD and Adam(W): the parameters, their lazily allocated state, zero_grad, lr, save/load.
//
// A parameter is a leaf Tensor; it is trainable iff requires_grad(). State (Adam's moments, SGD's momentum)
// is allocated on the first step() that finds a parameter trainable AND holding a gradient, on the
// parameter's device, charged to MemoryCategory::OptimizerState: a frozen weight costs no optimizer state.
// Parameters without a gradient at step time are skipped (left unchanged, their step count too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lora::optim {

class Optimizer {
 public:
  // `names` identify the parameters in saved state (typically module.named_parameters()); when empty they
  // default to "0", "1", ... Names must be unique and as many as the parameters.
  Optimizer(std::vector<Tensor> params, double lr, std::vector<std::string> names = {});
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every trainable parameter that has a gradient, under NoGradGuard.
  virtual void step() = 0;
  // Releases every gradient (sets .grad to an undefined Tensor, like PyTorch's set_to_none=True).
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr);

  const std::vector<Tensor>& params() const { return params_; }
  const std::vector<std::string>& names() const { return names_; }
  // Updates applied to parameter i so far (0: it has no state yet).
  int64_t step_count(size_t i) const { return state_.at(i).step; }
  // Bytes of optimizer state held now (all parameters, all devices).
  size_t state_bytes() const;

  // Saves the state as safetensors: tensors "state.<name>.<buffer>" (e.g. "state.0.exp_avg"), and in
  // __metadata__ the optimizer kind, its hyperparameters, the parameter names and the step counts (JSON).
  // The write is atomic (a temporary file, then a rename).
  void save_state(const std::string& path) const;
  // Loads a state saved by the same kind of optimizer over the same parameters (names, count and shapes);
  // restores the buffers, step counts and the learning rate. Throws lora::Error naming the file and the
  // mismatch otherwise, leaving this optimizer unchanged.
  void load_state(const std::string& path);

 protected:
  // The state of one parameter: `buffers` follow buffer_names(), empty until the first update.
  struct ParamState {
    int64_t step = 0;
    std::vector<Tensor> buffers;
  };

  // What a subclass declares: its kind ("sgd", "adam", "adamw"), its state buffers, its hyperparameters.
  virtual std::string kind() const = 0;
  virtual std::vector<std::string> buffer_names() const = 0;
  virtual std::map<std::string, double> hyperparameters() const = 0;

  // The loop of every step(): under NoGradGuard, for each trainable parameter with a gradient, allocates its
  // state (zeros) when it has none, then calls update(param, grad, state) with state.step already advanced.
  using UpdateFn = std::function<void(Tensor& param, const Tensor& grad, ParamState& state)>;
  void for_each_update(const UpdateFn& update);

  double lr_;

 private:
  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::vector<ParamState> state_;  // one per parameter
};

}  // namespace lora::optim
