// Gradient norms and clipping by the global L2 norm over all gradients (PyTorch's clip_grad_norm_), and the
// check that every gradient is finite.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"

namespace lora::optim {

// sqrt(sum over every defined gradient g of sum(g^2)), accumulated in double. Parameters without a
// gradient are skipped. Non-finite exactly when some gradient holds an inf or a nan.
double grad_norm(const std::vector<Tensor>& params);

// The index of the first parameter whose gradient holds an inf or a nan, or -1.
int64_t first_nonfinite_gradient(const std::vector<Tensor>& params);

// norm = grad_norm(params); when norm > max_norm every gradient is scaled in place by
// max_norm / (norm + 1e-6). Returns the norm before clipping. A non-finite norm means a broken step: with
// error_if_nonfinite (the default, as PyTorch's option) it throws lora::Error naming the first parameter
// whose gradient is not finite (by `names`, else by index) and scales nothing; without it, it returns the
// norm unscaled and the caller must skip the step. max_norm must be >= 0.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, bool error_if_nonfinite = true,
                      const std::vector<std::string>& names = {});

}  // namespace lora::optim
