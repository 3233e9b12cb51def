// Activation checkpointing of a module's forward (autograd/checkpoint.h): the models' block loops run each
// block through checkpoint_block, which checkpoints it when CheckpointMode is on and gradients are recorded.
#pragma once

#include <functional>

#include "autograd/checkpoint.h"
#include "autograd/grad_mode.h"
#include "nn/module.h"

namespace lora::nn {

// fn: the block's forward on its input; it is kept for backward, so it must capture what it reads by value.
inline Tensor checkpoint_block(const Module& block, const std::function<Tensor(const Tensor&)>& fn, const Tensor& x) {
  if (!autograd::CheckpointMode::is_enabled() || !GradMode::is_enabled()) return fn(x);
  std::vector<uint64_t*> streams;
  for (const auto& [name, counter] : block.named_rng_counters()) streams.push_back(counter);
  return autograd::checkpoint(fn, x, block.parameters(/*trainable_only=*/true), streams);
}

}  // namespace lora::nn
