// rope: the rotary position embedding (rotate-half convention of Hugging Face Llama and GPT-NeoX), forward
// and backward. The rotation is orthogonal, so backward is the inverse rotation of the gradient: the same
// kernel with -sin. Nothing is saved but cos and sin.
#include "backends/kernels/rope.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(rope_op, "rope");
}  // namespace

// x [B, T, H, D] (D even), cos, sin [T, D/2] for the positions of x (constants: no gradient). For i < D/2:
//   y[.., t, .., i]       = x[i] cos[t, i] - x[i + D/2] sin[t, i]
//   y[.., t, .., i + D/2] = x[i + D/2] cos[t, i] + x[i] sin[t, i]
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  constexpr const char* op = "rope";
  detail::check_floating(x, op, "x");
  detail::check_floating(cos, op, "cos");
  detail::check_floating(sin, op, "sin");
  detail::check_same_device_dtype(x, cos, op);
  detail::check_same_device_dtype(x, sin, op);
  LORA_CHECK(x.rank() == 4 && x.size(3) > 0 && x.size(3) % 2 == 0,
             "rope: x has shape {}, expected [B, T, H, D] with D even", x.shape().str());
  const int64_t T = x.size(1), half = x.size(3) / 2;
  LORA_CHECK(cos.shape() == Shape({T, half}) && sin.shape() == Shape({T, half}),
             "rope: cos {} and sin {} must be [T, D/2] = [{}, {}] for x {}", cos.shape().str(), sin.shape().str(), T,
             half, x.shape().str());
  LORA_CHECK(!cos.requires_grad() && !sin.requires_grad(),
             "rope: cos and sin are constants, but {} requires a gradient", cos.requires_grad() ? "cos" : "sin");

  Tensor y = detail::empty_like(x);
  kernels::run<kernels::Rope>(x.device(), x, cos, sin, /*inverse=*/false, y);
  if (OpRecord rec(rope_op(), {x}); rec) {
    Tensor cos_saved = rec.save(cos), sin_saved = rec.save(sin);
    rec.finish(y, [cos_saved, sin_saved](const Tensor& grad_y, GradSink& g) {
      Tensor grad_x = detail::empty_like(grad_y);  // the inverse rotation of grad_y
      kernels::run<kernels::Rope>(grad_y.device(), grad_y, cos_saved, sin_saved, /*inverse=*/true, grad_x);
      g.set(0, grad_x);
    });
  }
  return y;
}

}  // namespace lora::ops
