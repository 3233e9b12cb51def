// CPU kernels of the fused cross-entropy over logits [N, V] (backends/kernels/cross_entropy.h): per-row losses
// and logsumexp forward, softmax - onehot backward.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/dispatch.h"
#include "backends/cpu/fast_math.h"
#include "backends/kernels/cross_entropy.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 14;  // below this a loop runs on one thread

// logits [N, V] and targets [N], with the targets read once as int64 (N is small next to N * V).
struct Targets {
  int64_t rows, vocab;
  std::vector<int64_t> ids;  // [N]
};

// Every target must be ignore_index or lie in [0, V). Checked serially, before any parallel loop (no throw
// inside OpenMP).
Targets read_targets(const char* kernel, const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  LORA_CHECK(logits.rank() >= 1 && logits.size(-1) > 0, "{}: logits must be [N, V] with V > 0, got {}", kernel,
             logits.shape().str());
  const int64_t vocab = logits.size(-1), rows = logits.numel() / vocab;
  LORA_CHECK(is_integer(targets.dtype()), "{}: targets must be int32 or int64, got {}", kernel,
             dtype_name(targets.dtype()));
  LORA_CHECK(targets.numel() == rows, "{}: targets {} must hold one target per row of logits {}", kernel,
             targets.shape().str(), logits.shape().str());
  std::vector<int64_t> ids(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t t = read_index(targets, i);
    LORA_CHECK(t == ignore_index || (t >= 0 && t < vocab),
               "{}: target {} at row {} is out of range [0, {}) (and is not ignore_index {})", kernel, t, i, vocab,
               ignore_index);
    ids[i] = t;
  }
  return {rows, vocab, std::move(ids)};
}

}  // namespace

// lse[i] = logsumexp(logits[i]) (every row), losses[i] = lse[i] - logits[i, target[i]] (0 when ignored).
void kernels::CrossEntropyForward::cpu(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                       Tensor& losses, Tensor& lse) {
  const Targets read = read_targets("cross_entropy_forward", logits, targets, ignore_index);
  // Not a structured binding: OpenMP regions capture these.
  const int64_t rows = read.rows, vocab = read.vocab;
  const std::vector<int64_t>& target = read.ids;
  LORA_CHECK(losses.numel() == rows && lse.numel() == rows, "cross_entropy_forward: losses {} and lse {} must hold {}",
             losses.shape().str(), lse.shape().str(), rows);
  dispatch_floating(logits.dtype(), "cross_entropy_forward", [&]<typename T>() {
    const T* x = logits.data<T>();  // [N, V]
    T* loss = losses.data<T>();     // [N]
    T* lsep = lse.data<T>();        // [N]
#pragma omp parallel for schedule(static) if (rows * vocab >= kMinParallelElements)
    for (int64_t i = 0; i < rows; ++i) {
      const T* xr = x + i * vocab;
      T m = xr[0];
#pragma omp simd reduction(max : m)
      for (int64_t j = 1; j < vocab; ++j) m = std::max(m, xr[j]);
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < vocab; ++j) sum += cpu::fast_exp(xr[j] - m);
      const T l = m + std::log(sum);
      lsep[i] = l;
      loss[i] = target[i] == ignore_index ? T(0) : l - xr[target[i]];
    }
  });
}

// grad_logits[i] = grad_loss * scale * (exp(logits[i] - lse[i]) - onehot(target[i])), zero rows when ignored.
void kernels::CrossEntropyBackward::cpu(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                        const Tensor& grad_loss, double scale, int64_t ignore_index,
                                        Tensor& grad_logits) {
  const Targets read = read_targets("cross_entropy_backward", logits, targets, ignore_index);
  // Not a structured binding: OpenMP regions capture these.
  const int64_t rows = read.rows, vocab = read.vocab;
  const std::vector<int64_t>& target = read.ids;
  LORA_CHECK(lse.numel() == rows, "cross_entropy_backward: lse {} must hold {}", lse.shape().str(), rows);
  LORA_CHECK(grad_loss.numel() == 1, "cross_entropy_backward: grad_loss has shape {}, expected one element",
             grad_loss.shape().str());
  LORA_CHECK(grad_logits.shape() == logits.shape(), "cross_entropy_backward: grad_logits {} must match logits {}",
             grad_logits.shape().str(), logits.shape().str());
  dispatch_floating(logits.dtype(), "cross_entropy_backward", [&]<typename T>() {
    const T* x = logits.data<T>();  // [N, V]
    const T* lsep = lse.data<T>();  // [N]
    T* gx = grad_logits.data<T>();  // [N, V]
    const T c = grad_loss.data<T>()[0] * static_cast<T>(scale);
#pragma omp parallel for schedule(static) if (rows * vocab >= kMinParallelElements)
    for (int64_t i = 0; i < rows; ++i) {
      const T* xr = x + i * vocab;
      T* gr = gx + i * vocab;
      if (target[i] == ignore_index) {
        std::fill(gr, gr + vocab, T(0));
        continue;
      }
      const T l = lsep[i];
#pragma omp simd
      for (int64_t j = 0; j < vocab; ++j) gr[j] = c * cpu::fast_exp(xr[j] - l);  // in place when gr == xr
      gr[target[i]] -= c;
    }
  });
}

}  // namespace lora
