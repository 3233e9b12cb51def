// CPU kernels of the embedding lookup (backends/kernels/embedding.h): row gather, and its backward, a
// race-free scatter-add into the weight gradient.
#include <algorithm>

#include "backends/cpu/dispatch.h"
#include "backends/kernels/embedding.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 14;  // below this a loop runs on one thread
constexpr int64_t kColumnBlock = 64;               // columns per task in the scatter-add

// Every id must lie in [0, V). Checked serially before any parallel loop (no throw inside OpenMP).
void check_ids(const char* kernel, const Tensor& ids, int64_t vocab) {
  LORA_CHECK(is_integer(ids.dtype()), "{}: ids must be int32 or int64, got {}", kernel, dtype_name(ids.dtype()));
  const int64_t n = ids.numel();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = read_index(ids, i);
    LORA_CHECK(id >= 0 && id < vocab, "{}: id {} at position {} is out of range for an embedding of V = {} rows",
               kernel, id, i, vocab);
  }
}

// Reads ids of either integer type without touching the Tensor inside hot loops.
struct IdReader {
  const int32_t* i32 = nullptr;
  const int64_t* i64 = nullptr;
  explicit IdReader(const Tensor& ids) {
    if (ids.dtype() == DType::I32)
      i32 = static_cast<const int32_t*>(ids.raw_data());
    else
      i64 = static_cast<const int64_t*>(ids.raw_data());
  }
  int64_t operator[](int64_t i) const { return i32 ? static_cast<int64_t>(i32[i]) : i64[i]; }
};

}  // namespace

// out[i, :] = weight[ids[i], :]   weight [V, C], ids [N], out [N, C]
void kernels::EmbeddingForward::cpu(const Tensor& weight, const Tensor& ids, Tensor& out) {
  LORA_CHECK(weight.rank() == 2, "embedding_forward: weight must be [V, C], got {}", weight.shape().str());
  const int64_t vocab = weight.size(0), cols = weight.size(1), n = ids.numel();
  LORA_CHECK(out.numel() == n * cols && out.dtype() == weight.dtype(),
             "embedding_forward: out {} {} must be [{}, {}] {}", out.shape().str(), dtype_name(out.dtype()), n, cols,
             dtype_name(weight.dtype()));
  check_ids("embedding_forward", ids, vocab);
  const IdReader id(ids);
  dispatch_floating(weight.dtype(), "embedding_forward", [&]<typename T>() {
    const T* w = weight.data<T>();  // [V, C]
    T* o = out.data<T>();           // [N, C]
#pragma omp parallel for schedule(static) if (n * cols >= kMinParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      const T* src = w + id[i] * cols;
      std::copy(src, src + cols, o + i * cols);
    }
  });
}

// grad_weight[ids[i], :] += grad_out[i, :]. Repeated ids add up; to stay race-free the work is split over
// blocks of columns: each thread owns a column block and walks every row, so no two threads touch one element.
void kernels::EmbeddingBackward::cpu(const Tensor& ids, const Tensor& grad_out, Tensor& grad_weight) {
  LORA_CHECK(grad_weight.rank() == 2, "embedding_backward: grad_weight must be [V, C], got {}",
             grad_weight.shape().str());
  const int64_t vocab = grad_weight.size(0), cols = grad_weight.size(1), n = ids.numel();
  LORA_CHECK(grad_out.numel() == n * cols && grad_out.dtype() == grad_weight.dtype(),
             "embedding_backward: grad_out {} {} must be [{}, {}] {}", grad_out.shape().str(),
             dtype_name(grad_out.dtype()), n, cols, dtype_name(grad_weight.dtype()));
  check_ids("embedding_backward", ids, vocab);
  const int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
  const IdReader id(ids);
  dispatch_floating(grad_weight.dtype(), "embedding_backward", [&]<typename T>() {
    const T* g = grad_out.data<T>();  // [N, C]
    T* gw = grad_weight.data<T>();    // [V, C]
#pragma omp parallel for schedule(static) if (n * cols >= kMinParallelElements)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c0 = blk * kColumnBlock, c1 = std::min(cols, c0 + kColumnBlock);
      for (int64_t i = 0; i < n; ++i) {
        const T* src = g + i * cols;
        T* dst = gw + id[i] * cols;
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    }
  });
}

}  // namespace lora
