// CPU kernels of SwiGLU's gating (backends/kernels/swiglu.h): one vectorised pass each way, through the
// elementwise table's Silu formulas so that the results are the composed ops' bit for bit.
#include "backends/cpu/dispatch.h"
#include "backends/cpu/elementwise_formulas.h"
#include "backends/kernels/swiglu.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 15;  // below this a loop runs on one thread
using Silu = cpu::Unary<UnaryOp::Silu>;

}  // namespace

void kernels::SwigluForward::cpu(const Tensor& gate, const Tensor& up, Tensor& y) {
  const int64_t n = gate.numel();
  LORA_CHECK(up.numel() == n && y.numel() == n, "{}: gate {}, up {} and y {} must have the same size", name,
             gate.shape().str(), up.shape().str(), y.shape().str());
  dispatch_floating(gate.dtype(), name, [&]<typename T>() {
    const T* g = gate.data<T>();
    const T* u = up.data<T>();
    T* out = y.data<T>();
#pragma omp parallel for simd if (parallel : n >= kMinParallelElements) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T s = Silu::forward(g[i], T(0));  // rounded to T, as ops::silu stores it
      out[i] = s * u[i];
    }
  });
}

void kernels::SwigluBackward::cpu(const Tensor& grad_y, const Tensor& gate, const Tensor& up, Tensor& grad_gate,
                                  Tensor& grad_up) {
  const bool want_gate = grad_gate.defined(), want_up = grad_up.defined();
  if (!want_gate && !want_up) return;
  const int64_t n = gate.numel();
  LORA_CHECK(grad_y.numel() == n, "{}: grad_y {} and gate {} must have the same size", name, grad_y.shape().str(),
             gate.shape().str());
  LORA_CHECK(!want_gate || (up.defined() && up.numel() == n && grad_gate.numel() == n),
             "{}: grad_gate needs up and grad_gate of {} elements", name, n);
  LORA_CHECK(!want_up || grad_up.numel() == n, "{}: grad_up must hold {} elements", name, n);
  dispatch_floating(gate.dtype(), name, [&]<typename T>() {
    const T* gy = grad_y.data<T>();
    const T* g = gate.data<T>();
    const T* u = want_gate ? up.data<T>() : nullptr;
    T* gg = want_gate ? grad_gate.data<T>() : nullptr;
    T* gu = want_up ? grad_up.data<T>() : nullptr;
    if (want_gate && want_up) {
#pragma omp parallel for simd if (parallel : n >= kMinParallelElements) schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        gg[i] = Silu::backward(g[i], gy[i] * u[i], T(0));
        gu[i] = gy[i] * Silu::forward(g[i], T(0));
      }
    } else if (want_gate) {
#pragma omp parallel for simd if (parallel : n >= kMinParallelElements) schedule(static)
      for (int64_t i = 0; i < n; ++i) gg[i] = Silu::backward(g[i], gy[i] * u[i], T(0));
    } else {
#pragma omp parallel for simd if (parallel : n >= kMinParallelElements) schedule(static)
      for (int64_t i = 0; i < n; ++i) gu[i] = gy[i] * Silu::forward(g[i], T(0));
    }
  });
}

}  // namespace lora
