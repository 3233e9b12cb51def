// Block copies along a middle axis and the reductions: column sums ([R, K] -> [K]), row sums ([K, R] -> [K]),
// a general strided sum for other patterns, and the sum / sum of squares of a whole tensor (in double).
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace lora::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// copy_block: outer rows of `len` = count * inner contiguous elements each.

template <typename T, bool kAccumulate>
__global__ void copy_block_kernel(const T* src, T* dst, int64_t outer, int64_t len, int64_t src_row, int64_t dst_row,
                                  int64_t src_off, int64_t dst_off) {
  const int64_t n = outer * len;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = i / len, r = i - o * len;
    const T v = src[o * src_row + src_off + r];
    T& d = dst[o * dst_row + dst_off + r];
    if constexpr (kAccumulate)
      d += v;
    else
      d = v;
  }
}

template <typename T>
void launch_copy_block(const void* src, void* dst, int64_t outer, int64_t src_mid, int64_t dst_mid, int64_t inner,
                       int64_t src_start, int64_t dst_start, int64_t count) {
  const int64_t len = count * inner;
  copy_block_kernel<T, false><<<grid_for(outer * len, kThreads), kThreads>>>(
      static_cast<const T*>(src), static_cast<T*>(dst), outer, len, src_mid * inner, dst_mid * inner, src_start * inner,
      dst_start * inner);
  LORA_CUDA_CHECK_LAUNCH("copy_block");
}

// ---------------------------------------------------------------------------------------------------
// Reductions

struct SumLoad {
  const float* x;
  int64_t cols;
  __device__ void operator()(int64_t r, int64_t c, float* acc) const { acc[0] += x[r * cols + c]; }
};

// Row sums: a warp or a block per row.
template <bool kBlock>
__global__ void sum_cols_kernel(const float* x, int64_t rows, int64_t cols, float* out) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const float* xr = x + row * cols;
  float acc = 0.f;
  for (int64_t j = Map::lane(); j < cols; j += Map::width()) acc += xr[j];
  acc = Map::sum(acc, smem);
  if (Map::lane() == 0) out[row] = acc;
}

__global__ void sum_general_kernel(const float* x, float* out, int64_t n_out, int64_t n_reduced, ReduceIndex idx) {
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < n_out;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t base = 0, rem = o;
    for (int d = idx.kept_rank - 1; d >= 0; --d) {
      const int64_t c = rem % idx.kept_dims[d];
      rem /= idx.kept_dims[d];
      base += c * idx.kept_strides[d];
    }
    float acc = 0.f;
    for (int64_t r = 0; r < n_reduced; ++r) {
      int64_t off = 0, rr = r;
      for (int d = idx.reduced_rank - 1; d >= 0; --d) {
        const int64_t c = rr % idx.reduced_dims[d];
        rr /= idx.reduced_dims[d];
        off += c * idx.reduced_strides[d];
      }
      acc += x[base + off];
    }
    out[o] = acc;
  }
}

constexpr int kReduceAllThreads = 512;

int reduce_all_grid(int64_t n) {
  int64_t blocks = (n + kReduceAllThreads * 4 - 1) / (kReduceAllThreads * 4);
  if (blocks < 1) blocks = 1;
  if (blocks > 1024) blocks = 1024;
  return static_cast<int>(blocks);
}

template <bool kSquare>
__global__ void reduce_all_partial_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double smem[32];
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double v = x[i];
    acc += kSquare ? v * v : v;
  }
  acc = block_sum(acc, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void reduce_all_final_kernel(const double* partial, int count, double* out_double, float* out_float) {
  __shared__ double smem[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, smem);
  if (threadIdx.x == 0) {
    if (out_double) *out_double = acc;
    if (out_float) *out_float = static_cast<float>(acc);
  }
}

}  // namespace

void copy_block(const void* src, void* dst, int elem_size, int64_t outer, int64_t src_mid, int64_t dst_mid,
                int64_t inner, int64_t src_start, int64_t dst_start, int64_t count, bool accumulate) {
  const int64_t len = count * inner;
  if (outer <= 0 || len <= 0) return;
  if (accumulate) {
    copy_block_kernel<float, true><<<grid_for(outer * len, kThreads), kThreads>>>(
        static_cast<const float*>(src), static_cast<float*>(dst), outer, len, src_mid * inner, dst_mid * inner,
        src_start * inner, dst_start * inner);
    LORA_CUDA_CHECK_LAUNCH("copy_block");
    return;
  }
  switch (elem_size) {
    case 2:
      launch_copy_block<uint16_t>(src, dst, outer, src_mid, dst_mid, inner, src_start, dst_start, count);
      break;
    case 4:
      launch_copy_block<uint32_t>(src, dst, outer, src_mid, dst_mid, inner, src_start, dst_start, count);
      break;
    case 8:
      launch_copy_block<uint64_t>(src, dst, outer, src_mid, dst_mid, inner, src_start, dst_start, count);
      break;
    default:
      throw_cuda_error("copy_block", __FILE__, __LINE__, "unsupported element size");
  }
}

int column_reduce_splits(int64_t rows, int64_t cols) {
  return column_splits(rows, cols);
}

void sum_rows_f32(const float* x, int64_t rows, int64_t cols, float* partial, int splits, float* out) {
  if (cols <= 0) return;
  launch_column_reduce<1>("sum_to (columns)", SumLoad{x, cols}, rows, cols, partial, splits, out, nullptr, false);
}

void sum_cols_f32(const float* x, int64_t rows, int64_t cols, float* out) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, cols);
  if (l.block)
    sum_cols_kernel<true><<<l.grid, l.threads>>>(x, rows, cols, out);
  else
    sum_cols_kernel<false><<<l.grid, l.threads>>>(x, rows, cols, out);
  LORA_CUDA_CHECK_LAUNCH("sum_to (rows)");
}

void sum_general_f32(const float* x, float* out, int64_t n_out, int64_t n_reduced, const ReduceIndex& idx) {
  if (n_out <= 0) return;
  sum_general_kernel<<<grid_for(n_out, kThreads), kThreads>>>(x, out, n_out, n_reduced, idx);
  LORA_CUDA_CHECK_LAUNCH("sum_to (general)");
}

int reduce_all_blocks(int64_t n) {
  return reduce_all_grid(n);
}

void reduce_all_f32(const float* x, int64_t n, bool square, double* partial, double* out_double, float* out_float) {
  const int blocks = reduce_all_grid(n);
  if (square)
    reduce_all_partial_kernel<true><<<blocks, kReduceAllThreads>>>(x, n, partial);
  else
    reduce_all_partial_kernel<false><<<blocks, kReduceAllThreads>>>(x, n, partial);
  LORA_CUDA_CHECK_LAUNCH("reduce_all (partial)");
  reduce_all_final_kernel<<<1, kReduceAllThreads>>>(partial, blocks, out_double, out_float);
  LORA_CUDA_CHECK_LAUNCH("reduce_all (final)");
}

}  // namespace lora::cuda
