// CPU kernels of causal scaled-dot-product attention (backends/kernels/attention.h), grouped-query attention
// included, forward and backward, in blocks of query rows.
//
// Saved vs recomputed: forward keeps only out [B, H, T, D] and the row logsumexp lse [B, H, T] (the op saves
// them with q, k, v). No T x T matrix outlives a call: both passes work on one block of query rows at a
// time, and backward recomputes that block's probabilities as P = exp(q k^T * scale - lse), masked.
//
// Row block [i0, i1) only attends to keys [0, i1), so every gemm below stops at column i1: the masked upper
// triangle beyond the block is never computed, which halves the work of a full T x T product. With packed
// segments (key_start), row i sees keys [key_start[i], i] only, so the gemms of a block also start at the
// block's first visible key j0: a row of short examples costs what they cost apart, not T x T. Inside
// the block, entries outside [key_start[i], i] are set to 0 before they are used.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/dispatch.h"
#include "backends/cpu/fast_math.h"
#include "backends/kernels/attention.h"

namespace lora {
namespace {

constexpr int64_t kRowBlock = 64;  // query rows per block: the workspace is [threads, kRowBlock, T]
// Below this many multiply-adds (B H T^2 D) a call runs on one thread: waking the pool costs more (the KV
// cache's prompt pass on a tiny model, the tests).
constexpr int64_t kMinParallelWork = int64_t(1) << 18;

// Threads for a call over bh heads of [t, d] whose loop has `items` independent iterations.
int attention_threads(int64_t bh, int64_t t, int64_t d, int64_t items) {
  if (bh * t * t * d < kMinParallelWork) return 1;
  return std::max<int>(1, std::min<int64_t>(omp_get_max_threads(), items));
}

// C = alpha op(A) op(B) + beta C, row-major, through OpenBLAS (single-threaded inside our OpenMP region).
inline void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                      int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha,
              a, lda, b, ldb, beta, c, ldc);
}
inline void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                      int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha,
              a, lda, b, ldb, beta, c, ldc);
}

// q, out [B, H, T, D]; k, v [B, Hkv, T, D] with H % Hkv == 0. Query head n (of B H) reads kv head kv(n).
struct AttentionShape {
  int64_t bh, t, d;                                  // B * H, T, D
  int64_t group;                                     // G = H / Hkv query heads per kv head
  int64_t kv(int64_t n) const { return n / group; }  // (b H + h) / G = b Hkv + h / G, as G divides H
};

AttentionShape attention_shape(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               const Tensor& lse, const Tensor& key_start) {
  LORA_CHECK(q.rank() == 4 && k.rank() == 4, "{}: q {} and k {} must be [B, H, T, D] and [B, Hkv, T, D]", kernel,
             q.shape().str(), k.shape().str());
  const int64_t H = q.size(1), Hkv = k.size(1);
  LORA_CHECK(v.shape() == k.shape() && out.shape() == q.shape() && k.size(0) == q.size(0) && k.size(2) == q.size(2) &&
                 k.size(3) == q.size(3) && Hkv > 0 && H % Hkv == 0,
             "{}: q {}, k {}, v {} and out {} do not fit (q, out [B, H, T, D]; k, v [B, Hkv, T, D], H % Hkv == 0)",
             kernel, q.shape().str(), k.shape().str(), v.shape().str(), out.shape().str());
  const AttentionShape s{q.size(0) * H, q.size(2), q.size(3), H / Hkv};
  LORA_CHECK(s.d > 0, "{}: the head dimension of q {} is empty", kernel, q.shape().str());
  LORA_CHECK(lse.numel() == s.bh * s.t, "{}: lse {} must be [B, H, T] for q {}", kernel, lse.shape().str(),
             q.shape().str());
  if (key_start.defined()) {
    LORA_CHECK(key_start.dtype() == DType::I32 && key_start.shape() == (Shape{q.size(0), s.t}),
               "{}: key_start {} {} must be int32 [B, T] for q {}", kernel, dtype_name(key_start.dtype()),
               key_start.shape().str(), q.shape().str());
    const int32_t* ks = key_start.data<int32_t>();
    for (int64_t i = 0; i < key_start.numel(); ++i) {
      LORA_CHECK(ks[i] >= 0 && ks[i] <= i % s.t, "{}: key_start[{}, {}] = {} is outside [0, {}]", kernel, i / s.t,
                 i % s.t, ks[i], i % s.t);
    }
  }
  return s;
}

// The first key row i of one batch row sees (ks: that row's key_start [T], or null: 0), and the first any
// row of the block [i0, i1) sees.
inline int64_t first_key(const int32_t* ks, int64_t i) {
  return ks ? ks[i] : 0;
}
inline int64_t block_first_key(const int32_t* ks, int64_t i0, int64_t i1) {
  if (!ks) return 0;
  int64_t j0 = ks[i0];
  for (int64_t i = i0 + 1; i < i1; ++i) j0 = std::min<int64_t>(j0, ks[i]);
  return j0;
}

// Per-thread scratch of [threads, rows, T], allocated once per call (before the parallel loop) and charged
// to the Workspace category.
Tensor workspace(int threads, int64_t rows, int64_t t, DType dtype) {
  return Tensor::empty({threads, rows, t}, dtype, Device::cpu(), MemoryCategory::Workspace);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Forward: per (b, h) and row block, S = q k^T * scale, P = softmax over key_start[i] <= j <= i, out = P v,
// lse saved.

void kernels::AttentionForward::cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start,
                                    double scale, Tensor& out, Tensor& lse) {
  const AttentionShape shape = attention_shape(name, q, k, v, out, lse, key_start);
  const int64_t heads = q.size(1);
  const int32_t* ksp = key_start.defined() ? key_start.data<int32_t>() : nullptr;  // [B, T]
  const int64_t bh = shape.bh, t = shape.t, d = shape.d;
  if (bh == 0 || t == 0) return;
  const int64_t block = std::min(kRowBlock, t);
  const int threads = attention_threads(bh, t, d, bh);
  Tensor scores = workspace(threads, block, t, q.dtype());  // per thread: S, then P, of one row block

  dispatch_floating(q.dtype(), name, [&]<typename T>() {
    const T* qp = q.data<T>();  // [BH, T, D]
    const T* kp = k.data<T>();  // [B Hkv, T, D]
    const T* vp = v.data<T>();  // [B Hkv, T, D]
    T* op = out.data<T>();      // [BH, T, D]
    T* lp = lse.data<T>();      // [BH, T]
    T* ws = scores.data<T>();   // [threads, block, T]
    const T alpha = static_cast<T>(scale);

#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t n = 0; n < bh; ++n) {
      const T* qn = qp + n * t * d;
      const T* kn = kp + shape.kv(n) * t * d;
      const T* vn = vp + shape.kv(n) * t * d;
      T* on = op + n * t * d;
      T* ln = lp + n * t;
      const int32_t* ks = ksp ? ksp + (n / heads) * t : nullptr;  // this batch row's key_start [T]
      T* s = ws + omp_get_thread_num() * block * t;               // [block, T], row stride T
      for (int64_t i0 = 0; i0 < t; i0 += block) {
        const int64_t i1 = std::min(t, i0 + block), rows = i1 - i0, j0 = block_first_key(ks, i0, i1);
        // s[0:rows, j0:i1] = scale * q[i0:i1] k[j0:i1]^T
        blas_gemm(false, true, rows, i1 - j0, d, alpha, qn + i0 * d, d, kn + j0 * d, d, T(0), s + j0, t);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, lo = first_key(ks, i);
          T* sr = s + r * t;
          T m = sr[lo];
#pragma omp simd reduction(max : m)
          for (int64_t j = lo + 1; j <= i; ++j) m = std::max(m, sr[j]);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = lo; j <= i; ++j) {
            sr[j] = cpu::fast_exp(sr[j] - m);
            sum += sr[j];
          }
          const T inv = T(1) / sum;
#pragma omp simd
          for (int64_t j = lo; j <= i; ++j) sr[j] *= inv;
          for (int64_t j = j0; j < lo; ++j) sr[j] = 0;     // an earlier segment
          for (int64_t j = i + 1; j < i1; ++j) sr[j] = 0;  // causal mask
          ln[i] = m + std::log(sum);
        }
        // out[i0:i1] = P[0:rows, j0:i1] v[j0:i1]
        blas_gemm(false, false, rows, d, i1 - j0, T(1), s + j0, t, vn + j0 * d, d, T(0), on + i0 * d, d);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Backward, per (b, h) and row block, with P recomputed from q, k and lse:
//   dP = gout v^T,  dS = P * (dP - rowsum(gout * out)),
//   gq = scale * dS k,  gk += scale * dS^T q,  gv += P^T gout   (gk, gv gather over all row blocks, and over
//   the query heads that share the kv head).

void kernels::AttentionBackward::cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start,
                                     const Tensor& out, const Tensor& lse, const Tensor& grad_out, double scale,
                                     Tensor& grad_q, Tensor& grad_k, Tensor& grad_v) {
  const AttentionShape shape = attention_shape(name, q, k, v, out, lse, key_start);
  const int64_t heads = q.size(1);
  const int32_t* ksp = key_start.defined() ? key_start.data<int32_t>() : nullptr;  // [B, T]
  const int64_t bh = shape.bh, t = shape.t, d = shape.d, group = shape.group, kv_heads = bh / group;
  LORA_CHECK(grad_out.shape() == q.shape() && grad_q.shape() == q.shape() && grad_k.shape() == k.shape() &&
                 grad_v.shape() == k.shape(),
             "{}: grad_out {} and grad_q {} must be {}, grad_k {} and grad_v {} must be {}", name,
             grad_out.shape().str(), grad_q.shape().str(), q.shape().str(), grad_k.shape().str(), grad_v.shape().str(),
             k.shape().str());
  if (bh == 0 || t == 0) return;
  const int64_t block = std::min(kRowBlock, t);
  // One kv head per iteration: its G query heads add into the same grad_k and grad_v, so they run in turn.
  const int threads = attention_threads(bh, t, d, kv_heads);
  Tensor probs = workspace(threads, block, t, q.dtype());   // per thread: P of one row block
  Tensor dprobs = workspace(threads, block, t, q.dtype());  // per thread: dP, then dS, of one row block

  dispatch_floating(q.dtype(), name, [&]<typename T>() {
    const T* qp = q.data<T>();          // [BH, T, D]
    const T* kp = k.data<T>();          // [B Hkv, T, D]
    const T* vp = v.data<T>();          // [B Hkv, T, D]
    const T* op = out.data<T>();        // [BH, T, D]
    const T* lp = lse.data<T>();        // [BH, T]
    const T* gop = grad_out.data<T>();  // [BH, T, D]
    T* gqp = grad_q.data<T>();          // [BH, T, D]
    T* gkp = grad_k.data<T>();          // [B Hkv, T, D]
    T* gvp = grad_v.data<T>();          // [B Hkv, T, D]
    T* ws_p = probs.data<T>();          // [threads, block, T]
    T* ws_ds = dprobs.data<T>();        // [threads, block, T]
    const T alpha = static_cast<T>(scale);

#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t m = 0; m < kv_heads; ++m) {
      const T* kn = kp + m * t * d;
      const T* vn = vp + m * t * d;
      T* gkn = gkp + m * t * d;
      T* gvn = gvp + m * t * d;
      T* p = ws_p + omp_get_thread_num() * block * t;    // [block, T], row stride T
      T* ds = ws_ds + omp_get_thread_num() * block * t;  // [block, T], row stride T
      std::fill(gkn, gkn + t * d, T(0));
      std::fill(gvn, gvn + t * d, T(0));
      for (int64_t n = m * group; n < (m + 1) * group; ++n) {  // the query heads of kv head m
        const T* qn = qp + n * t * d;
        const T* on = op + n * t * d;
        const T* ln = lp + n * t;
        const T* gon = gop + n * t * d;
        T* gqn = gqp + n * t * d;
        const int32_t* ks = ksp ? ksp + (n / heads) * t : nullptr;  // this batch row's key_start [T]
        for (int64_t i0 = 0; i0 < t; i0 += block) {
          const int64_t i1 = std::min(t, i0 + block), rows = i1 - i0, j0 = block_first_key(ks, i0, i1), w = i1 - j0;
          // p = scale * q[i0:i1] k[j0:i1]^T (exponentiated below), ds = gout[i0:i1] v[j0:i1]^T
          blas_gemm(false, true, rows, w, d, alpha, qn + i0 * d, d, kn + j0 * d, d, T(0), p + j0, t);
          blas_gemm(false, true, rows, w, d, T(1), gon + i0 * d, d, vn + j0 * d, d, T(0), ds + j0, t);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r, lo = first_key(ks, i);
            T* pr = p + r * t;
            T* dsr = ds + r * t;
            T delta = 0;  // rowsum(gout * out) = sum_j P[i, j] dP[i, j]
#pragma omp simd reduction(+ : delta)
            for (int64_t c = 0; c < d; ++c) delta += gon[i * d + c] * on[i * d + c];
            const T lse_i = ln[i];
#pragma omp simd
            for (int64_t j = lo; j <= i; ++j) {
              pr[j] = cpu::fast_exp(pr[j] - lse_i);
              dsr[j] = pr[j] * (dsr[j] - delta);
            }
            for (int64_t j = j0; j < lo; ++j) pr[j] = dsr[j] = 0;     // an earlier segment
            for (int64_t j = i + 1; j < i1; ++j) pr[j] = dsr[j] = 0;  // causal mask
          }
          // gv[j0:i1] += P^T gout[i0:i1];  gq[i0:i1] = scale * dS k[j0:i1];  gk[j0:i1] += scale * dS^T q[i0:i1]
          blas_gemm(true, false, w, d, rows, T(1), p + j0, t, gon + i0 * d, d, T(1), gvn + j0 * d, d);
          blas_gemm(false, false, rows, d, w, alpha, ds + j0, t, kn + j0 * d, d, T(0), gqn + i0 * d, d);
          blas_gemm(true, false, w, d, rows, alpha, ds + j0, t, qn + i0 * d, d, T(1), gkn + j0 * d, d);
        }
      }
    }
  });
}

}  // namespace lora
