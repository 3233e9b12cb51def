// Exercise 1, an op: softplus(x) = log(1 + e^x) with its own node on the tape (docs/exercises.md). The
// reference solution sits between the EXERCISE markers; `bash scripts/exercise.sh start 1` swaps it for a stub.
#pragma once

#include "autograd/op_registry.h"
#include "autograd/ops.h"

namespace lora::exercises {

// The op's entry in the registry (autograd/op_registry.h): what OpRecord takes; the registry's tests then
// ask for its gradcheck and parity cases (tests/test_exercises.cpp).
LORA_REGISTER_OP(softplus_op, "softplus");

// y = softplus(x) = log(1 + e^x), elementwise: a smooth relu. Computed without overflow as
//   softplus(x) = max(x, 0) + log(1 + e^-|x|)
// dy/dx = sigmoid(x) = 1 / (1 + e^-x) = 1 - e^-y, so backward needs y alone: the op saves y, not x.
// Records one node "softplus" when x requires a gradient, nothing otherwise (the forward's own ops run
// without recording). Float32 and float64, any device the ops run on.
inline Tensor softplus(const Tensor& x) {
  // EXERCISE 1 BEGIN
  Tensor y;
  {
    NoGradGuard no_grad;  // the composed forward is one op to the tape: its pieces are not recorded
    const Tensor abs_x = ops::relu(x) + ops::relu(-x);
    y = ops::relu(x) + ops::log(ops::exp(-abs_x) + 1.0);
  }
  if (autograd::OpRecord rec(softplus_op(), {x}); rec) {
    const Tensor y_saved = rec.save(y);
    rec.finish(y, [y_saved](const Tensor& grad_y, autograd::GradSink& grads) {
      // dx = dy * (1 - e^-y); backward runs under NoGradGuard, so these ops record nothing either.
      grads.set(0, grad_y * (-ops::exp(-y_saved) + 1.0));
    });
  }
  return y;
  // EXERCISE 1 END
}

}  // namespace lora::exercises
