// CPU gemm: row-major (strided-)batched matrix products through OpenBLAS, and x W^T with few rows of x
// (decoding) through the skinny product (backends/cpu/skinny_matmul.h).
#include <cblas.h>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/skinny_matmul.h"

namespace lora {
namespace {

template <typename T>
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, const T* b, T beta, T* c) {
  const CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
  // Row-major leading dimensions: A is stored [m, k] ([k, m] when transposed), B [k, n] ([n, k]).
  const int64_t lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

// Below this many multiply-adds per matrix, a batch runs one matrix per thread (single-threaded BLAS
// inside the OpenMP region) instead of one multi-threaded BLAS call after another.
constexpr int64_t kSmallGemm = 128 * 128 * 128;

// The f32 product x [rows, k] W [n, k]^T (+ beta C) through the skinny kernels.
void skinny_f32(int64_t rows, int64_t n, int64_t k, float alpha, const float* x, const float* w, float beta, float* c) {
  cpu::SkinnyProduct p;
  p.x = x, p.m = rows, p.ldx = k;
  p.w = QuantizedView{QuantFormat::F32, n, k, reinterpret_cast<const uint8_t*>(w), nullptr, nullptr, nullptr, 0.0f};
  p.alpha = alpha, p.beta = beta, p.y = c, p.ldy = n;
  cpu::skinny_matmul(p);
}

}  // namespace

void CpuBackend::gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& s) {
  LORA_CHECK(a.dtype() == b.dtype() && a.dtype() == c.dtype(), "gemm: dtypes differ ({}, {}, {})",
             dtype_name(a.dtype()), dtype_name(b.dtype()), dtype_name(c.dtype()));
  if (s.m == 0 || s.n == 0) return;
  dispatch_floating(a.dtype(), "gemm", [&]<typename T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = c.data<T>();
    const T alpha = static_cast<T>(s.alpha), beta = static_cast<T>(s.beta);
    if (s.k == 0) {  // an empty sum: C = beta C
      for (int64_t i = 0; i < s.batch * s.m * s.n; ++i) pc[i] = beta == T(0) ? T(0) : beta * pc[i];
      return;
    }
    // A batch of [m, k] rows against one shared B is one tall gemm (the linear layer's case).
    const bool one_b = s.batch == 1 || (s.stride_b == 0 && s.stride_a == s.m * s.k && s.stride_c == s.m * s.n);
    if constexpr (std::is_same_v<T, float>) {
      if (one_b && !s.trans_a && s.trans_b && s.batch * s.m <= cpu::kSkinnyCrossover) {
        skinny_f32(s.batch * s.m, s.n, s.k, alpha, pa, pb, beta, pc);
        return;
      }
    }
    if (s.batch > 1 && s.stride_b == 0 && !s.trans_a && s.stride_a == s.m * s.k && s.stride_c == s.m * s.n) {
      blas_gemm<T>(false, s.trans_b, s.batch * s.m, s.n, s.k, alpha, pa, pb, beta, pc);
      return;
    }
    if (s.batch > 1 && s.m * s.n * s.k < kSmallGemm) {
      // A whole batch below kSmallGemm multiply-adds runs on this thread: waking the pool costs more.
#pragma omp parallel for schedule(static) if (s.batch * s.m * s.n * s.k >= kSmallGemm)
      for (int64_t i = 0; i < s.batch; ++i) {
        blas_gemm<T>(s.trans_a, s.trans_b, s.m, s.n, s.k, alpha, pa + i * s.stride_a, pb + i * s.stride_b, beta,
                     pc + i * s.stride_c);
      }
      return;
    }
    for (int64_t i = 0; i < s.batch; ++i) {
      blas_gemm<T>(s.trans_a, s.trans_b, s.m, s.n, s.k, alpha, pa + i * s.stride_a, pb + i * s.stride_b, beta,
                   pc + i * s.stride_c);
    }
  });
}

}  // namespace lora
