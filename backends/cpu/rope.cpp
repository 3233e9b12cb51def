// CPU kernel of the rotary position embedding (backends/kernels/rope.h): one (b, t) row of H heads at a time.
#include "backends/kernels/rope.h"
#include "backends/cpu/dispatch.h"

namespace lora {
namespace {
constexpr int64_t kMinParallelElements = 1 << 15;  // below this a loop runs on one thread
}  // namespace

void kernels::Rope::cpu(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& y) {
  LORA_CHECK(x.rank() == 4 && x.size(3) % 2 == 0, "{}: x has shape {}, expected [B, T, H, D] with D even", name,
             x.shape().str());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  LORA_CHECK(cos.shape() == Shape({T, half}) && sin.shape() == Shape({T, half}),
             "{}: cos {} and sin {} must be [T, D/2] = [{}, {}] for x {}", name, cos.shape().str(), sin.shape().str(),
             T, half, x.shape().str());
  LORA_CHECK(y.shape() == x.shape(), "{}: y has shape {}, expected {}", name, y.shape().str(), x.shape().str());
  const int64_t rows = B * T;
  dispatch_floating(x.dtype(), name, [&]<typename F>() {
    const F* xp = x.data<F>();    // [B, T, H, D]
    const F* cp = cos.data<F>();  // [T, D/2]
    const F* sp = sin.data<F>();  // [T, D/2]
    F* yp = y.data<F>();          // [B, T, H, D]
    const F sign = inverse ? F(-1) : F(1);
#pragma omp parallel for schedule(static) if (x.numel() >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = r % T;
      const F* c = cp + t * half;
      const F* s = sp + t * half;
      for (int64_t h = 0; h < H; ++h) {
        const F* x1 = xp + (r * H + h) * D;
        const F* x2 = x1 + half;
        F* y1 = yp + (r * H + h) * D;
        F* y2 = y1 + half;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const F a = x1[i], b = x2[i], si = sign * s[i];  // both halves read before either is written
          y1[i] = a * c[i] - b * si;
          y2[i] = b * c[i] + a * si;
        }
      }
    }
  });
}

}  // namespace lora
