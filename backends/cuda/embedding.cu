// CUDA kernels of the embedding lookup (backends/kernels/embedding.h): forward gather (a block per row,
// float4 copies when aligned), backward scatter-add with atomics. Bad ids are reported through the error
// flag (checks.h): forward writes their rows as zeros, backward checks every id before it adds anything.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/kernels/embedding.h"

namespace lora::cuda {
namespace {

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

int embedding_threads(int64_t dim) {
  return dim >= 512 ? 256 : 128;
}

// ---------------------------------------------------------------------------------------------------
// Launchers

void embedding_forward_f32(const float* weight, const void* ids, bool ids64, float* out, int64_t n, int64_t vocab,
                           int64_t dim, unsigned long long* error) {
  if (n <= 0 || dim <= 0) return;
  const bool vec = dim % 4 == 0 && aligned16(weight) && aligned16(out);
  const int threads = embedding_threads(dim);
  const unsigned grid = static_cast<unsigned>(n);
  if (ids64)
    embedding_forward_kernel<<<grid, threads>>>(weight, static_cast<const int64_t*>(ids), out, vocab, dim, vec, error);
  else
    embedding_forward_kernel<<<grid, threads>>>(weight, static_cast<const int32_t*>(ids), out, vocab, dim, vec, error);
  LORA_CUDA_CHECK_LAUNCH("embedding_forward");
}

void validate_ids(const void* ids, bool ids64, int64_t n, int64_t limit, unsigned long long* error) {
  if (n <= 0) return;
  if (ids64)
    validate_ids_kernel<<<grid_for(n, kThreads), kThreads>>>(static_cast<const int64_t*>(ids), n, limit, error);
  else
    validate_ids_kernel<<<grid_for(n, kThreads), kThreads>>>(static_cast<const int32_t*>(ids), n, limit, error);
  LORA_CUDA_CHECK_LAUNCH("validate_ids");
}

void embedding_backward_f32(const void* ids, bool ids64, const float* grad_out, float* grad_weight, int64_t n,
                            int64_t vocab, int64_t dim, unsigned long long* error) {
  if (n <= 0 || dim <= 0) return;
  const int threads = embedding_threads(dim);
  const unsigned grid = static_cast<unsigned>(n);
  if (ids64)
    embedding_backward_kernel<<<grid, threads>>>(static_cast<const int64_t*>(ids), grad_out, grad_weight, vocab, dim,
                                                 error);
  else
    embedding_backward_kernel<<<grid, threads>>>(static_cast<const int32_t*>(ids), grad_out, grad_weight, vocab, dim,
                                                 error);
  LORA_CUDA_CHECK_LAUNCH("embedding_backward");
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::EmbeddingForward::cuda(const Tensor& weight, const Tensor& ids, Tensor& out) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate(k, {&weight, &ids, &out});
  LORA_CHECK(weight.rank() == 2, "cuda {}: weight has shape {}, expected [V, C]", k, weight.shape().str());
  const bool ids64 = check_ids(k, ids, "ids");
  const int64_t vocab = weight.size(0), dim = weight.size(1), n = ids.numel();
  check_numel(k, out, "out", n * dim);
  const float* pw = f32(k, weight, "weight");
  float* po = f32(k, out, "out");
  if (n == 0 || dim == 0) return;
  ErrorFlag error(device);
  embedding_forward_f32(pw, ids.raw_data(), ids64, po, n, vocab, dim, error.data());
  error.check(k, "id", vocab);
}

void kernels::EmbeddingBackward::cuda(const Tensor& ids, const Tensor& grad_out, Tensor& grad_weight) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate(k, {&ids, &grad_out, &grad_weight});
  LORA_CHECK(grad_weight.rank() == 2, "cuda {}: grad_weight has shape {}, expected [V, C]", k,
             grad_weight.shape().str());
  const bool ids64 = check_ids(k, ids, "ids");
  const int64_t vocab = grad_weight.size(0), dim = grad_weight.size(1), n = ids.numel();
  check_numel(k, grad_out, "grad_out", n * dim);
  const float* pg = f32(k, grad_out, "grad_out");
  float* pw = f32(k, grad_weight, "grad_weight");
  if (n == 0 || dim == 0) return;
  // Ids are checked before the scatter, so that a bad id leaves grad_weight untouched (as on the CPU).
  ErrorFlag error(device);
  validate_ids(ids.raw_data(), ids64, n, vocab, error.data());
  error.check(k, "id", vocab);
  embedding_backward_f32(ids.raw_data(), ids64, pg, pw, n, vocab, dim, error.data());
}

}  // namespace lora
