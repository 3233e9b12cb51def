// CUDA kernels of softmax and log_softmax over the last axis (backends/kernels/softmax.h), forward and
// backward. A row is handled by one warp (up to 1024 columns) or one block; max and sum come from one online
// pass.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/kernels/softmax.h"

namespace lora::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// softmax / log_softmax

template <bool kBlock, bool kLog>
__global__ void softmax_forward_kernel(const float* x, float* y, int64_t rows, int64_t cols) {
  __shared__ float smem[64];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* xr = x + row * cols;
  float* yr = y + row * cols;
  MaxSum ms = maxsum_empty();
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) maxsum_add(ms, xr[j]);
  ms = Map::maxsum(ms, smem);
  if constexpr (kLog) {
    const float lse = ms.m + logf(ms.s);
    for (int64_t j = Map::lane(); j < cols; j += Map::width()) yr[j] = xr[j] - lse;
  } else {
    const float inv = 1.f / ms.s;
    for (int64_t j = Map::lane(); j < cols; j += Map::width()) yr[j] = expf(xr[j] - ms.m) * inv;
  }
}

// softmax:     gx = y * (gy - sum(gy * y))
// log_softmax: gx = gy - exp(y) * sum(gy)
template <bool kBlock, bool kLog>
__global__ void softmax_backward_kernel(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* yr = y + row * cols;
  const float* gr = gy + row * cols;
  float* out = gx + row * cols;
  float dot = 0.f;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) dot += kLog ? gr[j] : gr[j] * yr[j];
  dot = Map::sum(dot, smem);
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) {
    out[j] = kLog ? gr[j] - expf(yr[j]) * dot : yr[j] * (gr[j] - dot);
  }
}

// ---------------------------------------------------------------------------------------------------
// Launchers

void softmax_forward_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block) {
    if (log)
      softmax_forward_kernel<true, true><<<l.grid, l.threads>>>(x, y, rows, cols);
    else
      softmax_forward_kernel<true, false><<<l.grid, l.threads>>>(x, y, rows, cols);
  } else {
    if (log)
      softmax_forward_kernel<false, true><<<l.grid, l.threads>>>(x, y, rows, cols);
    else
      softmax_forward_kernel<false, false><<<l.grid, l.threads>>>(x, y, rows, cols);
  }
  LORA_CUDA_CHECK_LAUNCH(log ? "log_softmax_forward" : "softmax_forward");
}

void softmax_backward_f32(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block) {
    if (log)
      softmax_backward_kernel<true, true><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
    else
      softmax_backward_kernel<true, false><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
  } else {
    if (log)
      softmax_backward_kernel<false, true><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
    else
      softmax_backward_kernel<false, false><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
  }
  LORA_CUDA_CHECK_LAUNCH(log ? "log_softmax_backward" : "softmax_backward");
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::SoftmaxForward::cuda(const Tensor& x, Tensor& y, bool log) {
  using namespace lora::cuda;
  const char* k = log ? "log_softmax_forward" : "softmax_forward";
  activate(k, {&x, &y});
  check_same_shape(k, x, "x", y, "y");
  const Rows r = rows_of(x);
  softmax_forward_f32(f32(k, x, "x"), f32(k, y, "y"), r.rows, r.cols, log);
}

void kernels::SoftmaxBackward::cuda(const Tensor& y, const Tensor& grad_y, Tensor& grad_x, bool log) {
  using namespace lora::cuda;
  const char* k = log ? "log_softmax_backward" : "softmax_backward";
  activate(k, {&y, &grad_y, &grad_x});
  check_same_shape(k, y, "y", grad_y, "grad_y");
  check_same_shape(k, y, "y", grad_x, "grad_x");
  const Rows r = rows_of(y);
  softmax_backward_f32(f32(k, y, "y"), f32(k, grad_y, "grad_y"), f32(k, grad_x, "grad_x"), r.rows, r.cols, log);
}

}  // namespace lora
