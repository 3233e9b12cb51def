// CUDA kernels of the fused cross-entropy over logits [N, V] (backends/kernels/cross_entropy.h): per-row
// logsumexp and loss forward (a warp or a block per row, one online pass), softmax - onehot backward. A bad
// target is reported through the error flag (checks.h) and its row is written as zeros.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/kernels/cross_entropy.h"

namespace lora::cuda {
namespace {

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
      if (t < 0 || t >= vocab)
        record_error(error, t, row);
      else
        loss = l - lr[t];
    }
    losses[row] = loss;
    lse[row] = l;
  }
}

// A block per row: grad = grad_loss * scale * (softmax - onehot), 0 for ignored (and invalid) rows.
template <typename TId>
__global__ void cross_entropy_backward_kernel(const float* logits, const TId* targets, const float* lse,
                                              const float* grad_loss, float scale, int64_t ignore_index, float* grad,
                                              int64_t vocab, unsigned long long* error) {
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
// Launchers

void cross_entropy_forward_f32(const float* logits, const void* targets, bool targets64, int64_t ignore_index,
                               float* losses, float* lse, int64_t rows, int64_t vocab, unsigned long long* error) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, vocab);
  const auto* t32 = static_cast<const int32_t*>(targets);
  const auto* t64 = static_cast<const int64_t*>(targets);
  if (l.block) {
    if (targets64)
      cross_entropy_forward_kernel<true>
          <<<l.grid, l.threads>>>(logits, t64, ignore_index, losses, lse, rows, vocab, error);
    else
      cross_entropy_forward_kernel<true>
          <<<l.grid, l.threads>>>(logits, t32, ignore_index, losses, lse, rows, vocab, error);
  } else {
    if (targets64)
      cross_entropy_forward_kernel<false>
          <<<l.grid, l.threads>>>(logits, t64, ignore_index, losses, lse, rows, vocab, error);
    else
      cross_entropy_forward_kernel<false>
          <<<l.grid, l.threads>>>(logits, t32, ignore_index, losses, lse, rows, vocab, error);
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

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::CrossEntropyForward::cuda(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                        Tensor& losses, Tensor& lse) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate(k, {&logits, &targets, &losses, &lse});
  const bool t64 = check_ids(k, targets, "targets");
  const Rows r = rows_of(logits);
  check_numel(k, targets, "targets", r.rows);
  check_numel(k, losses, "losses", r.rows);
  check_numel(k, lse, "lse", r.rows);
  const float* pl = f32(k, logits, "logits");
  float* ploss = f32(k, losses, "losses");
  float* plse = f32(k, lse, "lse");
  if (r.rows == 0) return;
  ErrorFlag error(device);
  cross_entropy_forward_f32(pl, targets.raw_data(), t64, ignore_index, ploss, plse, r.rows, r.cols, error.data());
  error.check(k, "target", r.cols);
}

void kernels::CrossEntropyBackward::cuda(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                         const Tensor& grad_loss, double scale, int64_t ignore_index,
                                         Tensor& grad_logits) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate(k, {&logits, &targets, &lse, &grad_loss, &grad_logits});
  const bool t64 = check_ids(k, targets, "targets");
  check_same_shape(k, logits, "logits", grad_logits, "grad_logits");
  const Rows r = rows_of(logits);
  check_numel(k, targets, "targets", r.rows);
  check_numel(k, lse, "lse", r.rows);
  check_numel(k, grad_loss, "grad_loss", 1);
  const float* pl = f32(k, logits, "logits");
  const float* plse = f32(k, lse, "lse");
  const float* pgl = f32(k, grad_loss, "grad_loss");
  float* pg = f32(k, grad_logits, "grad_logits");
  if (r.rows == 0 || r.cols == 0) return;
  ErrorFlag error(device);
  cross_entropy_backward_f32(pl, targets.raw_data(), t64, plse, pgl, static_cast<float>(scale), ignore_index, pg,
                             r.rows, r.cols, error.data());
  error.check(k, "target", r.cols);
}

}  // namespace lora
