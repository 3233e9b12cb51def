// Gradient clipping by the global L2 norm over all gradients (PyTorch's clip_grad_norm_).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace lora::optim {

// norm = sqrt(sum over every defined gradient g of sum(g^2)); when norm > max_norm every gradient is scaled
// in place by max_norm / (norm + 1e-6). Returns the norm before clipping. Parameters without a gradient are
// skipped. A non-finite norm (inf/nan: an overflowed or broken step) is returned without scaling anything,
// so the caller can detect it and skip the step; scaling by 0 or nan would hide it. max_norm must be >= 0.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace lora::optim
