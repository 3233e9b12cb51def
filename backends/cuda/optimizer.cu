// CUDA kernels of the optimizer steps (backends/kernels/optimizer.h): Adam(W) and SGD with momentum, in place
// on the parameter and its state, four elements per thread (float4 when every pointer is 16-byte aligned).
#include <cmath>

#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/kernels/optimizer.h"

namespace lora::cuda {
namespace {

// The scalars of one Adam(W) step, precomputed on the host from lora::AdamStep.
struct AdamScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float step_size;     // lr / (1 - beta1^t)
  float inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^t)
  float eps;
  float decay;  // 1 - lr * weight_decay when decoupled, else 1
  float l2;     // weight_decay when not decoupled, else 0
};

struct SgdScalars {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, first_step;
};

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
}  // namespace lora::cuda

namespace lora {

// ---------------------------------------------------------------------------------------------------
// Adam / AdamW (the formulas of lora::AdamStep)

void kernels::AdamUpdate::cuda(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                               const AdamStep& hp) {
  using namespace lora::cuda;
  const char* k = name;
  activate(k, {&param, &grad, &exp_avg, &exp_avg_sq});
  check_same_shape(k, param, "param", grad, "grad");
  check_same_shape(k, param, "param", exp_avg, "exp_avg");
  check_same_shape(k, param, "param", exp_avg_sq, "exp_avg_sq");
  LORA_CHECK(hp.step >= 1, "cuda adam_step: step {} must count from 1", hp.step);
  const double bc1 = 1.0 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, static_cast<double>(hp.step));
  AdamScalars s;
  s.beta1 = static_cast<float>(hp.beta1);
  s.beta2 = static_cast<float>(hp.beta2);
  s.one_minus_beta1 = static_cast<float>(1.0 - hp.beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - hp.beta2);
  s.step_size = static_cast<float>(hp.lr / bc1);
  s.inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(bc2));
  s.eps = static_cast<float>(hp.eps);
  s.decay = static_cast<float>(hp.decoupled ? 1.0 - hp.lr * hp.weight_decay : 1.0);
  s.l2 = static_cast<float>(hp.decoupled ? 0.0 : hp.weight_decay);
  launch_update(k, f32(k, param, "param"), f32(k, grad, "grad"), f32(k, exp_avg, "exp_avg"),
                f32(k, exp_avg_sq, "exp_avg_sq"), param.numel(), AdamFn{s});
}

// ---------------------------------------------------------------------------------------------------
// SGD (the formulas of lora::SgdStep)

void kernels::SgdUpdate::cuda(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp) {
  using namespace lora::cuda;
  const char* k = name;
  const bool momentum = hp.momentum != 0.0;
  activate(k, {&param, &grad, momentum ? &momentum_buffer : nullptr});
  check_same_shape(k, param, "param", grad, "grad");
  if (momentum) {
    LORA_CHECK(momentum_buffer.defined(), "cuda sgd_step: momentum {} needs a momentum buffer", hp.momentum);
    check_same_shape(k, param, "param", momentum_buffer, "momentum_buffer");
  }
  SgdScalars s;
  s.lr = static_cast<float>(hp.lr);
  s.momentum = static_cast<float>(hp.momentum);
  s.one_minus_dampening = static_cast<float>(1.0 - hp.dampening);
  s.weight_decay = static_cast<float>(hp.weight_decay);
  s.nesterov = hp.nesterov;
  s.first_step = hp.first_step;
  float* buffer = momentum ? f32(k, momentum_buffer, "momentum_buffer") : nullptr;
  launch_update(k, f32(k, param, "param"), f32(k, grad, "grad"), buffer, nullptr, param.numel(),
                SgdFn{s, buffer != nullptr});
}

}  // namespace lora
