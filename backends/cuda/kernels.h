// Launchers of the CUDA kernels, on raw device pointers of the current device. nvcc compiles the kernels
// (*.cu); cuda_backend*.cpp checks the tensors, makes their device current, and calls these. Every launch
// is checked (LORA_CUDA_CHECK_LAUNCH). Arrays are dense row-major float32 unless said otherwise.
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

// y[i] = counter_uniform(seed, i) >= float(p) ? x[i] * float(1 / (1 - p)) : 0 (float compare, as on the CPU).
void dropout_f32(const float* x, float* y, int64_t n, double p, uint64_t seed);

// One Adam(W) step over n elements (scalars precomputed on the host from lora::AdamStep).
struct AdamScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float step_size;  // lr / (1 - beta1^t)
  float inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^t)
  float eps;
  float decay;      // 1 - lr * weight_decay when decoupled, else 1
  float l2;         // weight_decay when not decoupled, else 0
};
void adam_step_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamScalars& s);

struct SgdScalars {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, first_step;
};
// momentum_buffer is null when momentum == 0.
void sgd_step_f32(float* param, const float* grad, float* momentum_buffer, int64_t n, const SgdScalars& s);

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
// softmax.cu: softmax family, cross-entropy, attention's row kernels

void softmax_forward_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log);
void softmax_backward_f32(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols, bool log);

// Integer ids/targets are int32 (ids64 false) or int64. `error` is a device buffer of 3 unsigned long long,
// zeroed before the launch: kernels set error[0] = 1, error[1] = the bad value, error[2] = its row.
void cross_entropy_forward_f32(const float* logits, const void* targets, bool targets64, int64_t ignore_index,
                               float* losses, float* lse, int64_t rows, int64_t vocab, unsigned long long* error);
void cross_entropy_backward_f32(const float* logits, const void* targets, bool targets64, const float* lse,
                                const float* grad_loss, float scale, int64_t ignore_index, float* grad_logits,
                                int64_t rows, int64_t vocab, unsigned long long* error);

// Attention, per row r of scores [rows = batch_heads * T, T] (t = r % T, causal: keys j <= t):
// forward turns scaled scores into probabilities in place and writes lse [rows];
void attention_softmax_f32(float* scores, float* lse, int64_t rows, int64_t T);
// backward turns scores into P = exp(s - lse) and dP into dS = P * (dP - sum_d dO * O), both in place.
void attention_backward_ds_f32(float* scores, float* dp, const float* grad_out, const float* out, const float* lse,
                               int64_t rows, int64_t T, int64_t D);

// ---------------------------------------------------------------------------------------------------
// nn.cu: layer norm and embedding

// weight/bias may be null (1 and 0); mean/rstd may be null (not written).
void layer_norm_forward_f32(const float* x, const float* weight, const float* bias, float eps, float* y, float* mean,
                            float* rstd, int64_t rows, int64_t cols);
void layer_norm_backward_dx_f32(const float* gy, const float* x, const float* weight, const float* mean,
                                const float* rstd, float* gx, int64_t rows, int64_t cols);
// grad_weight += sum_rows gy * xhat, grad_bias += sum_rows gy (either may be null).
// partial: workspace of 2 * splits * cols floats, splits = column_reduce_splits(rows, cols).
void layer_norm_backward_params_f32(const float* gy, const float* x, const float* mean, const float* rstd,
                                    int64_t rows, int64_t cols, float* partial, int splits, float* grad_weight,
                                    float* grad_bias);

void embedding_forward_f32(const float* weight, const void* ids, bool ids64, float* out, int64_t n, int64_t vocab,
                           int64_t dim, unsigned long long* error);
// Checks ids against [0, limit) without touching anything else (error as above).
void validate_ids(const void* ids, bool ids64, int64_t n, int64_t limit, unsigned long long* error);
void embedding_backward_f32(const void* ids, bool ids64, const float* grad_out, float* grad_weight, int64_t n,
                            int64_t vocab, int64_t dim, unsigned long long* error);

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
