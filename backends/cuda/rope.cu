// CUDA kernel of the rotary position embedding (backends/kernels/rope.h): one thread per rotated pair
// (x[i], x[i + D/2]) of one head at one position.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/kernels/rope.h"

namespace lora::cuda {
namespace {

// x, y [B, T, H, D]; cos, sin [T, D/2]; pairs = B T H D/2. sign = -1 rotates backwards.
__global__ void rope_kernel(const float* x, const float* cos, const float* sin, float sign, float* y, int64_t pairs,
                            int64_t T, int64_t H, int64_t half) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = p % half, head = p / half;  // head: index over [B, T, H]
    const int64_t t = (head / H) % T;
    const float c = cos[t * half + i], s = sign * sin[t * half + i];
    const int64_t base = head * 2 * half;
    const float a = x[base + i], b = x[base + half + i];
    y[base + i] = a * c - b * s;
    y[base + half + i] = b * c + a * s;
  }
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::Rope::cuda(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& y) {
  using namespace lora::cuda;
  activate(name, {&x, &cos, &sin, &y});
  LORA_CHECK(x.rank() == 4 && x.size(3) % 2 == 0, "cuda {}: x has shape {}, expected [B, T, H, D] with D even", name,
             x.shape().str());
  const int64_t T = x.size(1), H = x.size(2), half = x.size(3) / 2;
  check_same_shape(name, x, "x", y, "y");
  LORA_CHECK(cos.shape() == Shape({T, half}) && sin.shape() == Shape({T, half}),
             "cuda {}: cos {} and sin {} must be [T, D/2] = [{}, {}] for x {}", name, cos.shape().str(),
             sin.shape().str(), T, half, x.shape().str());
  const float *px = f32(name, x, "x"), *pc = f32(name, cos, "cos"), *ps = f32(name, sin, "sin");
  float* py = f32(name, y, "y");
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  rope_kernel<<<grid_for(pairs, kThreads), kThreads>>>(px, pc, ps, inverse ? -1.f : 1.f, py, pairs, T, H, half);
  LORA_CUDA_CHECK_LAUNCH(name);
}

}  // namespace lora
