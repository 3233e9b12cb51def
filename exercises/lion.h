// Exercise 2, an optimizer: Lion, the sign of an interpolated momentum (docs/exercises.md). The reference
// solution sits between the EXERCISE markers; `bash scripts/exercise.sh start 2` swaps it for a stub.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace lora::exercises {

struct LionOptions {
  double lr = 1e-4;  // Lion's steps all have size lr: it wants 3-10x less than AdamW
  double beta1 = 0.9, beta2 = 0.99;
  double weight_decay = 0.0;
};

// Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), per parameter p with gradient g
// and one state buffer m (exp_avg; Adam keeps two):
//   c = beta1 m + (1 - beta1) g        the direction, interpolated between momentum and gradient
//   p = p - lr (sign(c) + wd p)        every coordinate moves by exactly lr (plus decoupled weight decay)
//   m = beta2 m + (1 - beta2) g        the momentum, tracked with the slower beta2
// sign(0) = 0. State is allocated by Optimizer::for_each_update, as for SGD and Adam (optim/optimizer.h).
// CPU only: a CUDA version would add a lion_step kernel to backends/ beside adam_step.
class Lion : public optim::Optimizer {
 public:
  Lion(std::vector<Tensor> params, LionOptions options = {}, std::vector<std::string> names = {})
      : Optimizer(std::move(params), options.lr, std::move(names)), options_(options) {
    LORA_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
               "Lion: beta1 {} and beta2 {} must be in [0, 1)", options.beta1, options.beta2);
    LORA_CHECK(options.weight_decay >= 0, "Lion: weight_decay must be >= 0, got {}", options.weight_decay);
  }

  void step() override {
    // EXERCISE 2 BEGIN
    for_each_update([&](Tensor& param, const Tensor& grad, ParamState& state) {
      LORA_CHECK(param.device().is_cpu(), "Lion: parameter on {}: only the CPU is supported", param.device().str());
      if (param.dtype() == DType::F64)
        update(param.data<double>(), grad.data<double>(), state.buffers[0].data<double>(), param.numel());
      else
        update(param.data<float>(), grad.data<float>(), state.buffers[0].data<float>(), param.numel());
    });
    // EXERCISE 2 END
  }

 protected:
  std::string kind() const override { return "lion"; }
  std::vector<std::string> buffer_names() const override { return {"exp_avg"}; }
  std::map<std::string, double> hyperparameters() const override {
    return {{"beta1", options_.beta1}, {"beta2", options_.beta2}, {"weight_decay", options_.weight_decay}};
  }

 private:
  template <typename T>
  void update(T* p, const T* g, T* m, int64_t n) const {
    // EXERCISE 2 BEGIN
    const double b1 = options_.beta1, b2 = options_.beta2, wd = options_.weight_decay;
    for (int64_t i = 0; i < n; ++i) {
      const double c = b1 * m[i] + (1 - b1) * g[i];
      const double sign = c > 0 ? 1.0 : c < 0 ? -1.0 : 0.0;
      p[i] = static_cast<T>(p[i] - lr_ * (sign + wd * p[i]));
      m[i] = static_cast<T>(b2 * m[i] + (1 - b2) * g[i]);
    }
    // EXERCISE 2 END
  }

  LionOptions options_;
};

}  // namespace lora::exercises
