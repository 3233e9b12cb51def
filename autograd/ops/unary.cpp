// The unary elementwise ops (neg, scalar ops, exp, log, tanh, relu, gelu, silu, square, sqrt), forward and
// backward, all from the table in backends/elementwise_ops.h: each saves exactly what the table says its
// derivative reads (its input, its output, or nothing), and backward is one table-driven kernel.
#include <array>

#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {

// One registered op per table entry, under the table's name.
const autograd::OpDef& unary_op(UnaryOp op) {
  static const auto defs = [] {
    std::array<const autograd::OpDef*, kNumUnaryOps> d{};
    for (const UnaryInfo& info : kUnaryOps) d[static_cast<int>(info.op)] = &autograd::register_op(info.name, __FILE__);
    return d;
  }();
  return *defs[static_cast<int>(op)];
}
[[maybe_unused]] const autograd::OpDef& unary_ops_at_startup = unary_op(UnaryOp::Neg);

}  // namespace

Tensor unary(UnaryOp op, const Tensor& x, double alpha) {
  const UnaryInfo& info = unary_info(op);
  detail::check_floating(x, info.name, "input");
  Tensor y = detail::empty_like(x);
  backend_for(x).unary(op, x, y, alpha);
  if (OpRecord rec(unary_op(op), {x}); rec) {
    Tensor saved = info.saves == Saves::Input ? rec.save(x) : info.saves == Saves::Output ? rec.save(y) : Tensor();
    rec.finish(y, [op, alpha, saved](const Tensor& g, GradSink& grads) {
      Tensor gx = detail::empty_like(g);
      backend_for(g).unary_backward(op, saved, g, gx, alpha);  // gx = g * f'(x)
      grads.set(0, gx);
    });
  }
  return y;
}

Tensor add_scalar(const Tensor& x, double s) {
  return unary(UnaryOp::AddScalar, x, s);
}
Tensor mul_scalar(const Tensor& x, double s) {
  return unary(UnaryOp::MulScalar, x, s);
}
Tensor neg(const Tensor& x) {
  return unary(UnaryOp::Neg, x);
}
Tensor exp(const Tensor& x) {
  return unary(UnaryOp::Exp, x);
}
Tensor log(const Tensor& x) {
  return unary(UnaryOp::Log, x);
}
Tensor tanh(const Tensor& x) {
  return unary(UnaryOp::Tanh, x);
}
Tensor relu(const Tensor& x) {
  return unary(UnaryOp::Relu, x);
}
Tensor gelu(const Tensor& x) {
  return unary(UnaryOp::Gelu, x);
}
Tensor silu(const Tensor& x) {
  return unary(UnaryOp::Silu, x);
}
Tensor square(const Tensor& x) {
  return unary(UnaryOp::Square, x);
}
Tensor sqrt(const Tensor& x) {
  return unary(UnaryOp::Sqrt, x);
}

}  // namespace lora::ops
