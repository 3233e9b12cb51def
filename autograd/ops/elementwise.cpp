// Elementwise arithmetic ops (add, sub, mul, div with broadcasting; scalar ops; neg), forward and backward.
//
// Broadcasting: out = a op b with a and b broadcast to a common shape. In backward, the gradient of an
// input that was broadcast is summed over the broadcast axes (reduce_to_shape).
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {

using detail::empty_like;
using detail::reduce_to_shape;

// out = f(a, b) through one binary kernel.
Tensor apply(BinaryOp op, const Tensor& a, const Tensor& b, const Shape& shape) {
  Tensor out = empty_like(a, shape);
  backend_for(a).binary(op, a, b, out);
  return out;
}

Tensor binary_op(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  detail::check_floating(a, name, "first input");
  detail::check_floating(b, name, "second input");
  detail::check_same_device_dtype(a, b, name);
  const Shape out_shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = apply(op, a, b, out_shape);

  OpRecord rec(name, {a, b});
  if (!rec) return out;
  const Shape a_shape = a.shape(), b_shape = b.shape();
  switch (op) {
    case BinaryOp::Add:  // d(a + b) = (g, g)
      rec.finish(out, [a_shape, b_shape](const Tensor& g, autograd::GradSink& grads) {
        if (grads.needs_grad(0)) grads.set(0, reduce_to_shape(g, a_shape));
        if (grads.needs_grad(1)) grads.set(1, reduce_to_shape(g, b_shape));
      });
      break;
    case BinaryOp::Sub:  // d(a - b) = (g, -g)
      rec.finish(out, [a_shape, b_shape](const Tensor& g, autograd::GradSink& grads) {
        if (grads.needs_grad(0)) grads.set(0, reduce_to_shape(g, a_shape));
        if (grads.needs_grad(1)) {
          Tensor gb = reduce_to_shape(g, b_shape);
          Tensor neg_gb = empty_like(gb);
          backend_for(g).unary(UnaryOp::Neg, gb, neg_gb);
          grads.set(1, neg_gb);
        }
      });
      break;
    case BinaryOp::Mul: {  // d(a * b) = (g * b, g * a): a is saved only for b's gradient, and vice versa
      Tensor a_saved = rec.needs_grad(1) ? rec.save(a) : Tensor();
      Tensor b_saved = rec.needs_grad(0) ? rec.save(b) : Tensor();
      rec.finish(out, [a_saved, b_saved, a_shape, b_shape](const Tensor& g, autograd::GradSink& grads) {
        if (grads.needs_grad(0)) grads.set(0, reduce_to_shape(apply(BinaryOp::Mul, g, b_saved, g.shape()), a_shape));
        if (grads.needs_grad(1)) grads.set(1, reduce_to_shape(apply(BinaryOp::Mul, g, a_saved, g.shape()), b_shape));
      });
      break;
    }
    case BinaryOp::Div: {  // d(a / b) = (g / b, -g * out / b)
      Tensor b_saved = rec.save(b);
      Tensor out_saved = rec.needs_grad(1) ? rec.save(out) : Tensor();
      rec.finish(out, [b_saved, out_saved, a_shape, b_shape](const Tensor& g, autograd::GradSink& grads) {
        if (grads.needs_grad(0)) grads.set(0, reduce_to_shape(apply(BinaryOp::Div, g, b_saved, g.shape()), a_shape));
        if (grads.needs_grad(1)) {
          Tensor t = apply(BinaryOp::Mul, g, out_saved, g.shape());
          Backend& be = backend_for(g);
          be.binary(BinaryOp::Div, t, b_saved, t);
          be.unary(UnaryOp::Neg, t, t);
          grads.set(1, reduce_to_shape(t, b_shape));
        }
      });
      break;
    }
  }
  return out;
}

// Scalar ops and neg: linear maps with a constant derivative; nothing is saved.
Tensor linear_unary(UnaryOp op, const char* name, const Tensor& x, double alpha) {
  detail::check_floating(x, name, "input");
  Tensor out = empty_like(x);
  backend_for(x).unary(op, x, out, alpha);
  if (OpRecord rec(name, {x}); rec) {
    rec.finish(out, [op, alpha](const Tensor& g, autograd::GradSink& grads) {
      Tensor gx = empty_like(g);
      backend_for(g).unary_backward(op, Tensor(), Tensor(), g, gx, alpha);
      grads.set(0, gx);
    });
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, "add", a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, "sub", a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, "mul", a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, "div", a, b); }
Tensor add_scalar(const Tensor& x, double s) { return linear_unary(UnaryOp::AddScalar, "add_scalar", x, s); }
Tensor mul_scalar(const Tensor& x, double s) { return linear_unary(UnaryOp::MulScalar, "mul_scalar", x, s); }
Tensor neg(const Tensor& x) { return linear_unary(UnaryOp::Neg, "neg", x, 0.0); }

}  // namespace lora::ops
