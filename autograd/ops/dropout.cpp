// dropout: zero each element with probability p and scale the rest by 1 / (1 - p); backward regenerates the mask.
#include "backends/kernels/dropout.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(dropout_op, "dropout");
}  // namespace

// Element i is kept when counter_uniform(seed, i) >= p. Outside training, or with p == 0, dropout is the
// identity: x itself comes back and nothing is recorded. Backward saves nothing: the mask is a function of
// (seed, i), so grad_x = grad_y * mask / (1 - p) is recomputed from the seed.
Tensor dropout(const Tensor& x, double p, bool training, uint64_t seed) {
  detail::check_floating(x, "dropout", "x");
  LORA_CHECK(p >= 0.0 && p < 1.0, "dropout: p = {} must be in [0, 1)", p);
  if (!training || p == 0.0) return x;

  Tensor y = detail::empty_like(x);
  kernels::run<kernels::DropoutMask>(x.device(), x, y, p, seed);
  if (OpRecord rec(dropout_op(), {x}); rec) {
    rec.finish(y, [p, seed](const Tensor& grad_y, GradSink& g) {
      Tensor grad_x = detail::empty_like(grad_y);
      kernels::run<kernels::DropoutMask>(grad_y.device(), grad_y, grad_x, p, seed);  // the same mask
      g.set(0, grad_x);
    });
  }
  return y;
}

}  // namespace lora::ops
