// CPU kernels of layer normalisation over the last axis (backends/kernels/layer_norm.h): forward (saving mean
// and rstd) and backward.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/dispatch.h"
#include "backends/kernels/layer_norm.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 14;  // below this a loop runs on one thread

// x seen as [rows, C]; checks that a [C] parameter and [rows] statistics fit it.
struct LayerNormShape {
  int64_t rows, cols;
};
LayerNormShape layer_norm_shape(const char* kernel, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                const Tensor& rstd) {
  LORA_CHECK(x.rank() >= 1, "{}: x must have at least one dimension", kernel);
  const int64_t cols = x.size(-1);
  LORA_CHECK(cols > 0, "{}: x has shape {}, the normalised axis is empty", kernel, x.shape().str());
  const int64_t rows = x.numel() / cols;
  LORA_CHECK(weight.numel() == cols, "{}: weight has shape {}, expected [{}] for x {}", kernel, weight.shape().str(),
             cols, x.shape().str());
  LORA_CHECK(mean.numel() == rows && rstd.numel() == rows, "{}: mean {} / rstd {} must hold {} elements for x {}",
             kernel, mean.shape().str(), rstd.shape().str(), rows, x.shape().str());
  return {rows, cols};
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// y = (x - mean) * rstd * weight + bias, mean and rstd per row (two passes: mean, then the biased variance)

void kernels::LayerNormForward::cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, Tensor& y,
                                    Tensor& mean, Tensor& rstd) {
  const LayerNormShape shape = layer_norm_shape("layer_norm_forward", x, weight, mean, rstd);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  LORA_CHECK(bias.numel() == cols, "layer_norm_forward: bias has shape {}, expected [{}]", bias.shape().str(), cols);
  LORA_CHECK(y.shape() == x.shape(), "layer_norm_forward: y has shape {}, expected {}", y.shape().str(),
             x.shape().str());
  dispatch_floating(x.dtype(), "layer_norm_forward", [&]<typename T>() {
    const T* xp = x.data<T>();      // [rows, C]
    const T* w = weight.data<T>();  // [C]
    const T* b = bias.data<T>();    // [C]
    T* yp = y.data<T>();            // [rows, C]
    T* meanp = mean.data<T>();      // [rows]
    T* rstdp = rstd.data<T>();      // [rows]
    const T inv_cols = T(1) / static_cast<T>(cols);
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * cols;
      T* yr = yp + r * cols;
      T sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += xr[j];
      const T mu = sum * inv_cols;
      T sq = 0;
      for (int64_t j = 0; j < cols; ++j) sq += (xr[j] - mu) * (xr[j] - mu);
      const T rs = T(1) / std::sqrt(sq * inv_cols + static_cast<T>(eps));
      for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
      meanp[r] = mu;
      rstdp[r] = rs;
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// With xhat = (x - mean) * rstd and gw = grad_y * weight, per row:
//   grad_x = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
// and over all rows: grad_weight += sum(grad_y * xhat), grad_bias += sum(grad_y).
// The parameter gradients are summed per thread into a [threads, 2, C] workspace, then reduced, so no two
// threads write the same element.

void kernels::LayerNormBackward::cpu(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                     const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias) {
  const bool want_x = grad_x.defined(), want_w = grad_weight.defined(), want_b = grad_bias.defined();
  if (!want_x && !want_w && !want_b) return;
  const LayerNormShape shape = layer_norm_shape("layer_norm_backward", x, weight, mean, rstd);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  LORA_CHECK(grad_y.shape() == x.shape(), "layer_norm_backward: grad_y has shape {}, expected {}", grad_y.shape().str(),
             x.shape().str());
  LORA_CHECK(!want_x || grad_x.shape() == x.shape(), "layer_norm_backward: grad_x has shape {}, expected {}",
             grad_x.shape().str(), x.shape().str());
  LORA_CHECK(!want_w || grad_weight.numel() == cols, "layer_norm_backward: grad_weight must hold {} elements", cols);
  LORA_CHECK(!want_b || grad_bias.numel() == cols, "layer_norm_backward: grad_bias must hold {} elements", cols);

  const int threads = rows * cols >= kMinParallelElements ? omp_get_max_threads() : 1;
  Tensor partial;  // [threads, 2, C]: per-thread sums of grad_y * xhat (0) and grad_y (1)
  if (want_w || want_b) {
    partial = Tensor::empty({threads, 2, cols}, x.dtype(), Device::cpu(), MemoryCategory::Workspace);
    partial.zero_();
  }

  dispatch_floating(x.dtype(), "layer_norm_backward", [&]<typename T>() {
    const T* gyp = grad_y.data<T>();  // [rows, C]
    const T* xp = x.data<T>();        // [rows, C]
    const T* w = weight.data<T>();    // [C]
    const T* meanp = mean.data<T>();  // [rows]
    const T* rstdp = rstd.data<T>();  // [rows]
    T* gxp = want_x ? grad_x.data<T>() : nullptr;
    T* partp = partial.defined() ? partial.data<T>() : nullptr;
    const T inv_cols = T(1) / static_cast<T>(cols);

#pragma omp parallel num_threads(threads)
    {
      T* part_w = want_w ? partp + omp_get_thread_num() * 2 * cols : nullptr;         // [C]
      T* part_b = want_b ? partp + omp_get_thread_num() * 2 * cols + cols : nullptr;  // [C]
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* gyr = gyp + r * cols;
        const T* xr = xp + r * cols;
        const T mu = meanp[r], rs = rstdp[r];
        // Parameter sums first: grad_x may alias grad_y and is written last.
        if (part_w) {
          for (int64_t j = 0; j < cols; ++j) part_w[j] += gyr[j] * (xr[j] - mu) * rs;
        }
        if (part_b) {
          for (int64_t j = 0; j < cols; ++j) part_b[j] += gyr[j];
        }
        if (gxp) {
          T mean_gw = 0, mean_gw_xhat = 0;
          for (int64_t j = 0; j < cols; ++j) {
            const T gw = gyr[j] * w[j];
            mean_gw += gw;
            mean_gw_xhat += gw * (xr[j] - mu) * rs;
          }
          mean_gw *= inv_cols;
          mean_gw_xhat *= inv_cols;
          T* gxr = gxp + r * cols;
          for (int64_t j = 0; j < cols; ++j) {
            gxr[j] = rs * (gyr[j] * w[j] - mean_gw - (xr[j] - mu) * rs * mean_gw_xhat);
          }
        }
      }
    }

    // Reduce the per-thread sums into the (accumulating) parameter gradients.
    for (int t = 0; t < threads; ++t) {
      if (want_w) {
        T* gw = grad_weight.data<T>();
        const T* part_w = partp + t * 2 * cols;
        for (int64_t j = 0; j < cols; ++j) gw[j] += part_w[j];
      }
      if (want_b) {
        T* gb = grad_bias.data<T>();
        const T* part_b = partp + t * 2 * cols + cols;
        for (int64_t j = 0; j < cols; ++j) gb[j] += part_b[j];
      }
    }
  });
}

}  // namespace lora
