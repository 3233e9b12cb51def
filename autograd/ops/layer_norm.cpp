// layer_norm over the last axis: forward (one fused kernel, saving per-row mean and rstd) and backward.
#include "backends/kernels/layer_norm.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(layer_norm_op, "layer_norm");
}  // namespace

// y = (x - mean) * rstd * weight + bias over rows of x [..., C]; weight, bias [C].
//
// What each gradient needs:   grad_x: x, mean, rstd, weight   grad_weight: x, mean, rstd   grad_bias: nothing
// So with a frozen affine (the LoRA case) x and its statistics are saved for grad_x alone, and when only the
// bias trains (BitFit) nothing at all is saved: grad_bias is the column sum of grad_y.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  constexpr const char* op = "layer_norm";
  detail::check_floating(x, op, "x");
  detail::check_floating(weight, op, "weight");
  detail::check_floating(bias, op, "bias");
  detail::check_same_device_dtype(x, weight, op);
  detail::check_same_device_dtype(x, bias, op);
  LORA_CHECK(x.rank() >= 1 && x.size(-1) > 0, "layer_norm: x has shape {}, expected [..., C] with C > 0",
             x.shape().str());
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  LORA_CHECK(weight.shape() == Shape({cols}), "layer_norm: weight has shape {}, expected [{}] for x {}",
             weight.shape().str(), cols, x.shape().str());
  LORA_CHECK(bias.shape() == Shape({cols}), "layer_norm: bias has shape {}, expected [{}] for x {}", bias.shape().str(),
             cols, x.shape().str());
  LORA_CHECK(eps >= 0.0, "layer_norm: eps = {} must be non-negative", eps);

  Tensor y = detail::empty_like(x);  // [..., C]
  // mean and rstd [N]; without gradients nothing keeps them, so they share one allocation.
  Tensor mean, rstd;
  if (GradMode::is_enabled()) {
    mean = detail::empty_like(x, {rows});
    rstd = detail::empty_like(x, {rows});
  } else {
    const Tensor stats = detail::empty_like(x, {2, rows});
    mean = stats.narrow_rows(0, 1).view({rows});
    rstd = stats.narrow_rows(1, 1).view({rows});
  }
  Tensor x2 = x.view({rows, cols}), y2 = y.view({rows, cols});
  kernels::run<kernels::LayerNormForward>(x.device(), x2, weight, bias, eps, y2, mean, rstd);

  if (OpRecord rec(layer_norm_op(), {x, weight, bias}); rec) {
    const bool need_stats = rec.needs_grad(0) || rec.needs_grad(1);
    // The weight is a parameter: holding it costs no memory. The kernel interface reads it when it writes
    // grad_x, and takes it as an argument in any case.
    Tensor x_saved = need_stats ? rec.save(x2) : Tensor();       // [N, C]
    Tensor mean_saved = need_stats ? rec.save(mean) : Tensor();  // [N]
    Tensor rstd_saved = need_stats ? rec.save(rstd) : Tensor();  // [N]
    Tensor w_saved = need_stats ? rec.save(weight) : Tensor();   // [C]
    rec.finish(y, [=](const Tensor& grad_y, GradSink& g) {
      Tensor gy2 = grad_y.view({rows, cols});
      Tensor grad_x, grad_w, grad_b;
      if (g.needs_grad(0)) grad_x = detail::empty_like(grad_y);
      if (g.needs_grad(1)) grad_w = detail::zeros_like(grad_y, {cols});
      if (g.needs_grad(2)) grad_b = detail::zeros_like(grad_y, {cols});
      if (need_stats) {
        Tensor gx2 = grad_x.defined() ? grad_x.view({rows, cols}) : Tensor();
        kernels::run<kernels::LayerNormBackward>(grad_y.device(), gy2, x_saved, w_saved, mean_saved, rstd_saved, gx2,
                                                 grad_w, grad_b);
      } else {
        grad_b = detail::reduce_to_shape(gy2, {cols});  // only the bias trains: sum over rows
      }
      if (grad_x.defined()) g.set(0, grad_x);
      if (grad_w.defined()) g.set(1, grad_w);
      if (grad_b.defined()) g.set(2, grad_b);
    });
  }
  return y;
}

}  // namespace lora::ops
