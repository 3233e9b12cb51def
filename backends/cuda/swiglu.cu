// CUDA kernels of SwiGLU's gating (backends/kernels/swiglu.h): one thread per element, through the elementwise
// table's Silu formulas (backends/cuda/elementwise_formulas.cuh), as the CPU kernels use the CPU's.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/elementwise_formulas.cuh"
#include "backends/kernels/swiglu.h"

namespace lora::cuda {
namespace {

using Silu = Unary<UnaryOp::Silu>;

__global__ void swiglu_forward_kernel(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = Silu::forward(gate[i], 0.f) * up[i];
  }
}

// grad_gate or grad_up may be null (not wanted); up is read only for grad_gate.
__global__ void swiglu_backward_kernel(const float* grad_y, const float* gate, const float* up, float* grad_gate,
                                       float* grad_up, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (grad_gate) grad_gate[i] = Silu::backward(gate[i], grad_y[i] * up[i], 0.f);
    if (grad_up) grad_up[i] = grad_y[i] * Silu::forward(gate[i], 0.f);
  }
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::SwigluForward::cuda(const Tensor& gate, const Tensor& up, Tensor& y) {
  using namespace lora::cuda;
  activate(name, {&gate, &up, &y});
  check_same_shape(name, gate, "gate", up, "up");
  check_same_shape(name, gate, "gate", y, "y");
  const float *pg = f32(name, gate, "gate"), *pu = f32(name, up, "up");
  float* py = f32(name, y, "y");
  const int64_t n = gate.numel();
  if (n == 0) return;
  swiglu_forward_kernel<<<grid_for(n, kThreads), kThreads>>>(pg, pu, py, n);
  LORA_CUDA_CHECK_LAUNCH(name);
}

void kernels::SwigluBackward::cuda(const Tensor& grad_y, const Tensor& gate, const Tensor& up, Tensor& grad_gate,
                                   Tensor& grad_up) {
  using namespace lora::cuda;
  const bool want_gate = grad_gate.defined(), want_up = grad_up.defined();
  if (!want_gate && !want_up) return;
  activate(name, {&grad_y, &gate, &up, &grad_gate, &grad_up});
  check_same_shape(name, grad_y, "grad_y", gate, "gate");
  if (want_gate) {
    LORA_CHECK(up.defined(), "cuda {}: grad_gate needs up", name);
    check_same_shape(name, gate, "gate", up, "up");
    check_same_shape(name, gate, "gate", grad_gate, "grad_gate");
  }
  if (want_up) check_same_shape(name, gate, "gate", grad_up, "grad_up");
  const int64_t n = gate.numel();
  if (n == 0) return;
  swiglu_backward_kernel<<<grid_for(n, kThreads), kThreads>>>(
      f32(name, grad_y, "grad_y"), f32(name, gate, "gate"), want_gate ? f32(name, up, "up") : nullptr,
      want_gate ? f32(name, grad_gate, "grad_gate") : nullptr, want_up ? f32(name, grad_up, "grad_up") : nullptr, n);
  LORA_CUDA_CHECK_LAUNCH(name);
}

}  // namespace lora
