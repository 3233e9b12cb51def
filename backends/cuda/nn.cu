// Layer normalisation (forward; backward for x by rows, for weight and bias by deterministic column sums)
// and embedding lookup (forward gather, backward scatter-add with atomics). Bad ids are reported through the
// error buffer (see kernels.h) and their rows are written as zeros / skipped.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

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
// embedding: a block per row of ids; float4 copies when the row and both base pointers allow it.

template <typename TId>
__global__ void embedding_forward_kernel(const float* weight, const TId* ids, float* out, int64_t vocab, int64_t dim,
                                         bool vec, unsigned long long* error) {
  const int64_t row = blockIdx.x;
  const int64_t id = static_cast<int64_t>(ids[row]);
  float* o = out + row * dim;
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) record_error(error, id, row);
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = 0.f;
    return;
  }
  const float* w = weight + id * dim;
  if (vec) {
    const int64_t n4 = dim / 4;
    for (int64_t j = threadIdx.x; j < n4; j += blockDim.x)
      reinterpret_cast<float4*>(o)[j] = reinterpret_cast<const float4*>(w)[j];
  } else {
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = w[j];
  }
}

template <typename TId>
__global__ void embedding_backward_kernel(const TId* ids, const float* grad_out, float* grad_weight, int64_t vocab,
                                          int64_t dim, unsigned long long* error) {
  const int64_t row = blockIdx.x;
  const int64_t id = static_cast<int64_t>(ids[row]);
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) record_error(error, id, row);
    return;
  }
  const float* g = grad_out + row * dim;
  float* w = grad_weight + id * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(w + j, g[j]);
}

template <typename TId>
__global__ void validate_ids_kernel(const TId* ids, int64_t n, int64_t limit, unsigned long long* error) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    if (id < 0 || id >= limit) record_error(error, id, i);
  }
}

int embedding_threads(int64_t dim) { return dim >= 512 ? 256 : 128; }

}  // namespace

void layer_norm_forward_f32(const float* x, const float* weight, const float* bias, float eps, float* y, float* mean,
                            float* rstd, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block) layer_norm_forward_kernel<true><<<l.grid, l.threads>>>(x, weight, bias, eps, y, mean, rstd, rows, cols);
  else layer_norm_forward_kernel<false><<<l.grid, l.threads>>>(x, weight, bias, eps, y, mean, rstd, rows, cols);
  LORA_CUDA_CHECK_LAUNCH("layer_norm_forward");
}

void layer_norm_backward_dx_f32(const float* gy, const float* x, const float* weight, const float* mean,
                                const float* rstd, float* gx, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block) layer_norm_backward_dx_kernel<true><<<l.grid, l.threads>>>(gy, x, weight, mean, rstd, gx, rows, cols);
  else layer_norm_backward_dx_kernel<false><<<l.grid, l.threads>>>(gy, x, weight, mean, rstd, gx, rows, cols);
  LORA_CUDA_CHECK_LAUNCH("layer_norm_backward (grad_x)");
}

void layer_norm_backward_params_f32(const float* gy, const float* x, const float* mean, const float* rstd,
                                    int64_t rows, int64_t cols, float* partial, int splits, float* grad_weight,
                                    float* grad_bias) {
  if (rows <= 0 || cols <= 0 || (grad_weight == nullptr && grad_bias == nullptr)) return;
  launch_column_reduce<2>("layer_norm_backward (weight, bias)", LayerNormParamLoad{gy, x, mean, rstd, cols}, rows,
                          cols, partial, splits, grad_weight, grad_bias, true);
}

void embedding_forward_f32(const float* weight, const void* ids, bool ids64, float* out, int64_t n, int64_t vocab,
                           int64_t dim, unsigned long long* error) {
  if (n <= 0 || dim <= 0) return;
  const bool vec = dim % 4 == 0 && aligned16(weight) && aligned16(out);
  const int threads = embedding_threads(dim);
  const unsigned grid = static_cast<unsigned>(n);
  if (ids64) embedding_forward_kernel<<<grid, threads>>>(weight, static_cast<const int64_t*>(ids), out, vocab, dim, vec, error);
  else embedding_forward_kernel<<<grid, threads>>>(weight, static_cast<const int32_t*>(ids), out, vocab, dim, vec, error);
  LORA_CUDA_CHECK_LAUNCH("embedding_forward");
}

void validate_ids(const void* ids, bool ids64, int64_t n, int64_t limit, unsigned long long* error) {
  if (n <= 0) return;
  if (ids64) validate_ids_kernel<<<grid_for(n, kThreads), kThreads>>>(static_cast<const int64_t*>(ids), n, limit, error);
  else validate_ids_kernel<<<grid_for(n, kThreads), kThreads>>>(static_cast<const int32_t*>(ids), n, limit, error);
  LORA_CUDA_CHECK_LAUNCH("validate_ids");
}

void embedding_backward_f32(const void* ids, bool ids64, const float* grad_out, float* grad_weight, int64_t n,
                            int64_t vocab, int64_t dim, unsigned long long* error) {
  if (n <= 0 || dim <= 0) return;
  const int threads = embedding_threads(dim);
  const unsigned grid = static_cast<unsigned>(n);
  if (ids64) embedding_backward_kernel<<<grid, threads>>>(static_cast<const int64_t*>(ids), grad_out, grad_weight, vocab, dim, error);
  else embedding_backward_kernel<<<grid, threads>>>(static_cast<const int32_t*>(ids), grad_out, grad_weight, vocab, dim, error);
  LORA_CUDA_CHECK_LAUNCH("embedding_backward");
}

}  // namespace lora::cuda
