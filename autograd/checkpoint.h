// Activation checkpointing (Chen et al., 2016): a function of one tensor, such as a Transformer block, runs
// its forward pass without recording; the tape keeps only its input. Its backward runs the function again
// on that input, recording onto a tape of its own, and backpropagates through that recomputation. Memory
// falls from every block's activations to the block inputs plus one block's activations; the price is one
// more forward pass of each block.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace lora::autograd {

// Whether models run their blocks through checkpoint() (per thread, like GradMode): set by a program,
// read by the models' block loops.
class CheckpointMode {
 public:
  static bool is_enabled();
  static void set_enabled(bool enabled);
};

class CheckpointGuard {
 public:
  explicit CheckpointGuard(bool enabled) : previous_(CheckpointMode::is_enabled()) {
    CheckpointMode::set_enabled(enabled);
  }
  ~CheckpointGuard() { CheckpointMode::set_enabled(previous_); }
  CheckpointGuard(const CheckpointGuard&) = delete;
  CheckpointGuard& operator=(const CheckpointGuard&) = delete;

 private:
  bool previous_;
};

// y = fn(x), recomputed during backward. `params`: the leaves fn reads that may need gradients (they get
// them, added into .grad, by the recomputation's backward). `rng_counters`: the random streams fn
// advances (dropout); the recomputation starts them where the forward pass did, so it draws the same masks.
// fn must be a function of x, params and those streams only. Under NoGradGuard, or when neither x nor a
// parameter needs a gradient, this is fn(x).
Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x, const std::vector<Tensor>& params,
                  const std::vector<uint64_t*>& rng_counters = {});

}  // namespace lora::autograd
