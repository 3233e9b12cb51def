// CPU kernels of RMS normalisation over the last axis (backends/kernels/rms_norm.h): forward (saving rstd)
// and backward, one row per iteration, parameter sums per thread.
#include <omp.h>

#include <cmath>

#include "backends/cpu/dispatch.h"
#include "backends/kernels/rms_norm.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 14;  // below this a loop runs on one thread

// x seen as [rows, C]; checks that rstd holds one value per row.
struct RowsCols {
  int64_t rows, cols;
};
RowsCols rms_norm_shape(const char* kernel, const Tensor& x, const Tensor& rstd) {
  LORA_CHECK(x.rank() >= 1 && x.size(-1) > 0, "{}: x has shape {}, expected [..., C] with C > 0", kernel,
             x.shape().str());
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  LORA_CHECK(rstd.numel() == rows, "{}: rstd {} must hold {} elements for x {}", kernel, rstd.shape().str(), rows,
             x.shape().str());
  return {rows, cols};
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) per row

void kernels::RmsNormForward::cpu(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  const auto shape = rms_norm_shape(name, x, rstd);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  LORA_CHECK(weight.numel() == cols, "{}: weight has shape {}, expected [{}]", name, weight.shape().str(), cols);
  LORA_CHECK(y.shape() == x.shape(), "{}: y has shape {}, expected {}", name, y.shape().str(), x.shape().str());
  dispatch_floating(x.dtype(), name, [&]<typename T>() {
    const T* xp = x.data<T>();      // [rows, C]
    const T* w = weight.data<T>();  // [C]
    T* yp = y.data<T>();            // [rows, C]
    T* rstdp = rstd.data<T>();      // [rows]
    const T inv_cols = T(1) / static_cast<T>(cols);
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * cols;
      T* yr = yp + r * cols;
      T sq = 0;
#pragma omp simd reduction(+ : sq)
      for (int64_t j = 0; j < cols; ++j) sq += xr[j] * xr[j];
      const T rs = T(1) / std::sqrt(sq * inv_cols + static_cast<T>(eps));
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) yr[j] = xr[j] * rs * w[j];
      rstdp[r] = rs;
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// With xhat = x * rstd and gw = grad_y * weight, per row: grad_x = rstd * (gw - xhat * mean(gw * xhat));
// over all rows: grad_weight += sum(grad_y * xhat), summed per thread into a [threads, C] workspace and then
// reduced, so no two threads write the same element.

void kernels::RmsNormBackward::cpu(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                   Tensor& grad_x, Tensor& grad_weight) {
  const bool want_x = grad_x.defined(), want_w = grad_weight.defined();
  if (!want_x && !want_w) return;
  const auto shape = rms_norm_shape(name, x, rstd);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  LORA_CHECK(grad_y.shape() == x.shape(), "{}: grad_y has shape {}, expected {}", name, grad_y.shape().str(),
             x.shape().str());
  LORA_CHECK(!want_x || (grad_x.shape() == x.shape() && weight.defined() && weight.numel() == cols),
             "{}: grad_x needs grad_x of shape {} and a weight of [{}]", name, x.shape().str(), cols);
  LORA_CHECK(!want_w || grad_weight.numel() == cols, "{}: grad_weight must hold {} elements", name, cols);

  const int threads = rows * cols >= kMinParallelElements ? omp_get_max_threads() : 1;
  Tensor partial;  // [threads, C]: per-thread sums of grad_y * xhat
  if (want_w) {
    partial = Tensor::empty({threads, cols}, x.dtype(), Device::cpu(), MemoryCategory::Workspace);
    partial.zero_();
  }
  dispatch_floating(x.dtype(), name, [&]<typename T>() {
    const T* gyp = grad_y.data<T>();                   // [rows, C]
    const T* xp = x.data<T>();                         // [rows, C]
    const T* w = want_x ? weight.data<T>() : nullptr;  // [C]
    const T* rstdp = rstd.data<T>();                   // [rows]
    T* gxp = want_x ? grad_x.data<T>() : nullptr;      // [rows, C]
    T* partp = want_w ? partial.data<T>() : nullptr;   // [threads, C]
    const T inv_cols = T(1) / static_cast<T>(cols);

#pragma omp parallel num_threads(threads)
    {
      T* part_w = want_w ? partp + omp_get_thread_num() * cols : nullptr;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* gyr = gyp + r * cols;
        const T* xr = xp + r * cols;
        const T rs = rstdp[r];
        // The weight's sums first: grad_x may alias grad_y and is written last.
        if (part_w) {
          for (int64_t j = 0; j < cols; ++j) part_w[j] += gyr[j] * xr[j] * rs;
        }
        if (gxp) {
          T dot = 0;  // sum(gw * xhat)
          for (int64_t j = 0; j < cols; ++j) dot += gyr[j] * w[j] * xr[j] * rs;
          const T mean_dot = dot * inv_cols;
          T* gxr = gxp + r * cols;
          for (int64_t j = 0; j < cols; ++j) gxr[j] = rs * (gyr[j] * w[j] - xr[j] * rs * mean_dot);
        }
      }
    }
    if (want_w) {  // reduce the per-thread sums into the (accumulating) weight gradient
      T* gw = grad_weight.data<T>();
      for (int t = 0; t < threads; ++t) {
        const T* part_w = partp + t * cols;
        for (int64_t j = 0; j < cols; ++j) gw[j] += part_w[j];
      }
    }
  });
}

}  // namespace lora
