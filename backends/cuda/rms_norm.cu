// CUDA kernels of RMS normalisation over the last axis (backends/kernels/rms_norm.h): forward and the
// backward for x by rows (a warp or a block per row), for the weight by deterministic column sums.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/kernels/rms_norm.h"

namespace lora::cuda {
namespace {

// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps)
template <bool kBlock>
__global__ void rms_norm_forward_kernel(const float* x, const float* weight, float eps, float* y, float* rstd_out,
                                        int64_t rows, int64_t cols) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* xr = x + row * cols;
  float* yr = y + row * cols;
  float sq = 0.f;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) sq += xr[j] * xr[j];
  const float rstd = 1.f / sqrtf(Map::sum(sq, smem) / static_cast<float>(cols) + eps);
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) yr[j] = xr[j] * rstd * weight[j];
  if (Map::lane() == 0) rstd_out[row] = rstd;
}

// gx = rstd * (g w - xhat * mean(g w xhat)), xhat = x * rstd.
template <bool kBlock>
__global__ void rms_norm_backward_dx_kernel(const float* gy, const float* x, const float* weight, const float* rstd,
                                            float* gx, int64_t rows, int64_t cols) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* gr = gy + row * cols;
  const float* xr = x + row * cols;
  float* out = gx + row * cols;
  const float rs = rstd[row];
  float dot = 0.f;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) dot += gr[j] * weight[j] * xr[j] * rs;
  const float mean_dot = Map::sum(dot, smem) / static_cast<float>(cols);
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) {
    out[j] = rs * (gr[j] * weight[j] - xr[j] * rs * mean_dot);
  }
}

// acc[0] += g * xhat (grad_weight).
struct RmsNormWeightLoad {
  const float *gy, *x, *rstd;
  int64_t cols;
  __device__ void operator()(int64_t r, int64_t c, float* acc) const {
    const int64_t i = r * cols + c;
    acc[0] += gy[i] * x[i] * rstd[r];
  }
};

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::RmsNormForward::cuda(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  using namespace lora::cuda;
  const char* k = name;
  activate(k, {&x, &weight, &y, &rstd});
  check_same_shape(k, x, "x", y, "y");
  const Rows r = rows_of(x);
  check_numel(k, weight, "weight", r.cols);
  check_numel(k, rstd, "rstd", r.rows);
  const float *px = f32(k, x, "x"), *pw = f32(k, weight, "weight");
  float *py = f32(k, y, "y"), *pr = f32(k, rstd, "rstd");
  if (r.rows <= 0 || r.cols <= 0) return;
  const RowLaunch l = row_launch(r.rows, r.cols);
  const float e = static_cast<float>(eps);
  if (l.block)
    rms_norm_forward_kernel<true><<<l.grid, l.threads>>>(px, pw, e, py, pr, r.rows, r.cols);
  else
    rms_norm_forward_kernel<false><<<l.grid, l.threads>>>(px, pw, e, py, pr, r.rows, r.cols);
  LORA_CUDA_CHECK_LAUNCH(k);
}

void kernels::RmsNormBackward::cuda(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                    Tensor& grad_x, Tensor& grad_weight) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate(k, {&grad_y, &x, &weight, &rstd, &grad_x, &grad_weight});
  check_same_shape(k, x, "x", grad_y, "grad_y");
  const Rows r = rows_of(x);
  check_numel(k, rstd, "rstd", r.rows);
  if (grad_weight.defined()) check_numel(k, grad_weight, "grad_weight", r.cols);
  if (grad_x.defined()) {
    check_same_shape(k, x, "x", grad_x, "grad_x");
    check_numel(k, weight, "weight", r.cols);
  }
  const float *gy = f32(k, grad_y, "grad_y"), *px = f32(k, x, "x"), *pr = f32(k, rstd, "rstd");
  if (r.rows <= 0 || r.cols <= 0) return;
  // The weight first: grad_x may be grad_y's own storage.
  if (grad_weight.defined()) {
    const int splits = column_reduce_splits(r.rows, r.cols);
    Tensor partial = workspace({static_cast<int64_t>(splits) * r.cols}, DType::F32, device);
    launch_column_reduce<1>("rms_norm_backward (weight)", RmsNormWeightLoad{gy, px, pr, r.cols}, r.rows, r.cols,
                            partial.data<float>(), splits, f32(k, grad_weight, "grad_weight"), nullptr, true);
  }
  if (grad_x.defined()) {
    const float* pw = f32(k, weight, "weight");
    float* gx = f32(k, grad_x, "grad_x");
    const RowLaunch l = row_launch(r.rows, r.cols);
    if (l.block)
      rms_norm_backward_dx_kernel<true><<<l.grid, l.threads>>>(gy, px, pw, pr, gx, r.rows, r.cols);
    else
      rms_norm_backward_dx_kernel<false><<<l.grid, l.threads>>>(gy, px, pw, pr, gx, r.rows, r.cols);
    LORA_CUDA_CHECK_LAUNCH("rms_norm_backward (grad_x)");
  }
}

}  // namespace lora
