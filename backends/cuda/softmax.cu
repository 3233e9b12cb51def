// Row kernels over the last axis: softmax / log_softmax forward and backward, fused cross-entropy forward
// and backward, and attention's causal softmax (forward) and dS = P * (dP - rowsum(dO * O)) (backward).
// A row is handled by one warp (up to 1024 columns) or one block; max and sum come from one online pass.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

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
// cross-entropy

template <bool kBlock, typename TId>
__global__ void cross_entropy_forward_kernel(const float* logits, const TId* targets, int64_t ignore_index,
                                             float* losses, float* lse, int64_t rows, int64_t vocab,
                                             unsigned long long* error) {
  __shared__ float smem[64];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* lr = logits + row * vocab;
  MaxSum ms = maxsum_empty();
  for (int64_t j = Map::lane(); j < vocab; j += Map::width()) maxsum_add(ms, lr[j]);
  ms = Map::maxsum(ms, smem);
  if (Map::lane() == 0) {
    const float l = ms.m + logf(ms.s);
    const int64_t t = static_cast<int64_t>(targets[row]);
    float loss = 0.f;
    if (t != ignore_index) {
      if (t < 0 || t >= vocab) record_error(error, t, row);
      else loss = l - lr[t];
    }
    losses[row] = loss;
    lse[row] = l;
  }
}

// A block per row: grad = grad_loss * scale * (softmax - onehot), 0 for ignored (and invalid) rows.
template <typename TId>
__global__ void cross_entropy_backward_kernel(const float* logits, const TId* targets, const float* lse,
                                              const float* grad_loss, float scale, int64_t ignore_index,
                                              float* grad, int64_t vocab, unsigned long long* error) {
  const int64_t row = blockIdx.x;
  const float* lr = logits + row * vocab;
  float* gr = grad + row * vocab;
  const int64_t t = static_cast<int64_t>(targets[row]);
  const bool ignored = t == ignore_index;
  const bool bad = !ignored && (t < 0 || t >= vocab);
  if (ignored || bad) {
    if (bad && threadIdx.x == 0) record_error(error, t, row);
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) gr[j] = 0.f;
    return;
  }
  const float s = grad_loss[0] * scale;
  const float l = lse[row];
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf(lr[j] - l);
    gr[j] = s * (j == t ? p - 1.f : p);
  }
}

// ---------------------------------------------------------------------------------------------------
// attention rows (scores [rows, T], row r is query t = r % T, keys j <= t are visible)

template <bool kBlock>
__global__ void attention_softmax_kernel(float* scores, float* lse, int64_t rows, int64_t T) {
  __shared__ float smem[64];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const int64_t t = row % T;
  float* sr = scores + row * T;
  MaxSum ms = maxsum_empty();
  for (int64_t j = Map::lane(); j <= t; j += Map::width()) maxsum_add(ms, sr[j]);
  ms = Map::maxsum(ms, smem);
  const float inv = 1.f / ms.s;
  for (int64_t j = Map::lane(); j < T; j += Map::width()) sr[j] = j <= t ? expf(sr[j] - ms.m) * inv : 0.f;
  if (Map::lane() == 0) lse[row] = ms.m + logf(ms.s);
}

template <bool kBlock>
__global__ void attention_backward_ds_kernel(float* scores, float* dp, const float* grad_out, const float* out,
                                             const float* lse, int64_t rows, int64_t T, int64_t D) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const int64_t t = row % T;
  const float* go = grad_out + row * D;
  const float* o = out + row * D;
  float di = 0.f;
  for (int64_t d = Map::lane(); d < D; d += Map::width()) di += go[d] * o[d];
  di = Map::sum(di, smem);
  const float l = lse[row];
  float* sr = scores + row * T;
  float* dr = dp + row * T;
  for (int64_t j = Map::lane(); j < T; j += Map::width()) {
    if (j <= t) {
      const float p = expf(sr[j] - l);
      sr[j] = p;
      dr[j] = p * (dr[j] - di);
    } else {
      sr[j] = 0.f;
      dr[j] = 0.f;
    }
  }
}

}  // namespace

void softmax_forward_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block) {
    if (log) softmax_forward_kernel<true, true><<<l.grid, l.threads>>>(x, y, rows, cols);
    else softmax_forward_kernel<true, false><<<l.grid, l.threads>>>(x, y, rows, cols);
  } else {
    if (log) softmax_forward_kernel<false, true><<<l.grid, l.threads>>>(x, y, rows, cols);
    else softmax_forward_kernel<false, false><<<l.grid, l.threads>>>(x, y, rows, cols);
  }
  LORA_CUDA_CHECK_LAUNCH(log ? "log_softmax_forward" : "softmax_forward");
}

void softmax_backward_f32(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block) {
    if (log) softmax_backward_kernel<true, true><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
    else softmax_backward_kernel<true, false><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
  } else {
    if (log) softmax_backward_kernel<false, true><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
    else softmax_backward_kernel<false, false><<<l.grid, l.threads>>>(y, gy, gx, rows, cols);
  }
  LORA_CUDA_CHECK_LAUNCH(log ? "log_softmax_backward" : "softmax_backward");
}

void cross_entropy_forward_f32(const float* logits, const void* targets, bool targets64, int64_t ignore_index,
                               float* losses, float* lse, int64_t rows, int64_t vocab, unsigned long long* error) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, vocab);
  const auto* t32 = static_cast<const int32_t*>(targets);
  const auto* t64 = static_cast<const int64_t*>(targets);
  if (l.block) {
    if (targets64) cross_entropy_forward_kernel<true><<<l.grid, l.threads>>>(logits, t64, ignore_index, losses, lse, rows, vocab, error);
    else cross_entropy_forward_kernel<true><<<l.grid, l.threads>>>(logits, t32, ignore_index, losses, lse, rows, vocab, error);
  } else {
    if (targets64) cross_entropy_forward_kernel<false><<<l.grid, l.threads>>>(logits, t64, ignore_index, losses, lse, rows, vocab, error);
    else cross_entropy_forward_kernel<false><<<l.grid, l.threads>>>(logits, t32, ignore_index, losses, lse, rows, vocab, error);
  }
  LORA_CUDA_CHECK_LAUNCH("cross_entropy_forward");
}

void cross_entropy_backward_f32(const float* logits, const void* targets, bool targets64, const float* lse,
                                const float* grad_loss, float scale, int64_t ignore_index, float* grad_logits,
                                int64_t rows, int64_t vocab, unsigned long long* error) {
  if (rows <= 0 || vocab <= 0) return;
  const unsigned grid = static_cast<unsigned>(rows);
  const int threads = vocab >= 1024 ? 512 : 128;
  if (targets64) {
    cross_entropy_backward_kernel<<<grid, threads>>>(logits, static_cast<const int64_t*>(targets), lse, grad_loss,
                                                     scale, ignore_index, grad_logits, vocab, error);
  } else {
    cross_entropy_backward_kernel<<<grid, threads>>>(logits, static_cast<const int32_t*>(targets), lse, grad_loss,
                                                     scale, ignore_index, grad_logits, vocab, error);
  }
  LORA_CUDA_CHECK_LAUNCH("cross_entropy_backward");
}

void attention_softmax_f32(float* scores, float* lse, int64_t rows, int64_t T) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, T);
  if (l.block) attention_softmax_kernel<true><<<l.grid, l.threads>>>(scores, lse, rows, T);
  else attention_softmax_kernel<false><<<l.grid, l.threads>>>(scores, lse, rows, T);
  LORA_CUDA_CHECK_LAUNCH("attention_softmax");
}

void attention_backward_ds_f32(float* scores, float* dp, const float* grad_out, const float* out, const float* lse,
                               int64_t rows, int64_t T, int64_t D) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, T);
  if (l.block) attention_backward_ds_kernel<true><<<l.grid, l.threads>>>(scores, dp, grad_out, out, lse, rows, T, D);
  else attention_backward_ds_kernel<false><<<l.grid, l.threads>>>(scores, dp, grad_out, out, lse, rows, T, D);
  LORA_CUDA_CHECK_LAUNCH("attention_backward_ds");
}

}  // namespace lora::cuda
