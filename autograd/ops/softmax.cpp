// softmax and log_softmax over the last axis: forward and backward. Each saves only its output y.
#include "backends/kernels/softmax.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {

LORA_REGISTER_OP(softmax_op, "softmax");
LORA_REGISTER_OP(log_softmax_op, "log_softmax");

void check_input(const Tensor& x, const char* op) {
  detail::check_floating(x, op, "x");
  LORA_CHECK(x.rank() >= 1, "{}: x has shape {}, expected at least one dimension (the softmax axis)", op,
             x.shape().str());
}
}  // namespace

// ---------------------------------------------------------------------------------------------------
// y = exp(x) / sum(exp(x));  grad_x = y * (grad_y - sum(grad_y * y))

Tensor softmax(const Tensor& x) {
  check_input(x, "softmax");
  Tensor y = detail::empty_like(x);  // [..., C]
  kernels::run<kernels::SoftmaxForward>(x.device(), x, y, /*log=*/false);
  if (OpRecord rec(softmax_op(), {x}); rec) {
    Tensor y_saved = rec.save(y);
    rec.finish(y, [y_saved](const Tensor& grad_y, GradSink& g) {
      Tensor grad_x = detail::empty_like(grad_y);
      kernels::run<kernels::SoftmaxBackward>(grad_y.device(), y_saved, grad_y, grad_x, /*log=*/false);
      g.set(0, grad_x);
    });
  }
  return y;
}

// ---------------------------------------------------------------------------------------------------
// y = x - logsumexp(x);  grad_x = grad_y - exp(y) * sum(grad_y)

Tensor log_softmax(const Tensor& x) {
  check_input(x, "log_softmax");
  Tensor y = detail::empty_like(x);  // [..., C]
  kernels::run<kernels::SoftmaxForward>(x.device(), x, y, /*log=*/true);
  if (OpRecord rec(log_softmax_op(), {x}); rec) {
    Tensor y_saved = rec.save(y);
    rec.finish(y, [y_saved](const Tensor& grad_y, GradSink& g) {
      Tensor grad_x = detail::empty_like(grad_y);
      kernels::run<kernels::SoftmaxBackward>(grad_y.device(), y_saved, grad_y, grad_x, /*log=*/true);
      g.set(0, grad_x);
    });
  }
  return y;
}

}  // namespace lora::ops
