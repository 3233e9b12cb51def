// Elementwise kernels: fill, the table's unary ops and their derivatives, binary ops (contiguous and
// strided/broadcast), gather (permute, expand). Contiguous kernels run through map_kernel (map.cuh).
#include "backends/cuda/common.cuh"
#include "backends/cuda/elementwise_formulas.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/map.cuh"

namespace lora::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// fill

template <typename T>
__global__ void fill_kernel(T* out, int64_t n, T value) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = value;
}

template <typename T>
void launch_fill(T* out, int64_t n, T value) {
  if (n <= 0) return;
  fill_kernel<T><<<grid_for(n, kThreads), kThreads>>>(out, n, value);
  LORA_CUDA_CHECK_LAUNCH("fill");
}

// The formula of one table entry as a map functor (map_kernel passes a, b, c, i).
template <UnaryOp Op>
struct UnaryForwardFn {
  float alpha;
  __device__ float operator()(float x, float, float, int64_t) const { return Unary<Op>::forward(x, alpha); }
};

// a = what the derivative reads (x, y or nothing: 0), b = grad_y.
template <UnaryOp Op>
struct UnaryBackwardFn {
  float alpha;
  __device__ float operator()(float saved, float g, float, int64_t) const {
    return Unary<Op>::backward(saved, g, alpha);
  }
};

template <BinaryOp Op>
struct BinaryFn {
  __device__ float operator()(float a, float b, float, int64_t) const { return Binary<Op>::apply(a, b); }
};

// ---------------------------------------------------------------------------------------------------
// Strided reads (broadcast binary, gather). I is uint32_t when every index and offset fits, else int64_t.

template <typename I>
__device__ __forceinline__ void strided_offsets(const StridedIndex& idx, I i, I& oa, I& ob) {
  I rem = i;
  oa = 0;
  ob = 0;
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; --d) {
    if (d < idx.rank) {
      const I size = static_cast<I>(idx.dims[d]);
      const I coord = rem % size;
      rem /= size;
      oa += coord * static_cast<I>(idx.stride_a[d]);
      ob += coord * static_cast<I>(idx.stride_b[d]);
    }
  }
}

template <BinaryOp Op, typename I>
__global__ void binary_strided_kernel(const float* a, const float* b, float* out, I n, StridedIndex idx) {
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    I oa, ob;
    strided_offsets<I>(idx, i, oa, ob);
    out[i] = Binary<Op>::apply(a[oa], b[ob]);
  }
}

template <typename T, typename I>
__global__ void gather_kernel(const T* x, T* out, I n, StridedIndex idx) {
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    I oa, ob;
    strided_offsets<I>(idx, i, oa, ob);
    out[i] = x[oa];
  }
}

// 32-bit indexing is safe when the element count and every reachable offset stay below 2^31 (so that
// i + grid stride cannot wrap either).
bool fits_32bit(int64_t n, const StridedIndex& idx) {
  constexpr int64_t kLimit = int64_t(1) << 31;
  if (n >= kLimit) return false;
  int64_t max_a = 0, max_b = 0;
  for (int d = 0; d < idx.rank; ++d) {
    max_a += (idx.dims[d] - 1) * idx.stride_a[d];
    max_b += (idx.dims[d] - 1) * idx.stride_b[d];
  }
  return max_a < kLimit && max_b < kLimit;
}

template <typename T>
void launch_gather(const void* x, void* out, int64_t n, const StridedIndex& idx) {
  const unsigned grid = grid_for(n, kThreads);
  if (fits_32bit(n, idx)) {
    gather_kernel<T, uint32_t>
        <<<grid, kThreads>>>(static_cast<const T*>(x), static_cast<T*>(out), static_cast<uint32_t>(n), idx);
  } else {
    gather_kernel<T, int64_t><<<grid, kThreads>>>(static_cast<const T*>(x), static_cast<T*>(out), n, idx);
  }
  LORA_CUDA_CHECK_LAUNCH("gather");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Launchers

void fill_f32(float* out, int64_t n, float value) {
  launch_fill(out, n, value);
}
void fill_i32(int32_t* out, int64_t n, int32_t value) {
  launch_fill(out, n, value);
}
void fill_i64(int64_t* out, int64_t n, int64_t value) {
  launch_fill(out, n, value);
}

void unary_f32(UnaryOp op, const float* x, float* y, int64_t n, float alpha) {
  visit_unary(
      op, [&]<UnaryOp Op>() { launch_map(unary_info(Op).name, x, nullptr, nullptr, y, n, UnaryForwardFn<Op>{alpha}); });
}

void unary_backward_f32(UnaryOp op, const float* saved, const float* gy, float* gx, int64_t n, float alpha) {
  visit_unary(op, [&]<UnaryOp Op>() {
    launch_map(unary_info(Op).name, saved, gy, nullptr, gx, n, UnaryBackwardFn<Op>{alpha});
  });
}

void binary_f32(BinaryOp op, const float* a, const float* b, float* out, int64_t n) {
  visit_binary(op, [&]<BinaryOp Op>() { launch_map(binary_info(Op).name, a, b, nullptr, out, n, BinaryFn<Op>{}); });
}

void binary_strided_f32(BinaryOp op, const float* a, const float* b, float* out, int64_t n, const StridedIndex& idx) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, kThreads);
  const bool small = fits_32bit(n, idx);
  visit_binary(op, [&]<BinaryOp Op>() {
    if (small)
      binary_strided_kernel<Op, uint32_t><<<grid, kThreads>>>(a, b, out, static_cast<uint32_t>(n), idx);
    else
      binary_strided_kernel<Op, int64_t><<<grid, kThreads>>>(a, b, out, n, idx);
  });
  LORA_CUDA_CHECK_LAUNCH("binary_broadcast");
}

void gather(const void* x, void* out, int64_t n, int elem_size, const StridedIndex& idx) {
  if (n <= 0) return;
  switch (elem_size) {
    case 2:
      launch_gather<uint16_t>(x, out, n, idx);
      break;
    case 4:
      launch_gather<uint32_t>(x, out, n, idx);
      break;
    case 8:
      launch_gather<uint64_t>(x, out, n, idx);
      break;
    default:
      throw_cuda_error("gather", __FILE__, __LINE__, "unsupported element size");
  }
}

}  // namespace lora::cuda
