// CUDA kernel of dropout (backends/kernels/dropout.h): element i is kept when counter_uniform(seed, i) >= p,
// scaled by 1 / (1 - p); backward applies the same mask to the gradient (regenerated from the seed).
#include "backends/cuda/checks.h"
#include "backends/cuda/map.cuh"
#include "backends/kernels/dropout.h"
#include "core/random.h"

namespace lora::cuda {
namespace {

// The draw is compared with p in single precision, exactly as the CPU backend does (identical masks).
struct DropoutFn {
  uint64_t seed;
  float threshold;
  float scale;
  __device__ float operator()(float x, float, float, int64_t i) const {
    return counter_uniform(seed, static_cast<uint64_t>(i)) >= threshold ? x * scale : 0.f;
  }
};

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::DropoutMask::cuda(const Tensor& x, Tensor& y, double p, uint64_t seed) {
  using namespace lora::cuda;
  activate(name, {&x, &y});
  check_same_shape(name, x, "x", y, "y");
  LORA_CHECK(p >= 0.0 && p < 1.0, "cuda {}: p = {} must be in [0, 1)", name, p);
  launch_map(name, f32(name, x, "x"), nullptr, nullptr, f32(name, y, "y"), x.numel(),
             DropoutFn{seed, static_cast<float>(p), static_cast<float>(1.0 / (1.0 - p))});
}

}  // namespace lora
