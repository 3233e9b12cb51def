// CPU kernel of decode attention over a pool of sequences (backends/kernels/decode_attention.h): one (row,
// head) pair per iteration, scores in a per-thread buffer, a max-subtracted softmax, then the weighted sum
// of the row's values.
#include <omp.h>

#include <cmath>
#include <vector>

#include "backends/cpu/dispatch.h"
#include "backends/kernels/decode_attention.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelWork = 1 << 15;  // multiply-adds below which one thread runs the loop (a parallel
                                               // region costs more than a small step's whole attention)

}  // namespace

void kernels::DecodeAttention::cpu(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool, const Tensor& rows,
                                   double scale, Tensor& out) {
  LORA_CHECK(q.rank() == 3 && k_pool.rank() == 4 && v_pool.shape() == k_pool.shape() && out.shape() == q.shape() &&
                 q.size(2) == k_pool.size(3) && k_pool.size(1) > 0 && q.size(1) % k_pool.size(1) == 0,
             "{}: q {} and out {} must be [B, H, D], k_pool and v_pool {} [S, H_kv, capacity, D] with H a multiple of "
             "H_kv",
             name, q.shape().str(), out.shape().str(), k_pool.shape().str());
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), S = k_pool.size(0), H_kv = k_pool.size(1),
                capacity = k_pool.size(2), G = H / H_kv;
  LORA_CHECK(rows.dtype() == DType::I64 && rows.shape() == (Shape{B, 2}), "{}: rows must be int64 [{}, 2], got {} {}",
             name, B, dtype_name(rows.dtype()), rows.shape().str());
  LORA_CHECK(q.dtype() == k_pool.dtype() && q.dtype() == v_pool.dtype() && q.dtype() == out.dtype(),
             "{}: q, k_pool, v_pool and out must share one dtype", name);
  const int64_t* r = rows.data<int64_t>();  // [B, 2]
  int64_t work = 0;                         // 2 L D multiply-adds per (row, head)
  for (int64_t b = 0; b < B; ++b) {
    work += 2 * (r[2 * b + 1] + 1) * D * H;
    LORA_CHECK(r[2 * b] >= 0 && r[2 * b] < S && r[2 * b + 1] >= 0 && r[2 * b + 1] < capacity,
               "{}: row {} (slot {}, position {}) is outside the pool's {} slots of {} positions", name, b, r[2 * b],
               r[2 * b + 1], S, capacity);
  }
  dispatch_floating(q.dtype(), name, [&]<typename T>() {
    const T* qp = q.data<T>();       // [B, H, D]
    const T* kp = k_pool.data<T>();  // [S, H_kv, capacity, D]
    const T* vp = v_pool.data<T>();  // [S, H_kv, capacity, D]
    T* op = out.data<T>();           // [B, H, D]
    const T s = static_cast<T>(scale);
#pragma omp parallel if (work >= kMinParallelWork)
    {
      std::vector<T> scores(static_cast<size_t>(capacity));
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t b = bh / H, h = bh % H, L = r[2 * b + 1] + 1;
        const int64_t seq = (r[2 * b] * H_kv + h / G) * capacity * D;  // [capacity, D] of this row's kv head
        const T* qi = qp + bh * D;
        T max_score = -INFINITY;
        for (int64_t j = 0; j < L; ++j) {
          const T* kj = kp + seq + j * D;
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
          scores[static_cast<size_t>(j)] = dot * s;
          max_score = std::max(max_score, dot * s);
        }
        T total = 0;
        for (int64_t j = 0; j < L; ++j)
          total += scores[static_cast<size_t>(j)] = std::exp(scores[static_cast<size_t>(j)] - max_score);
        T* oi = op + bh * D;
        for (int64_t d = 0; d < D; ++d) oi[d] = 0;
        for (int64_t j = 0; j < L; ++j) {
          const T p = scores[static_cast<size_t>(j)] / total;
          const T* vj = vp + seq + j * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) oi[d] += p * vj[d];
        }
      }
    }
  });
}

}  // namespace lora
