// CPU kernels of the optimizer steps (backends/kernels/optimizer.h: Adam/AdamW and SGD with momentum), in place,
// with PyTorch's formulas.
#include <omp.h>

#include <algorithm>
#include <cmath>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "backends/cpu/dispatch.h"
#include "backends/kernels/optimizer.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 15;  // below this a loop runs on one thread

void check_state(const char* kernel, const char* what, const Tensor& param, const Tensor& t) {
  LORA_CHECK(t.defined(), "{}: {} is undefined", kernel, what);
  LORA_CHECK(t.shape() == param.shape() && t.dtype() == param.dtype(),
             "{}: {} {} {} does not match the parameter {} {}", kernel, what, t.shape().str(), dtype_name(t.dtype()),
             param.shape().str(), dtype_name(param.dtype()));
}

// The Adam update of elements [0, n) with coefficients already rounded to T (see adam_step). Written out with
// AVX for float because GCC does not vectorise the plain loop: std::sqrt keeps a scalar call per element in
// case it must set errno (v >= 0, so it never does, but only -fno-math-errno tells the compiler), and the
// AdamW step then took 20% of a GPT-2 small step at 4 x 64 on two threads. The vector code does the same
// operations in the same order; the compiler may contract the scalar loop's multiply-adds into FMAs, so the
// two agree within an ulp (tests/test_perf_ops.cpp).
template <typename T>
struct AdamCoefficients {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bias_correction2_sqrt, eps, l2_decay, keep;
};

template <typename T>
void adam_update(T* p, const T* g, T* m, T* v, int64_t n, const AdamCoefficients<T>& c) {
  int64_t i = 0;
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    const __m256 beta1 = _mm256_set1_ps(c.beta1), beta2 = _mm256_set1_ps(c.beta2);
    const __m256 omb1 = _mm256_set1_ps(c.one_minus_beta1), omb2 = _mm256_set1_ps(c.one_minus_beta2);
    const __m256 step = _mm256_set1_ps(c.step_size), bc2 = _mm256_set1_ps(c.bias_correction2_sqrt);
    const __m256 eps = _mm256_set1_ps(c.eps), l2 = _mm256_set1_ps(c.l2_decay), keep = _mm256_set1_ps(c.keep);
    for (; i + 8 <= n; i += 8) {
      const __m256 pi = _mm256_loadu_ps(p + i);
      const __m256 gi = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(l2, pi));
      const __m256 mi = _mm256_add_ps(_mm256_mul_ps(beta1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(omb1, gi));
      const __m256 vi =
          _mm256_add_ps(_mm256_mul_ps(beta2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
      _mm256_storeu_ps(m + i, mi);
      _mm256_storeu_ps(v + i, vi);
      const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
      _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_mul_ps(pi, keep), _mm256_mul_ps(step, _mm256_div_ps(mi, denom))));
    }
  }
#endif
  for (; i < n; ++i) {
    const T gi = g[i] + c.l2_decay * p[i];
    m[i] = c.beta1 * m[i] + c.one_minus_beta1 * gi;
    v[i] = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
    p[i] = p[i] * c.keep - c.step_size * (m[i] / (std::sqrt(v[i]) / c.bias_correction2_sqrt + c.eps));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Adam / AdamW:
//   g = grad (+ wd p when !decoupled);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) when decoupled;   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

void kernels::AdamUpdate::cpu(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                              const AdamStep& hp) {
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
    const AdamCoefficients<T> c{static_cast<T>(hp.beta1),
                                static_cast<T>(hp.beta2),
                                static_cast<T>(1.0 - hp.beta1),
                                static_cast<T>(1.0 - hp.beta2),
                                static_cast<T>(hp.lr / bias_correction1),
                                static_cast<T>(std::sqrt(bias_correction2)),
                                static_cast<T>(hp.eps),
                                static_cast<T>(l2 ? hp.weight_decay : 0.0),
                                static_cast<T>(hp.decoupled ? 1.0 - hp.lr * hp.weight_decay : 1.0)};
#pragma omp parallel if (n >= kMinParallelElements)
    {
      // Each thread takes one contiguous share, in whole 64-byte lines.
      const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t lines = (n + 15) / 16, per = (lines + threads - 1) / threads;
      const int64_t begin = std::min(n, t * per * 16), end = std::min(n, (t + 1) * per * 16);
      adam_update<T>(p + begin, g + begin, m + begin, v + begin, end - begin, c);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// SGD: g = grad + wd p; with momentum: buf = g on the first step, else momentum buf + (1 - dampening) g,
// then g = nesterov ? g + momentum buf : buf; p -= lr g.

void kernels::SgdUpdate::cpu(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp) {
  check_state("sgd_step", "grad", param, grad);
  const bool use_momentum = hp.momentum != 0.0;
  if (use_momentum) check_state("sgd_step", "momentum_buffer", param, momentum_buffer);
  const int64_t n = param.numel();
  dispatch_floating(param.dtype(), "sgd_step", [&]<typename T>() {
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    const T lr = static_cast<T>(hp.lr), wd = static_cast<T>(hp.weight_decay);
    if (!use_momentum) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallelElements)
      for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
      return;
    }
    T* buf = momentum_buffer.data<T>();
    const T momentum = static_cast<T>(hp.momentum), dampened = static_cast<T>(1.0 - hp.dampening);
    const bool first = hp.first_step, nesterov = hp.nesterov;
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i] + wd * p[i];
      const T b = first ? gi : momentum * buf[i] + dampened * gi;  // buf is not read on the first step
      buf[i] = b;
      p[i] -= lr * (nesterov ? gi + momentum * b : b);
    }
  });
}

}  // namespace lora
