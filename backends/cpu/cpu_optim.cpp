// CPU optimizer steps (Adam/AdamW and SGD with momentum), in place, with PyTorch's formulas (see backend.h).
#include <cmath>

#include "backends/cpu/cpu_backend.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 15;  // below this a loop runs on one thread

void check_state(const char* kernel, const char* what, const Tensor& param, const Tensor& t) {
  LORA_CHECK(t.defined(), "{}: {} is undefined", kernel, what);
  LORA_CHECK(t.shape() == param.shape() && t.dtype() == param.dtype(),
             "{}: {} {} {} does not match the parameter {} {}", kernel, what, t.shape().str(), dtype_name(t.dtype()),
             param.shape().str(), dtype_name(param.dtype()));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Adam / AdamW:
//   g = grad (+ wd p when !decoupled);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) when decoupled;   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

void CpuBackend::adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamStep& hp) {
  check_state("adam_step", "grad", param, grad);
  check_state("adam_step", "exp_avg", param, exp_avg);
  check_state("adam_step", "exp_avg_sq", param, exp_avg_sq);
  LORA_CHECK(hp.step >= 1, "adam_step: step must count from 1, got {}", hp.step);
  const int64_t n = param.numel();
  // Bias corrections, once per step, in double.
  const double bias_correction1 = 1.0 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bias_correction2 = 1.0 - std::pow(hp.beta2, static_cast<double>(hp.step));
  const bool l2 = !hp.decoupled && hp.weight_decay != 0.0;
  dispatch_floating(param.dtype(), "adam_step", [&]<typename T>() {
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* m = exp_avg.data<T>();
    T* v = exp_avg_sq.data<T>();
    // Every coefficient is computed in double and rounded once, as PyTorch does: 1 - beta2 rounded from
    // double is 0.001f, while 1 - 0.999f in float is 0.00100005f, a 5e-5 relative error in v.
    const T beta1 = static_cast<T>(hp.beta1), beta2 = static_cast<T>(hp.beta2), eps = static_cast<T>(hp.eps);
    const T one_minus_beta1 = static_cast<T>(1.0 - hp.beta1), one_minus_beta2 = static_cast<T>(1.0 - hp.beta2);
    const T step_size = static_cast<T>(hp.lr / bias_correction1);
    const T bias_correction2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
    const T l2_decay = static_cast<T>(l2 ? hp.weight_decay : 0.0);
    const T keep = static_cast<T>(hp.decoupled ? 1.0 - hp.lr * hp.weight_decay : 1.0);
#pragma omp parallel for simd schedule(static) if (n >= kMinParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i] + l2_decay * p[i];
      m[i] = beta1 * m[i] + one_minus_beta1 * gi;
      v[i] = beta2 * v[i] + one_minus_beta2 * gi * gi;
      p[i] = p[i] * keep - step_size * (m[i] / (std::sqrt(v[i]) / bias_correction2_sqrt + eps));
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// SGD: g = grad + wd p; with momentum: buf = g on the first step, else momentum buf + (1 - dampening) g,
// then g = nesterov ? g + momentum buf : buf; p -= lr g.

void CpuBackend::sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp) {
  check_state("sgd_step", "grad", param, grad);
  const bool use_momentum = hp.momentum != 0.0;
  if (use_momentum) check_state("sgd_step", "momentum_buffer", param, momentum_buffer);
  const int64_t n = param.numel();
  dispatch_floating(param.dtype(), "sgd_step", [&]<typename T>() {
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    const T lr = static_cast<T>(hp.lr), wd = static_cast<T>(hp.weight_decay);
    if (!use_momentum) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallelElements)
      for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
      return;
    }
    T* buf = momentum_buffer.data<T>();
    const T momentum = static_cast<T>(hp.momentum), dampened = static_cast<T>(1.0 - hp.dampening);
    const bool first = hp.first_step, nesterov = hp.nesterov;
#pragma omp parallel for simd schedule(static) if (n >= kMinParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i] + wd * p[i];
      const T b = first ? gi : momentum * buf[i] + dampened * gi;  // buf is not read on the first step
      buf[i] = b;
      p[i] -= lr * (nesterov ? gi + momentum * b : b);
    }
  });
}

}  // namespace lora
