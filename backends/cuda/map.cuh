// map_kernel: out[i] = f(a[i], b[i], c[i], i) over contiguous float arrays (a null input reads as 0), four
// elements per thread with float4 loads when every pointer is 16-byte aligned, scalar loads otherwise. The
// elementwise table's kernels and dropout run through it.
#pragma once

#include "backends/cuda/common.cuh"

namespace lora::cuda {

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
      for (int64_t i = base; i < base + 4 && i < n; ++i) out[i] = f(a ? a[i] : 0.f, b ? b[i] : 0.f, c ? c[i] : 0.f, i);
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

}  // namespace lora::cuda
