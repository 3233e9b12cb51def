// CPU elementwise kernels: binary ops with broadcasting, unary functions and their derivatives, each
// instantiated per entry of the elementwise table (the formulas are in elementwise_formulas.h).
#include <omp.h>

#include "backends/cpu/broadcast.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise_formulas.h"

namespace lora {
namespace {

// Below this many elements a loop runs on one thread: waking the pool costs more than it saves.
constexpr int64_t kParallelThreshold = 1 << 15;
// On a combined `parallel for simd` a bare if clause also turns off simd (OpenMP 5.0): small tensors, every
// decoding step's among them, then ran scalar code. `if (parallel : ...)` limits it to the threads.

// The op is a template parameter so that each inner loop is a plain vectorisable loop.
template <typename T, typename F>
void binary_kernel(const T* a, const T* b, T* out, const Shape& a_shape, const Shape& b_shape, const Shape& out_shape) {
  const int64_t n = out_shape.numel();
  const int64_t na = a_shape.numel(), nb = b_shape.numel();
  if (na == n && nb == n) {  // same shape
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = F::apply(a[i], b[i]);
    return;
  }
  if (na == n && cpu::is_trailing_broadcast(b_shape, out_shape)) {  // b repeats along leading axes (a bias)
    const int64_t rows = n / nb;
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* ar = a + r * nb;
      T* o = out + r * nb;
      for (int64_t j = 0; j < nb; ++j) o[j] = F::apply(ar[j], b[j]);
    }
    return;
  }
  if (nb == n && cpu::is_trailing_broadcast(a_shape, out_shape)) {
    const int64_t rows = n / na;
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* br = b + r * na;
      T* o = out + r * na;
      for (int64_t j = 0; j < na; ++j) o[j] = F::apply(a[j], br[j]);
    }
    return;
  }
  // General broadcasting: an index computation per element.
  const cpu::BroadcastStrides sa(a_shape, out_shape), sb(b_shape, out_shape);
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = F::apply(a[sa.offset(i)], b[sb.offset(i)]);
}

// y[i] = f(x[i]; alpha)
template <typename T, typename F>
void unary_kernel(const T* x, T* y, int64_t n, T alpha) {
#pragma omp parallel for simd if (parallel : n > kParallelThreshold) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = F::forward(x[i], alpha);
}

// gx[i] = f'(.) gy[i], reading saved[i] (x or y, as the table says) unless the derivative reads nothing.
template <typename T, typename F, bool kReadsSaved>
void unary_backward_kernel(const T* saved, const T* gy, T* gx, int64_t n, T alpha) {
#pragma omp parallel for simd if (parallel : n > kParallelThreshold) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (kReadsSaved)
      gx[i] = F::backward(saved[i], gy[i], alpha);
    else
      gx[i] = F::backward(T(0), gy[i], alpha);
  }
}

}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  dispatch_floating(out.dtype(), "binary", [&]<typename T>() {
    visit_binary(op, [&]<BinaryOp Op>() {
      binary_kernel<T, cpu::Binary<Op>>(a.data<T>(), b.data<T>(), out.data<T>(), a.shape(), b.shape(), out.shape());
    });
  });
}

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) {
  LORA_CHECK(x.numel() == out.numel(), "unary {}: input has {} elements, output {}", unary_info(op).name, x.numel(),
             out.numel());
  dispatch_floating(x.dtype(), "unary", [&]<typename T>() {
    visit_unary(op, [&]<UnaryOp Op>() {
      unary_kernel<T, cpu::Unary<Op>>(x.data<T>(), out.data<T>(), x.numel(), static_cast<T>(alpha));
    });
  });
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& saved, const Tensor& grad_y, Tensor& grad_x, double alpha) {
  check_unary_backward_args(op, saved, grad_y, grad_x);
  dispatch_floating(grad_y.dtype(), "unary_backward", [&]<typename T>() {
    visit_unary(op, [&]<UnaryOp Op>() {
      constexpr bool reads = unary_info(Op).saves != Saves::Nothing;
      unary_backward_kernel<T, cpu::Unary<Op>, reads>(reads ? saved.data<T>() : nullptr, grad_y.data<T>(),
                                                      grad_x.data<T>(), grad_y.numel(), static_cast<T>(alpha));
    });
  });
}

}  // namespace lora
