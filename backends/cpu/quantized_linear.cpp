// CPU kernels of the matmul with a quantized frozen weight (backends/kernels/quantized_linear.h): each tile
// of weight rows is dequantized in parallel (rows split across threads), then one OpenBLAS gemm runs on it;
// up to kSkinnyCrossover rows of x in f32 (decoding), the skinny product reads the weight once and
// dequantizes it in registers instead (the tile is not used).
#include <cblas.h>

#include <vector>

#include "backends/cpu/dispatch.h"
#include "backends/cpu/skinny_matmul.h"
#include "backends/kernels/quantized_linear.h"

namespace lora {
namespace {

struct Dims {
  int64_t rows, in, out, tile_rows;
};

// Checks shapes and dtypes; `a` is x (forward) or grad_y (backward), `b` the other side. The tile is checked
// only where it is used (with_tile).
Dims check_args(const char* kernel, const Tensor& a, int64_t a_cols, const QuantizedWeight& w, const Tensor& tile,
                const Tensor& b, int64_t b_cols, bool with_tile) {
  LORA_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ ({}, {})", kernel, dtype_name(a.dtype()),
             dtype_name(b.dtype()));
  LORA_CHECK(a.size(-1) == a_cols && b.size(-1) == b_cols && a.numel() / a_cols == b.numel() / b_cols,
             "{}: {} and {} do not fit a weight [{}, {}]", kernel, a.shape().str(), b.shape().str(), w.rows, w.cols);
  if (!with_tile) return {a.numel() / a_cols, w.cols, w.rows, 0};
  LORA_CHECK(tile.defined() && tile.dtype() == a.dtype(), "{}: the tile must be {}, got {}", kernel,
             dtype_name(a.dtype()), tile.defined() ? dtype_name(tile.dtype()) : "none");
  LORA_CHECK(tile.rank() == 2 && tile.size(1) == w.cols && tile.size(0) > 0, "{}: tile {} must be [t, {}]", kernel,
             tile.shape().str(), w.cols);
  return {a.numel() / a_cols, w.cols, w.rows, tile.size(0)};
}

// Up to kSkinnyCrossover rows of f32 x: the skinny product (no tile). The meta device answers as the CPU
// does: its dry run predicts a CPU step's memory (train/memory_prediction.h).
bool takes_skinny_product(const Tensor& x, int64_t rows) {
  return (x.device().is_cpu() || x.device().is_meta()) && x.dtype() == DType::F32 && rows >= 1 &&
         rows <= cpu::kSkinnyCrossover;
}

// tile[0 : count, :] = W[row0 : row0 + count, :], rows split across threads.
template <typename T>
void dequantize_rows(const QuantizedView& v, int64_t row0, int64_t count, T* tile) {
#pragma omp parallel for schedule(static) if (count * v.cols >= (1 << 14))
  for (int64_t r = 0; r < count; ++r) {
    dequantize_span(v, (row0 + r) * v.cols, (row0 + r + 1) * v.cols, tile + r * v.cols);
  }
}

// C[m, n] (ldc) = alpha op(A) op(B) + beta C, row-major with explicit leading dimensions.
template <typename T>
void gemm_ld(bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
             int64_t ldc) {
  const CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, opb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, opb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
  }
}

}  // namespace

bool kernels::QuantizedLinearForward::needs_tile(const Tensor& x) {
  return !(x.rank() >= 1 && x.size(-1) > 0 && takes_skinny_product(x, x.numel() / x.size(-1)));
}

void kernels::QuantizedLinearForward::cpu(const Tensor& x, const QuantizedWeight& w, Tensor& tile, Tensor& y) {
  const bool skinny = x.size(-1) == w.cols && w.cols > 0 && takes_skinny_product(x, x.numel() / w.cols);
  const Dims d = check_args(name, x, w.cols, w, tile, y, w.rows, !skinny);
  const QuantizedView v = host_view(w);
  if (skinny) {
    cpu::SkinnyProduct p;
    p.x = x.data<float>(), p.m = d.rows, p.ldx = d.in, p.w = v, p.y = y.data<float>(), p.ldy = d.out;
    cpu::skinny_matmul(p);
    return;
  }
  dispatch_floating(x.dtype(), name, [&]<typename T>() {
    const T* px = x.data<T>();
    T* pt = tile.data<T>();
    T* py = y.data<T>();
    for (int64_t j0 = 0; j0 < d.out; j0 += d.tile_rows) {
      const int64_t t = std::min(d.tile_rows, d.out - j0);
      dequantize_rows(v, j0, t, pt);
      // y[:, j0 : j0 + t] = x [rows, in] tile^T [in, t]
      gemm_ld<T>(true, d.rows, t, d.in, px, d.in, pt, d.in, T(0), py + j0, d.out);
    }
  });
}

void kernels::QuantizedLinearBackward::cpu(const Tensor& grad_y, const QuantizedWeight& w, Tensor& tile,
                                           Tensor& grad_x) {
  const Dims d = check_args(name, grad_y, w.rows, w, tile, grad_x, w.cols, true);
  const QuantizedView v = host_view(w);
  dispatch_floating(grad_y.dtype(), name, [&]<typename T>() {
    const T* pg = grad_y.data<T>();
    T* pt = tile.data<T>();
    T* px = grad_x.data<T>();
    for (int64_t j0 = 0; j0 < d.out; j0 += d.tile_rows) {
      const int64_t t = std::min(d.tile_rows, d.out - j0);
      dequantize_rows(v, j0, t, pt);
      // grad_x (+)= grad_y[:, j0 : j0 + t] [rows, t] tile [t, in]
      gemm_ld<T>(false, d.rows, d.in, t, pg + j0, d.out, pt, d.in, j0 == 0 ? T(0) : T(1), px, d.in);
    }
  });
}

void kernels::QuantizedGatherRows::cpu(const QuantizedWeight& w, const Tensor& ids, Tensor& out) {
  const int64_t n = ids.numel();
  LORA_CHECK(is_integer(ids.dtype()), "{}: ids must be int32 or int64, got {}", name, dtype_name(ids.dtype()));
  LORA_CHECK(out.numel() == n * w.cols, "{}: out {} must hold [{}, {}]", name, out.shape().str(), n, w.cols);
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {  // checked serially, before the parallel loop (no throw inside OpenMP)
    const int64_t id = read_index(ids, i);
    LORA_CHECK(id >= 0 && id < w.rows, "{}: id {} at position {} is out of range for an embedding of V = {} rows", name,
               id, i, w.rows);
    rows[static_cast<size_t>(i)] = id;
  }
  const QuantizedView v = host_view(w);
  dispatch_floating(out.dtype(), name, [&]<typename T>() {
    T* o = out.data<T>();
#pragma omp parallel for schedule(static) if (n * v.cols >= (1 << 14))
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = rows[static_cast<size_t>(i)];
      dequantize_span(v, r * v.cols, (r + 1) * v.cols, o + i * v.cols);
    }
  });
}

void kernels::QuantizedDequantize::cpu(const QuantizedWeight& w, int64_t row0, int64_t count, Tensor& out) {
  LORA_CHECK(row0 >= 0 && count >= 0 && row0 <= w.rows - count && out.numel() == count * w.cols,
             "{}: rows [{}, {}) of a weight [{}, {}] into {}", name, row0, row0 + count, w.rows, w.cols,
             out.shape().str());
  const QuantizedView v = host_view(w);
  dispatch_floating(out.dtype(), name, [&]<typename T>() { dequantize_rows(v, row0, count, out.data<T>()); });
}

}  // namespace lora
