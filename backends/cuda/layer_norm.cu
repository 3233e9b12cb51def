// CUDA kernels of layer normalisation over the last axis (backends/kernels/layer_norm.h): forward and the
// backward for x by rows (a warp or a block per row), for weight and bias by deterministic column sums.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/kernels/layer_norm.h"

namespace lora::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// layer norm: x [rows, cols]; mean and variance in two passes over the row (no E[x^2] - mean^2 cancellation).

template <bool kBlock>
__global__ void layer_norm_forward_kernel(const float* x, const float* weight, const float* bias, float eps, float* y,
                                          float* mean_out, float* rstd_out, int64_t rows, int64_t cols) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* xr = x + row * cols;
  float* yr = y + row * cols;
  float sum = 0.f;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) sum += xr[j];
  const float mean = Map::sum(sum, smem) / static_cast<float>(cols);
  float sq = 0.f;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) {
    const float d = xr[j] - mean;
    sq += d * d;
  }
  const float var = Map::sum(sq, smem) / static_cast<float>(cols);
  const float rstd = 1.f / sqrtf(var + eps);
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) {
    const float w = weight ? weight[j] : 1.f;
    const float b = bias ? bias[j] : 0.f;
    yr[j] = (xr[j] - mean) * rstd * w + b;
  }
  if (Map::lane() == 0) {
    if (mean_out) mean_out[row] = mean;
    if (rstd_out) rstd_out[row] = rstd;
  }
}

// gx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)), xhat = (x - mean) * rstd.
template <bool kBlock>
__global__ void layer_norm_backward_dx_kernel(const float* gy, const float* x, const float* weight, const float* mean,
                                              const float* rstd, float* gx, int64_t rows, int64_t cols) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* gr = gy + row * cols;
  const float* xr = x + row * cols;
  float* out = gx + row * cols;
  const float mu = mean[row], rs = rstd[row];
  float sum_g = 0.f, sum_gx = 0.f;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) {
    const float g = gr[j] * (weight ? weight[j] : 1.f);
    sum_g += g;
    sum_gx += g * (xr[j] - mu) * rs;
  }
  const float inv_cols = 1.f / static_cast<float>(cols);
  const float mean_g = Map::sum(sum_g, smem) * inv_cols;
  const float mean_gx = Map::sum(sum_gx, smem) * inv_cols;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) {
    const float g = gr[j] * (weight ? weight[j] : 1.f);
    const float xhat = (xr[j] - mu) * rs;
    out[j] = rs * (g - mean_g - xhat * mean_gx);
  }
}

// acc[0] += g * xhat (grad_weight), acc[1] += g (grad_bias).
struct LayerNormParamLoad {
  const float *gy, *x, *mean, *rstd;
  int64_t cols;
  __device__ void operator()(int64_t r, int64_t c, float* acc) const {
    const int64_t i = r * cols + c;
    const float g = gy[i];
    acc[0] += g * (x[i] - mean[r]) * rstd[r];
    acc[1] += g;
  }
};

// ---------------------------------------------------------------------------------------------------
// Launchers

void layer_norm_forward_f32(const float* x, const float* weight, const float* bias, float eps, float* y, float* mean,
                            float* rstd, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block)
    layer_norm_forward_kernel<true><<<l.grid, l.threads>>>(x, weight, bias, eps, y, mean, rstd, rows, cols);
  else
    layer_norm_forward_kernel<false><<<l.grid, l.threads>>>(x, weight, bias, eps, y, mean, rstd, rows, cols);
  LORA_CUDA_CHECK_LAUNCH("layer_norm_forward");
}

void layer_norm_backward_dx_f32(const float* gy, const float* x, const float* weight, const float* mean,
                                const float* rstd, float* gx, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block)
    layer_norm_backward_dx_kernel<true><<<l.grid, l.threads>>>(gy, x, weight, mean, rstd, gx, rows, cols);
  else
    layer_norm_backward_dx_kernel<false><<<l.grid, l.threads>>>(gy, x, weight, mean, rstd, gx, rows, cols);
  LORA_CUDA_CHECK_LAUNCH("layer_norm_backward (grad_x)");
}

void layer_norm_backward_params_f32(const float* gy, const float* x, const float* mean, const float* rstd, int64_t rows,
                                    int64_t cols, float* partial, int splits, float* grad_weight, float* grad_bias) {
  if (rows <= 0 || cols <= 0 || (grad_weight == nullptr && grad_bias == nullptr)) return;
  launch_column_reduce<2>("layer_norm_backward (weight, bias)", LayerNormParamLoad{gy, x, mean, rstd, cols}, rows, cols,
                          partial, splits, grad_weight, grad_bias, true);
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::LayerNormForward::cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, Tensor& y,
                                     Tensor& mean, Tensor& rstd) {
  using namespace lora::cuda;
  const char* k = name;
  activate(k, {&x, &weight, &bias, &y, &mean, &rstd});
  check_same_shape(k, x, "x", y, "y");
  const Rows r = rows_of(x);
  if (weight.defined()) check_numel(k, weight, "weight", r.cols);
  if (bias.defined()) check_numel(k, bias, "bias", r.cols);
  if (mean.defined()) check_numel(k, mean, "mean", r.rows);
  if (rstd.defined()) check_numel(k, rstd, "rstd", r.rows);
  layer_norm_forward_f32(f32(k, x, "x"), f32_or_null(k, weight, "weight"), f32_or_null(k, bias, "bias"),
                         static_cast<float>(eps), f32(k, y, "y"), f32_or_null(k, mean, "mean"),
                         f32_or_null(k, rstd, "rstd"), r.rows, r.cols);
}

void kernels::LayerNormBackward::cuda(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                      const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate(k, {&grad_y, &x, &weight, &mean, &rstd, &grad_x, &grad_weight, &grad_bias});
  check_same_shape(k, x, "x", grad_y, "grad_y");
  const Rows r = rows_of(x);
  check_numel(k, mean, "mean", r.rows);
  check_numel(k, rstd, "rstd", r.rows);
  if (weight.defined()) check_numel(k, weight, "weight", r.cols);
  if (grad_weight.defined()) check_numel(k, grad_weight, "grad_weight", r.cols);
  if (grad_bias.defined()) check_numel(k, grad_bias, "grad_bias", r.cols);
  if (grad_x.defined()) check_same_shape(k, x, "x", grad_x, "grad_x");
  const float* gy = f32(k, grad_y, "grad_y");
  const float* px = f32(k, x, "x");
  const float* pm = f32(k, mean, "mean");
  const float* pr = f32(k, rstd, "rstd");
  // Weight and bias first: grad_x may be grad_y's own storage.
  if ((grad_weight.defined() || grad_bias.defined()) && r.rows > 0 && r.cols > 0) {
    const int splits = column_reduce_splits(r.rows, r.cols);
    Tensor partial = workspace({2 * static_cast<int64_t>(splits) * r.cols}, DType::F32, device);
    layer_norm_backward_params_f32(gy, px, pm, pr, r.rows, r.cols, partial.data<float>(), splits,
                                   f32_or_null(k, grad_weight, "grad_weight"), f32_or_null(k, grad_bias, "grad_bias"));
  }
  if (grad_x.defined()) {
    layer_norm_backward_dx_f32(gy, px, f32_or_null(k, weight, "weight"), pm, pr, f32(k, grad_x, "grad_x"), r.rows,
                               r.cols);
  }
}

}  // namespace lora
