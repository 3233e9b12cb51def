// Launchers of the CUDA backend's generic kernels (elementwise.cu, layout.cu, gemm.cpp), on raw device
// pointers of the current device: cuda_backend.cpp checks the tensors, makes their device current, and calls
// these; the fused kernels (backends/cuda/<op>.cu) call them too (gemm, fills). Every launch is checked
// (LORA_CUDA_CHECK_LAUNCH). Arrays are dense row-major float32 unless said otherwise.
#pragma once

#include <cstdint>

#include "backends/elementwise_ops.h"

namespace lora::cuda {

// ---------------------------------------------------------------------------------------------------
// Index maps for strided (broadcast, permuted) reads over a contiguous output

constexpr int kMaxDims = 8;

// Output element i, decomposed over `dims` (row-major), reads a[sum c_d stride_a[d]] and b[sum c_d stride_b[d]].
// A stride of 0 broadcasts. Built and coalesced on the host (cuda_backend.cpp).
struct StridedIndex {
  int rank = 0;
  int64_t dims[kMaxDims] = {};
  int64_t stride_a[kMaxDims] = {};
  int64_t stride_b[kMaxDims] = {};
};

// Kept and reduced axes of x for a general sum_to: output o (over kept dims) sums x[base(o) + off(r)].
struct ReduceIndex {
  int kept_rank = 0, reduced_rank = 0;
  int64_t kept_dims[kMaxDims] = {}, kept_strides[kMaxDims] = {};
  int64_t reduced_dims[kMaxDims] = {}, reduced_strides[kMaxDims] = {};
};

// ---------------------------------------------------------------------------------------------------
// elementwise.cu

void fill_f32(float* out, int64_t n, float value);
void fill_i32(int32_t* out, int64_t n, int32_t value);
void fill_i64(int64_t* out, int64_t n, int64_t value);

// y = f(x; alpha), the formulas of backends/cuda/elementwise_formulas.cuh; y may be x.
void unary_f32(UnaryOp op, const float* x, float* y, int64_t n, float alpha);
// gx = gy * f'(x); saved is what the table says the derivative reads (x or y), null when it reads nothing.
void unary_backward_f32(UnaryOp op, const float* saved, const float* gy, float* gx, int64_t n, float alpha);
// out = a op b, all of n elements.
void binary_f32(BinaryOp op, const float* a, const float* b, float* out, int64_t n);
// out[i] = a[idx_a(i)] op b[idx_b(i)] over n output elements.
void binary_strided_f32(BinaryOp op, const float* a, const float* b, float* out, int64_t n, const StridedIndex& idx);
// out[i] = x[idx_a(i)] for elements of 2, 4 or 8 bytes (permute, expand).
void gather(const void* x, void* out, int64_t n, int elem_size, const StridedIndex& idx);

// ---------------------------------------------------------------------------------------------------
// layout.cu: block copies and reductions

// dst[o, dst_start + j, :] (+)= src[o, src_start + j, :]; accumulate only for float32 (elem_size 4).
void copy_block(const void* src, void* dst, int elem_size, int64_t outer, int64_t src_mid, int64_t dst_mid,
                int64_t inner, int64_t src_start, int64_t dst_start, int64_t count, bool accumulate);

// Column sums of x [rows, cols] into out [cols], over `splits` row ranges (partial: [splits, cols] workspace).
int column_reduce_splits(int64_t rows, int64_t cols);
void sum_rows_f32(const float* x, int64_t rows, int64_t cols, float* partial, int splits, float* out);
// Row sums of x [rows, cols] into out [rows].
void sum_cols_f32(const float* x, int64_t rows, int64_t cols, float* out);
// out[o] = sum over the reduced axes (general pattern, one thread per output).
void sum_general_f32(const float* x, float* out, int64_t n_out, int64_t n_reduced, const ReduceIndex& idx);

// Sum (or sum of squares) of all n elements, accumulated in double. partial: workspace of
// reduce_all_blocks(n) doubles. Writes the result to out_double and/or out_float (either may be null).
int reduce_all_blocks(int64_t n);
void reduce_all_f32(const float* x, int64_t n, bool square, double* partial, double* out_double, float* out_float);

// ---------------------------------------------------------------------------------------------------
// gemm.cpp: cuBLAS, row-major semantics of lora::GemmShape

struct GemmArgs {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  float alpha = 1.f, beta = 0.f;
};
void gemm_f32(int device, const float* a, const float* b, float* c, const GemmArgs& g);

}  // namespace lora::cuda
