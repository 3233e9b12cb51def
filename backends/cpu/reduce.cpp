// CPU reductions: sum_to (the backward of broadcasting, and every sum over axes), expand, sum of squares.
#include <algorithm>
#include <vector>

#include "backends/cpu/broadcast.h"
#include "backends/cpu/cpu_backend.h"

namespace lora {
namespace {

constexpr int64_t kParallelThreshold = 1 << 15;
constexpr int64_t kColumnChunk = 256;

// out[o, :] = sum_j x[o, j, :] for x [outer, n, inner], out [outer, inner].
template <typename T>
void reduce_middle(const T* x, T* out, int64_t outer, int64_t n, int64_t inner) {
  const int64_t total = outer * n * inner;
  if (inner == 1) {
#pragma omp parallel for if (total > kParallelThreshold) schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * n;
      double acc = 0.0;  // double accumulation: long rows lose no precision
      for (int64_t j = 0; j < n; ++j) acc += static_cast<double>(row[j]);
      out[o] = static_cast<T>(acc);
    }
    return;
  }
  // Each (o, chunk of columns) is owned by one thread, which walks the n rows: race-free and vectorised.
  const int64_t chunks = (inner + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel for collapse(2) if (total > kParallelThreshold) schedule(static)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * kColumnChunk, end = std::min(inner, begin + kColumnChunk);
      T* dst = out + o * inner;
      for (int64_t i = begin; i < end; ++i) dst[i] = T(0);
      for (int64_t j = 0; j < n; ++j) {
        const T* src = x + (o * n + j) * inner;
        for (int64_t i = begin; i < end; ++i) dst[i] += src[i];
      }
    }
  }
}

// Describes sum_to as [outer, n, inner] when the reduced axes form one contiguous block (after dropping
// size-1 axes); returns false for other patterns.
bool as_middle_reduction(const Shape& x, const Shape& out, int64_t& outer, int64_t& n, int64_t& inner) {
  const int rank = x.rank();
  // 0 = size-1 axis (ignored), 1 = kept, 2 = reduced
  std::vector<int> kind(rank);
  for (int d = 0; d < rank; ++d) {
    const int od = out.rank() - rank + d;
    const int64_t out_dim = od >= 0 ? out.dims()[od] : 1;
    kind[d] = x.dims()[d] == 1 ? 0 : (out_dim == 1 ? 2 : 1);
  }
  int first = -1, last = -1;
  for (int d = 0; d < rank; ++d) {
    if (kind[d] == 2) {
      if (first < 0) first = d;
      last = d;
    }
  }
  outer = 1, n = 1, inner = 1;
  if (first < 0) {  // nothing reduced: a copy
    outer = x.numel();
    return true;
  }
  for (int d = first; d <= last; ++d) {
    if (kind[d] == 1) return false;  // a kept axis between reduced ones
  }
  for (int d = 0; d < first; ++d) outer *= x.dims()[d];
  for (int d = first; d <= last; ++d) n *= x.dims()[d];
  for (int d = last + 1; d < rank; ++d) inner *= x.dims()[d];
  return true;
}

}  // namespace

void CpuBackend::sum_to(const Tensor& x, Tensor& out) {
  LORA_CHECK(out.rank() <= x.rank(), "sum_to: target shape {} has more axes than {}", out.shape().str(),
             x.shape().str());
  dispatch_floating(x.dtype(), "sum_to", [&]<typename T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    int64_t outer, n, inner;
    if (as_middle_reduction(x.shape(), out.shape(), outer, n, inner)) {
      LORA_CHECK(outer * inner == out.numel(), "sum_to: shape {} cannot be reduced to {}", x.shape().str(),
                 out.shape().str());
      reduce_middle(px, po, outer, n, inner);
      return;
    }
    // General pattern: scatter-add each element of x into its output slot (serial: rare and small).
    const cpu::BroadcastStrides s(out.shape(), x.shape());
    std::fill(po, po + out.numel(), T(0));
    for (int64_t i = 0; i < x.numel(); ++i) po[s.offset(i)] += px[i];
  });
}

void CpuBackend::expand(const Tensor& x, Tensor& out, bool accumulate) {
  dispatch_floating(x.dtype(), "expand", [&]<typename T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t n = out.numel(), nx = x.numel();
    if (cpu::is_trailing_broadcast(x.shape(), out.shape())) {
      const int64_t rows = n / std::max<int64_t>(nx, 1);
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        T* o = po + r * nx;
        if (accumulate) {
          for (int64_t j = 0; j < nx; ++j) o[j] += px[j];
        } else {
          for (int64_t j = 0; j < nx; ++j) o[j] = px[j];
        }
      }
      return;
    }
    const cpu::BroadcastStrides s(x.shape(), out.shape());
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
    for (int64_t i = 0; i < n; ++i) po[i] = (accumulate ? po[i] : T(0)) + px[s.offset(i)];
  });
}

double CpuBackend::sum_squares(const Tensor& x) {
  double total = 0.0;
  dispatch_floating(x.dtype(), "sum_squares", [&]<typename T>() {
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    // `simd` lets each thread keep a vector of partial sums: without it the loop is one chain of dependent
    // double additions, 4 cycles per element (105 ms of a 1.1 s GPT-2 full step went to the gradient norm).
#pragma omp parallel for simd reduction(+ : total) if (parallel : n > kParallelThreshold) schedule(static)
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(p[i]) * static_cast<double>(p[i]);
  });
  return total;
}

}  // namespace lora
