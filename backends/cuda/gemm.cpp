// Row-major gemm on cuBLAS (column-major): a row-major C [m, n] is the column-major C^T [n, m], so we ask
// cuBLAS for C^T = op(B)^T op(A)^T, i.e. swap the operands and m/n and keep each operand's transpose flag.
//   A row-major [m, k] (no trans) is column-major A^T with ld k: op N;   stored [k, m] (trans): op T, ld m.
//   B row-major [k, n] (no trans) is column-major B^T with ld n: op N;   stored [n, k] (trans): op T, ld k.
#include <climits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_context.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"

namespace lora::cuda {

void gemm_f32(int device, const float* a, const float* b, float* c, const GemmArgs& g) {
  if (g.batch <= 0 || g.m <= 0 || g.n <= 0) return;
  LORA_CHECK(g.m <= INT_MAX && g.n <= INT_MAX && g.k <= INT_MAX && g.batch <= INT_MAX,
             "cuda gemm: sizes batch={} m={} n={} k={} exceed cuBLAS's 32-bit limits", g.batch, g.m, g.n, g.k);
  if (g.k <= 0) {  // an empty product: C = beta C, batch entry by batch entry (as the CPU loop does)
    const bool contiguous = g.stride_c == g.m * g.n;
    const int64_t calls = contiguous ? 1 : g.batch;
    const int64_t count = contiguous ? g.batch * g.m * g.n : g.m * g.n;
    for (int64_t i = 0; i < calls; ++i) {
      float* ci = c + i * g.stride_c;
      if (g.beta == 0.f)
        fill_f32(ci, count, 0.f);
      else
        unary_f32(UnaryOp::MulScalar, ci, ci, count, g.beta);
    }
    return;
  }
  cublasHandle_t handle = cublas_handle(device);
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int lda = g.trans_a ? m : k;
  const int ldb = g.trans_b ? k : n;
  const int ldc = n;
  if (g.stride_c == 0 && g.batch > 1) {
    // Every product lands in the same C: run them one after another (as the CPU loop does).
    for (int64_t i = 0; i < g.batch; ++i) {
      LORA_CUBLAS_CHECK(cublasSgemm(handle, op_b, op_a, n, m, k, &g.alpha, b + i * g.stride_b, ldb, a + i * g.stride_a,
                                    lda, &g.beta, c, ldc));
    }
    return;
  }
  LORA_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, op_b, op_a, n, m, k, &g.alpha, b, ldb, g.stride_b, a, lda,
                                              g.stride_a, &g.beta, c, ldc, g.stride_c, static_cast<int>(g.batch)));
}

}  // namespace lora::cuda
