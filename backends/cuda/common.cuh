// Device helpers shared by the kernels: launch sizes, warp/block reductions, the online (max, sum) pair of
// softmax, row-per-warp / row-per-block addressing, and the column-reduction kernels (sum_to, layer norm).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "backends/cuda/cuda_check.h"

namespace lora::cuda {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxGrid = 65536;  // grid-stride loops cover what a capped grid does not

inline unsigned grid_for(int64_t n, int64_t per_block) {
  int64_t blocks = (n + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxGrid) blocks = kMaxGrid;
  return static_cast<unsigned>(blocks);
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// ---------------------------------------------------------------------------------------------------
// Reductions

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Sum over the block; every thread gets the result. blockDim.x is a multiple of 32; smem holds 32 T.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < nwarps ? smem[lane] : T(0);
  return warp_sum(v);
}

// Running maximum m and sum s of exp(x - m): softmax in one pass.
struct MaxSum {
  float m, s;
};

__device__ __forceinline__ MaxSum maxsum_empty() {
  return {-INFINITY, 0.f};
}

__device__ __forceinline__ void maxsum_add(MaxSum& a, float x) {
  if (x > a.m) {
    a.s = a.s * expf(a.m - x) + 1.f;  // a.m = -inf: 0 * 0 + 1
    a.m = x;
  } else if (x != -INFINITY) {  // -inf adds nothing (and would make -inf - -inf = NaN); NaN propagates
    a.s += expf(x - a.m);
  }
}

__device__ __forceinline__ MaxSum maxsum_merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.f};
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ MaxSum warp_maxsum(MaxSum v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(kFullMask, v.m, o), __shfl_xor_sync(kFullMask, v.s, o)};
    v = maxsum_merge(v, other);
  }
  return v;
}

// smem holds 64 floats.
__device__ __forceinline__ MaxSum block_maxsum(MaxSum v, float* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_maxsum(v);
  __syncthreads();
  if (lane == 0) {
    smem[warp] = v.m;
    smem[32 + warp] = v.s;
  }
  __syncthreads();
  v = lane < nwarps ? MaxSum{smem[lane], smem[32 + lane]} : maxsum_empty();
  return warp_maxsum(v);
}

// ---------------------------------------------------------------------------------------------------
// Row kernels: a warp per row (8 rows per 256-thread block) when rows are short, a block per row otherwise.
// In warp mode a warp past the last row returns at once (warp mode never calls __syncthreads).

constexpr int64_t kWarpRowLimit = 1024;  // columns up to which a warp handles a row

template <bool kBlock>
struct RowMap {
  __device__ static int64_t row() {
    if constexpr (kBlock)
      return blockIdx.x;
    else
      return static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  }
  __device__ static int lane() {
    if constexpr (kBlock)
      return threadIdx.x;
    else
      return threadIdx.x & 31;
  }
  __device__ static int width() {
    if constexpr (kBlock)
      return blockDim.x;
    else
      return 32;
  }
  template <typename T>
  __device__ static T sum(T v, T* smem) {
    if constexpr (kBlock)
      return block_sum(v, smem);
    else
      return warp_sum(v);
  }
  __device__ static MaxSum maxsum(MaxSum v, float* smem) {
    if constexpr (kBlock)
      return block_maxsum(v, smem);
    else
      return warp_maxsum(v);
  }
};

struct RowLaunch {
  bool block;
  unsigned grid;
  int threads;
};
inline RowLaunch row_launch(int64_t rows, int64_t cols) {
  if (cols <= kWarpRowLimit) return {false, static_cast<unsigned>((rows + 7) / 8), 256};
  return {true, static_cast<unsigned>(rows), cols > 8192 ? 512 : 256};
}

// ---------------------------------------------------------------------------------------------------
// Column reductions over x [rows, cols]: blocks of 32 x 8 threads, blockIdx.x picks 32 columns and
// blockIdx.y a range of rows; each block writes partial[o][split][col] for each of the NOut sums, and a
// second kernel adds the splits (deterministic: no atomics). Load(r, c, acc) adds row r's terms to acc.

template <int NOut, typename Load>
__global__ void column_partial_kernel(Load load, int64_t rows, int64_t cols, int64_t rows_per_split, float* partial) {
  __shared__ float tile[NOut][8][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t r1 = r0 + rows_per_split < rows ? r0 + rows_per_split : rows;
  float acc[NOut];
#pragma unroll
  for (int o = 0; o < NOut; ++o) acc[o] = 0.f;
  if (c < cols) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) load(r, c, acc);
  }
#pragma unroll
  for (int o = 0; o < NOut; ++o) tile[o][threadIdx.y][threadIdx.x] = acc[o];
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
#pragma unroll
    for (int o = 0; o < NOut; ++o) {
      float s = 0.f;
#pragma unroll
      for (int y = 0; y < 8; ++y) s += tile[o][y][threadIdx.x];
      partial[(static_cast<int64_t>(o) * gridDim.y + blockIdx.y) * cols + c] = s;
    }
  }
}

// out_o[c] (+)= sum over splits of partial[o][split][c], for each o < NOut with a non-null out pointer.
template <int NOut>
__global__ void column_final_kernel(const float* partial, int splits, int64_t cols, float* out0, float* out1,
                                    bool accumulate) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
#pragma unroll
    for (int o = 0; o < NOut; ++o) {
      float* out = o == 0 ? out0 : out1;
      if (out == nullptr) continue;
      float s = 0.f;
      for (int k = 0; k < splits; ++k) s += partial[(static_cast<int64_t>(o) * splits + k) * cols + c];
      out[c] = accumulate ? out[c] + s : s;
    }
  }
}

// Splits so that the grid has about 1024 blocks, each with at least 32 rows.
inline int column_splits(int64_t rows, int64_t cols) {
  const int64_t col_blocks = (cols + 31) / 32;
  int64_t splits = (rows + 31) / 32;
  int64_t cap = 1024 / col_blocks;
  if (cap < 1) cap = 1;
  if (splits > cap) splits = cap;
  if (splits < 1) splits = 1;
  return static_cast<int>(splits);
}

template <int NOut, typename Load>
void launch_column_reduce(const char* name, Load load, int64_t rows, int64_t cols, float* partial, int splits,
                          float* out0, float* out1, bool accumulate) {
  const int64_t rows_per_split = (rows + splits - 1) / splits;
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(splits));
  column_partial_kernel<NOut, Load><<<grid, dim3(32, 8)>>>(load, rows, cols, rows_per_split, partial);
  LORA_CUDA_CHECK_LAUNCH(name);
  column_final_kernel<NOut><<<grid_for(cols, kThreads), kThreads>>>(partial, splits, cols, out0, out1, accumulate);
  LORA_CUDA_CHECK_LAUNCH(name);
}

// Records the first bad id/target of a launch into error[0..2] (see kernels.h).
__device__ __forceinline__ void record_error(unsigned long long* error, int64_t value, int64_t row) {
  if (atomicCAS(error, 0ull, 1ull) == 0ull) {
    error[1] = static_cast<unsigned long long>(value);
    error[2] = static_cast<unsigned long long>(row);
  }
}

}  // namespace lora::cuda
