// Elementwise kernels: fill, unary and its backward, binary (contiguous and strided/broadcast), gather
// (permute, expand), dropout, and the fused Adam and SGD steps. Contiguous kernels handle four elements
// per thread with float4 loads when every pointer is 16-byte aligned, scalar loads otherwise.
#include "backends/cuda/common.cuh"
#include "backends/cuda/elementwise_formulas.cuh"
#include "backends/cuda/kernels.h"
#include "core/random.h"

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

// ---------------------------------------------------------------------------------------------------
// map: out[i] = f(a[i], b[i], c[i], i) over contiguous arrays; a null input reads as 0.

template <typename F>
__global__ void map_kernel(const float* a, const float* b, const float* c, float* out, int64_t n, F f, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * 4;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4; base < n; base += stride) {
    if (vec && base + 4 <= n) {
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 va = a ? *reinterpret_cast<const float4*>(a + base) : zero;
      const float4 vb = b ? *reinterpret_cast<const float4*>(b + base) : zero;
      const float4 vc = c ? *reinterpret_cast<const float4*>(c + base) : zero;
      float4 r;
      r.x = f(va.x, vb.x, vc.x, base);
      r.y = f(va.y, vb.y, vc.y, base + 1);
      r.z = f(va.z, vb.z, vc.z, base + 2);
      r.w = f(va.w, vb.w, vc.w, base + 3);
      *reinterpret_cast<float4*>(out + base) = r;
    } else {
      for (int64_t i = base; i < base + 4 && i < n; ++i)
        out[i] = f(a ? a[i] : 0.f, b ? b[i] : 0.f, c ? c[i] : 0.f, i);
    }
  }
}

template <typename F>
void launch_map(const char* name, const float* a, const float* b, const float* c, float* out, int64_t n, F f) {
  if (n <= 0) return;
  const bool vec = (!a || aligned16(a)) && (!b || aligned16(b)) && (!c || aligned16(c)) && aligned16(out);
  map_kernel<F><<<grid_for(n, kThreads * 4), kThreads>>>(a, b, c, out, n, f, vec);
  LORA_CUDA_CHECK_LAUNCH(name);
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
  __device__ float operator()(float saved, float g, float, int64_t) const { return Unary<Op>::backward(saved, g, alpha); }
};

template <BinaryOp Op>
struct BinaryFn {
  __device__ float operator()(float a, float b, float, int64_t) const { return Binary<Op>::apply(a, b); }
};

// The draw is compared with p in single precision, exactly as the CPU backend does (identical masks).
struct DropoutFn {
  uint64_t seed;
  float threshold;
  float scale;
  __device__ float operator()(float x, float, float, int64_t i) const {
    return counter_uniform(seed, static_cast<uint64_t>(i)) >= threshold ? x * scale : 0.f;
  }
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
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<I>(gridDim.x) * blockDim.x) {
    I oa, ob;
    strided_offsets<I>(idx, i, oa, ob);
    out[i] = Binary<Op>::apply(a[oa], b[ob]);
  }
}

template <typename T, typename I>
__global__ void gather_kernel(const T* x, T* out, I n, StridedIndex idx) {
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<I>(gridDim.x) * blockDim.x) {
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
    gather_kernel<T, uint32_t><<<grid, kThreads>>>(static_cast<const T*>(x), static_cast<T*>(out),
                                                   static_cast<uint32_t>(n), idx);
  } else {
    gather_kernel<T, int64_t><<<grid, kThreads>>>(static_cast<const T*>(x), static_cast<T*>(out), n, idx);
  }
  LORA_CUDA_CHECK_LAUNCH("gather");
}

// ---------------------------------------------------------------------------------------------------
// Optimizer steps: in place on param and state, four elements per thread (float4 when aligned).

struct AdamFn {
  AdamScalars s;
  __device__ void operator()(float& p, float g, float& m, float& v) const {
    g += s.l2 * p;
    m = s.beta1 * m + s.one_minus_beta1 * g;
    v = s.beta2 * v + s.one_minus_beta2 * g * g;
    p = p * s.decay - s.step_size * m / (sqrtf(v) * s.inv_bc2_sqrt + s.eps);
  }
};

// `has_buf` false: no momentum (s1 unused).
struct SgdFn {
  SgdScalars s;
  bool has_buf;
  __device__ void operator()(float& p, float g, float& buf, float&) const {
    g += s.weight_decay * p;
    if (has_buf) {
      buf = s.first_step ? g : s.momentum * buf + s.one_minus_dampening * g;
      g = s.nesterov ? g + s.momentum * buf : buf;
    }
    p -= s.lr * g;
  }
};

// f(p, g, s1, s2) on each element; s1/s2 may be null (then a dummy register is passed).
template <typename F>
__global__ void update_kernel(float* p, const float* g, float* s1, float* s2, int64_t n, F f, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * 4;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4; base < n; base += stride) {
    if (vec && base + 4 <= n) {
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      float4 vp = *reinterpret_cast<float4*>(p + base);
      const float4 vg = *reinterpret_cast<const float4*>(g + base);
      float4 v1 = s1 ? *reinterpret_cast<float4*>(s1 + base) : zero;
      float4 v2 = s2 ? *reinterpret_cast<float4*>(s2 + base) : zero;
      f(vp.x, vg.x, v1.x, v2.x);
      f(vp.y, vg.y, v1.y, v2.y);
      f(vp.z, vg.z, v1.z, v2.z);
      f(vp.w, vg.w, v1.w, v2.w);
      *reinterpret_cast<float4*>(p + base) = vp;
      if (s1) *reinterpret_cast<float4*>(s1 + base) = v1;
      if (s2) *reinterpret_cast<float4*>(s2 + base) = v2;
    } else {
      for (int64_t i = base; i < base + 4 && i < n; ++i) {
        float vp = p[i];
        float v1 = s1 ? s1[i] : 0.f;
        float v2 = s2 ? s2[i] : 0.f;
        f(vp, g[i], v1, v2);
        p[i] = vp;
        if (s1) s1[i] = v1;
        if (s2) s2[i] = v2;
      }
    }
  }
}

template <typename F>
void launch_update(const char* name, float* p, const float* g, float* s1, float* s2, int64_t n, F f) {
  if (n <= 0) return;
  const bool vec = aligned16(p) && aligned16(g) && (!s1 || aligned16(s1)) && (!s2 || aligned16(s2));
  update_kernel<F><<<grid_for(n, kThreads * 4), kThreads>>>(p, g, s1, s2, n, f, vec);
  LORA_CUDA_CHECK_LAUNCH(name);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Launchers

void fill_f32(float* out, int64_t n, float value) { launch_fill(out, n, value); }
void fill_i32(int32_t* out, int64_t n, int32_t value) { launch_fill(out, n, value); }
void fill_i64(int64_t* out, int64_t n, int64_t value) { launch_fill(out, n, value); }

void unary_f32(UnaryOp op, const float* x, float* y, int64_t n, float alpha) {
  visit_unary(op, [&]<UnaryOp Op>() { launch_map(unary_info(Op).name, x, nullptr, nullptr, y, n, UnaryForwardFn<Op>{alpha}); });
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
    if (small) binary_strided_kernel<Op, uint32_t><<<grid, kThreads>>>(a, b, out, static_cast<uint32_t>(n), idx);
    else binary_strided_kernel<Op, int64_t><<<grid, kThreads>>>(a, b, out, n, idx);
  });
  LORA_CUDA_CHECK_LAUNCH("binary_broadcast");
}

void gather(const void* x, void* out, int64_t n, int elem_size, const StridedIndex& idx) {
  if (n <= 0) return;
  switch (elem_size) {
    case 2: launch_gather<uint16_t>(x, out, n, idx); break;
    case 4: launch_gather<uint32_t>(x, out, n, idx); break;
    case 8: launch_gather<uint64_t>(x, out, n, idx); break;
    default: throw_cuda_error("gather", __FILE__, __LINE__, "unsupported element size");
  }
}

void dropout_f32(const float* x, float* y, int64_t n, double p, uint64_t seed) {
  launch_map("dropout", x, nullptr, nullptr, y, n, DropoutFn{seed, static_cast<float>(p), static_cast<float>(1.0 / (1.0 - p))});
}

void adam_step_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamScalars& s) {
  launch_update("adam_step", param, grad, exp_avg, exp_avg_sq, n, AdamFn{s});
}

void sgd_step_f32(float* param, const float* grad, float* momentum_buffer, int64_t n, const SgdScalars& s) {
  launch_update("sgd_step", param, grad, momentum_buffer, nullptr, n, SgdFn{s, momentum_buffer != nullptr});
}

}  // namespace lora::cuda
