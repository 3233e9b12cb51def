// Kernel contracts of the optimizer steps (optim/adam.cpp, optim/sgd.cpp), in place on the parameter and
// its state; implemented by backends/cpu/optimizer.cpp and backends/cuda/optimizer.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora {

// Hyperparameters of one Adam/AdamW step (PyTorch's formulation and eps placement):
//   g = grad (+ weight_decay * p when !decoupled)           m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) g^2                           p = p (1 - lr weight_decay) when decoupled
//   p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
struct AdamStep {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled = true;  // AdamW
  int64_t step = 1;       // t, counted from 1
};

// One SGD step: g = grad + weight_decay p; buf = momentum buf + (1 - dampening) g (buf = g on the first
// step); g = nesterov ? g + momentum buf : buf (when momentum != 0); p = p - lr g.
struct SgdStep {
  double lr = 1e-2, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
  bool first_step = true;
};

namespace kernels {

// param, grad, exp_avg, exp_avg_sq: one shape.
struct AdamUpdate {
  static constexpr const char* name = "adam_step";
  LORA_DEVICE_KERNELS(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamStep& hp);
};

// momentum_buffer is undefined when hp.momentum == 0.
struct SgdUpdate {
  static constexpr const char* name = "sgd_step";
  LORA_DEVICE_KERNELS(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp);
};

}  // namespace kernels
}  // namespace lora
