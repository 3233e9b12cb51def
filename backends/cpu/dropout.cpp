// CPU kernel of dropout (backends/kernels/dropout.h): element i is kept when counter_uniform(seed, i) >= p, and
// backward applies the same mask to the gradient.
#include "backends/kernels/dropout.h"
#include "backends/cpu/dispatch.h"
#include "core/random.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 15;  // below this a loop runs on one thread

// out[i] = keep(i) ? in[i] / (1 - p) : 0. The uniform draw is compared with p in single precision, which is
// what a float32 GPU kernel does, so that every backend keeps exactly the same elements.
void apply_mask(const char* kernel, const Tensor& in, Tensor& out, double p, uint64_t seed) {
  LORA_CHECK(p >= 0.0 && p < 1.0, "{}: p = {} must be in [0, 1)", kernel, p);
  LORA_CHECK(in.shape() == out.shape() && in.dtype() == out.dtype(), "{}: out {} {} must match the input {} {}", kernel,
             out.shape().str(), dtype_name(out.dtype()), in.shape().str(), dtype_name(in.dtype()));
  const int64_t n = in.numel();
  const float threshold = static_cast<float>(p);
  dispatch_floating(in.dtype(), kernel, [&]<typename T>() {
    const T* x = in.data<T>();
    T* y = out.data<T>();
    const T scale = static_cast<T>(1.0 / (1.0 - p));
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallelElements)
    for (int64_t i = 0; i < n; ++i) {
      y[i] = counter_uniform(seed, static_cast<uint64_t>(i)) >= threshold ? x[i] * scale : T(0);
    }
  });
}

}  // namespace

void kernels::DropoutMask::cpu(const Tensor& x, Tensor& y, double p, uint64_t seed) {
  apply_mask("dropout", x, y, p, seed);
}

}  // namespace lora
