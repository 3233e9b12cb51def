// swiglu(gate, up) = silu(gate) * up, the gating of the Llama family's MLP, in one kernel each way.
//
// Composed (ops::silu(gate) * up), the tape keeps gate for silu's derivative and both silu(gate) and up for the
// product's: three tensors of [B, T, intermediate] per layer. Fused, it keeps gate and up, and recomputes
// silu(gate) in the backward pass: a third less of the MLP's saved activations, one pass over memory fewer
// forward and two fewer backward. The values and gradients are the composed ones bit for bit (the kernels round
// in the same order), which tests/test_ops_llama.cpp checks.
#include "backends/kernels/swiglu.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(swiglu_op, "swiglu");
}  // namespace

// What each gradient needs:   grad_gate: gate, up   grad_up: gate
Tensor swiglu(const Tensor& gate, const Tensor& up) {
  constexpr const char* op = "swiglu";
  detail::check_floating(gate, op, "gate");
  detail::check_floating(up, op, "up");
  detail::check_same_device_dtype(gate, up, op);
  LORA_CHECK(gate.shape() == up.shape(), "swiglu: gate has shape {} and up {}; expected the same shape",
             gate.shape().str(), up.shape().str());
  Tensor y = detail::empty_like(gate);
  kernels::run<kernels::SwigluForward>(gate.device(), gate, up, y);

  if (OpRecord rec(swiglu_op(), {gate, up}); rec) {
    Tensor gate_saved = rec.save(gate);
    Tensor up_saved = rec.needs_grad(0) ? rec.save(up) : Tensor();
    rec.finish(y, [=](const Tensor& grad_y, GradSink& sink) {
      Tensor grad_gate = sink.needs_grad(0) ? detail::empty_like(grad_y) : Tensor();
      Tensor grad_up = sink.needs_grad(1) ? detail::empty_like(grad_y) : Tensor();
      kernels::run<kernels::SwigluBackward>(grad_y.device(), grad_y, gate_saved, up_saved, grad_gate, grad_up);
      if (grad_gate.defined()) sink.set(0, grad_gate);
      if (grad_up.defined()) sink.set(1, grad_up);
    });
  }
  return y;
}

}  // namespace lora::ops
