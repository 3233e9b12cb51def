// CPU kernels of causal scaled-dot-product attention over [B, H, T, D] (backends/kernels/attention.h), forward
// and backward, in blocks of query rows.
//
// Saved vs recomputed: forward keeps only out [B, H, T, D] and the row logsumexp lse [B, H, T] (the op saves
// them with q, k, v). No T x T matrix outlives a call: both passes work on one block of query rows at a
// time, and backward recomputes that block's probabilities as P = exp(q k^T * scale - lse), masked.
//
// Row block [i0, i1) only attends to keys [0, i1), so every gemm below stops at column i1: the masked upper
// triangle beyond the block is never computed, which halves the work of a full T x T product. Inside the
// block, entries with j > i are set to 0 before they are used.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/dispatch.h"
#include "backends/kernels/attention.h"
#include "backends/cpu/fast_math.h"

namespace lora {
namespace {

constexpr int64_t kRowBlock = 64;  // query rows per block: the workspace is [threads, kRowBlock, T]
// Below this many multiply-adds (B H T^2 D) a call runs on one thread: waking the pool costs more (the KV
// cache's prompt pass on a tiny model, the tests).
constexpr int64_t kMinParallelWork = int64_t(1) << 18;

// Threads for a call over bh heads of [t, d].
int attention_threads(int64_t bh, int64_t t, int64_t d) {
  if (bh * t * t * d < kMinParallelWork) return 1;
  return std::max<int>(1, std::min<int64_t>(omp_get_max_threads(), bh));
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

struct AttentionShape {
  int64_t bh, t, d;  // B * H, T, D
};

AttentionShape attention_shape(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               const Tensor& lse) {
  LORA_CHECK(q.rank() == 4, "{}: q must be [B, H, T, D], got {}", kernel, q.shape().str());
  LORA_CHECK(k.shape() == q.shape() && v.shape() == q.shape() && out.shape() == q.shape(),
             "{}: q {}, k {}, v {} and out {} must have the same shape", kernel, q.shape().str(), k.shape().str(),
             v.shape().str(), out.shape().str());
  const AttentionShape s{q.size(0) * q.size(1), q.size(2), q.size(3)};
  LORA_CHECK(s.d > 0, "{}: the head dimension of q {} is empty", kernel, q.shape().str());
  LORA_CHECK(lse.numel() == s.bh * s.t, "{}: lse {} must be [B, H, T] for q {}", kernel, lse.shape().str(),
             q.shape().str());
  return s;
}

// Per-thread scratch of [threads, rows, T], allocated once per call (before the parallel loop) and charged
// to the Workspace category.
Tensor workspace(int threads, int64_t rows, int64_t t, DType dtype) {
  return Tensor::empty({threads, rows, t}, dtype, Device::cpu(), MemoryCategory::Workspace);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Forward: per (b, h) and row block, S = q k^T * scale, P = softmax over j <= i, out = P v, lse saved.

void kernels::AttentionForward::cpu(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                                   Tensor& lse) {
  const auto [bh, t, d] = attention_shape("attention_forward", q, k, v, out, lse);
  if (bh == 0 || t == 0) return;
  const int64_t block = std::min(kRowBlock, t);
  const int threads = attention_threads(bh, t, d);
  Tensor scores = workspace(threads, block, t, q.dtype());  // per thread: S, then P, of one row block

  dispatch_floating(q.dtype(), "attention_forward", [&]<typename T>() {
    const T* qp = q.data<T>();  // [BH, T, D]
    const T* kp = k.data<T>();  // [BH, T, D]
    const T* vp = v.data<T>();  // [BH, T, D]
    T* op = out.data<T>();      // [BH, T, D]
    T* lp = lse.data<T>();      // [BH, T]
    T* ws = scores.data<T>();   // [threads, block, T]
    const T alpha = static_cast<T>(scale);

#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t n = 0; n < bh; ++n) {
      const T* qn = qp + n * t * d;
      const T* kn = kp + n * t * d;
      const T* vn = vp + n * t * d;
      T* on = op + n * t * d;
      T* ln = lp + n * t;
      T* s = ws + omp_get_thread_num() * block * t;  // [block, T], row stride T
      for (int64_t i0 = 0; i0 < t; i0 += block) {
        const int64_t i1 = std::min(t, i0 + block), rows = i1 - i0;
        // s[0:rows, 0:i1] = scale * q[i0:i1] k[0:i1]^T
        blas_gemm(false, true, rows, i1, d, alpha, qn + i0 * d, d, kn, d, T(0), s, t);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r;
          T* sr = s + r * t;
          T m = sr[0];
#pragma omp simd reduction(max : m)
          for (int64_t j = 1; j <= i; ++j) m = std::max(m, sr[j]);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j <= i; ++j) {
            sr[j] = cpu::fast_exp(sr[j] - m);
            sum += sr[j];
          }
          const T inv = T(1) / sum;
#pragma omp simd
          for (int64_t j = 0; j <= i; ++j) sr[j] *= inv;
          for (int64_t j = i + 1; j < i1; ++j) sr[j] = 0;  // causal mask
          ln[i] = m + std::log(sum);
        }
        // out[i0:i1] = P[0:rows, 0:i1] v[0:i1]
        blas_gemm(false, false, rows, d, i1, T(1), s, t, vn, d, T(0), on + i0 * d, d);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Backward, per (b, h) and row block, with P recomputed from q, k and lse:
//   dP = gout v^T,  dS = P * (dP - rowsum(gout * out)),
//   gq = scale * dS k,  gk += scale * dS^T q,  gv += P^T gout   (gk, gv gather over all row blocks).

void kernels::AttentionBackward::cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse, const Tensor& grad_out, double scale, Tensor& grad_q,
                                    Tensor& grad_k, Tensor& grad_v) {
  const auto [bh, t, d] = attention_shape("attention_backward", q, k, v, out, lse);
  LORA_CHECK(grad_out.shape() == q.shape() && grad_q.shape() == q.shape() && grad_k.shape() == q.shape() &&
                 grad_v.shape() == q.shape(),
             "attention_backward: grad_out {}, grad_q {}, grad_k {}, grad_v {} must all be {}", grad_out.shape().str(),
             grad_q.shape().str(), grad_k.shape().str(), grad_v.shape().str(), q.shape().str());
  if (bh == 0 || t == 0) return;
  const int64_t block = std::min(kRowBlock, t);
  const int threads = attention_threads(bh, t, d);
  Tensor probs = workspace(threads, block, t, q.dtype());   // per thread: P of one row block
  Tensor dprobs = workspace(threads, block, t, q.dtype());  // per thread: dP, then dS, of one row block

  dispatch_floating(q.dtype(), "attention_backward", [&]<typename T>() {
    const T* qp = q.data<T>();          // [BH, T, D]
    const T* kp = k.data<T>();          // [BH, T, D]
    const T* vp = v.data<T>();          // [BH, T, D]
    const T* op = out.data<T>();        // [BH, T, D]
    const T* lp = lse.data<T>();        // [BH, T]
    const T* gop = grad_out.data<T>();  // [BH, T, D]
    T* gqp = grad_q.data<T>();          // [BH, T, D]
    T* gkp = grad_k.data<T>();          // [BH, T, D]
    T* gvp = grad_v.data<T>();          // [BH, T, D]
    T* ws_p = probs.data<T>();          // [threads, block, T]
    T* ws_ds = dprobs.data<T>();        // [threads, block, T]
    const T alpha = static_cast<T>(scale);

#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t n = 0; n < bh; ++n) {
      const T* qn = qp + n * t * d;
      const T* kn = kp + n * t * d;
      const T* vn = vp + n * t * d;
      const T* on = op + n * t * d;
      const T* ln = lp + n * t;
      const T* gon = gop + n * t * d;
      T* gqn = gqp + n * t * d;
      T* gkn = gkp + n * t * d;
      T* gvn = gvp + n * t * d;
      T* p = ws_p + omp_get_thread_num() * block * t;    // [block, T], row stride T
      T* ds = ws_ds + omp_get_thread_num() * block * t;  // [block, T], row stride T
      std::fill(gkn, gkn + t * d, T(0));
      std::fill(gvn, gvn + t * d, T(0));
      for (int64_t i0 = 0; i0 < t; i0 += block) {
        const int64_t i1 = std::min(t, i0 + block), rows = i1 - i0;
        // p = scale * q[i0:i1] k[0:i1]^T (exponentiated below), ds = gout[i0:i1] v[0:i1]^T
        blas_gemm(false, true, rows, i1, d, alpha, qn + i0 * d, d, kn, d, T(0), p, t);
        blas_gemm(false, true, rows, i1, d, T(1), gon + i0 * d, d, vn, d, T(0), ds, t);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r;
          T* pr = p + r * t;
          T* dsr = ds + r * t;
          T delta = 0;  // rowsum(gout * out) = sum_j P[i, j] dP[i, j]
#pragma omp simd reduction(+ : delta)
          for (int64_t c = 0; c < d; ++c) delta += gon[i * d + c] * on[i * d + c];
          const T lse_i = ln[i];
#pragma omp simd
          for (int64_t j = 0; j <= i; ++j) {
            pr[j] = cpu::fast_exp(pr[j] - lse_i);
            dsr[j] = pr[j] * (dsr[j] - delta);
          }
          for (int64_t j = i + 1; j < i1; ++j) pr[j] = dsr[j] = 0;  // causal mask
        }
        // gv[0:i1] += P^T gout[i0:i1];  gq[i0:i1] = scale * dS k[0:i1];  gk[0:i1] += scale * dS^T q[i0:i1]
        blas_gemm(true, false, i1, d, rows, T(1), p, t, gon + i0 * d, d, T(1), gvn, d);
        blas_gemm(false, false, rows, d, i1, alpha, ds, t, kn, d, T(0), gqn + i0 * d, d);
        blas_gemm(true, false, i1, d, rows, alpha, ds, t, qn + i0 * d, d, T(1), gkn, d);
      }
    }
  });
}

}  // namespace lora
