// rms_norm over the last axis (Llama's RMSNorm): forward (one fused kernel, saving the per-row rstd) and
// backward.
#include "backends/kernels/rms_norm.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(rms_norm_op, "rms_norm");
}  // namespace

// y = x * rsqrt(mean(x^2 over the last axis) + eps) * weight over rows of x [..., C]; weight [C]. As Hugging
// Face's LlamaRMSNorm, in the dtype of x (float32 for training, float64 for the gradient checks).
//
// What each gradient needs:   grad_x: x, rstd, weight   grad_weight: x, rstd
// So x and its rstd are kept whenever anything trains, and the weight (a parameter: no extra memory) only for
// grad_x.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  constexpr const char* op = "rms_norm";
  detail::check_floating(x, op, "x");
  detail::check_floating(weight, op, "weight");
  detail::check_same_device_dtype(x, weight, op);
  LORA_CHECK(x.rank() >= 1 && x.size(-1) > 0, "rms_norm: x has shape {}, expected [..., C] with C > 0",
             x.shape().str());
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  LORA_CHECK(weight.shape() == Shape({cols}), "rms_norm: weight has shape {}, expected [{}] for x {}",
             weight.shape().str(), cols, x.shape().str());
  LORA_CHECK(eps >= 0.0, "rms_norm: eps = {} must be non-negative", eps);

  Tensor y = detail::empty_like(x);             // [..., C]
  Tensor rstd = detail::empty_like(x, {rows});  // [N]
  Tensor x2 = x.view({rows, cols}), y2 = y.view({rows, cols});
  kernels::run<kernels::RmsNormForward>(x.device(), x2, weight, eps, y2, rstd);

  if (OpRecord rec(rms_norm_op(), {x, weight}); rec) {
    Tensor x_saved = rec.save(x2);                                     // [N, C]
    Tensor rstd_saved = rec.save(rstd);                                // [N]
    Tensor w_saved = rec.needs_grad(0) ? rec.save(weight) : Tensor();  // [C]
    rec.finish(y, [=](const Tensor& grad_y, GradSink& g) {
      Tensor grad_x, grad_w;
      if (g.needs_grad(0)) grad_x = detail::empty_like(grad_y);
      if (g.needs_grad(1)) grad_w = detail::zeros_like(grad_y, {cols});
      Tensor gx2 = grad_x.defined() ? grad_x.view({rows, cols}) : Tensor();
      kernels::run<kernels::RmsNormBackward>(grad_y.device(), grad_y.view({rows, cols}), x_saved, w_saved, rstd_saved,
                                             gx2, grad_w);
      if (grad_x.defined()) g.set(0, grad_x);
      if (grad_w.defined()) g.set(1, grad_w);
    });
  }
  return y;
}

}  // namespace lora::ops
