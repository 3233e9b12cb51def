// Binary elementwise ops (add, sub, mul, div with broadcasting), forward and backward, from the table in
// backends/elementwise_ops.h: each saves exactly the operands its derivatives read, for the inputs that need
// a gradient.
//
// Broadcasting: out = a op b with a and b broadcast to a common shape. In backward, the gradient of an
// input that was broadcast is summed over the broadcast axes (reduce_to_shape).
#include <array>

#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {

using detail::empty_like;
using detail::reduce_to_shape;

// One registered op per table entry, under the table's name.
const autograd::OpDef& binary_op(BinaryOp op) {
  static const auto defs = [] {
    std::array<const autograd::OpDef*, kNumBinaryOps> d{};
    for (const BinaryInfo& info : kBinaryOps)
      d[static_cast<int>(info.op)] = &autograd::register_op(info.name, __FILE__);
    return d;
  }();
  return *defs[static_cast<int>(op)];
}
[[maybe_unused]] const autograd::OpDef& binary_ops_at_startup = binary_op(BinaryOp::Add);

// out = f(a, b) through one binary kernel.
Tensor apply(BinaryOp op, const Tensor& a, const Tensor& b, const Shape& shape) {
  Tensor out = empty_like(a, shape);
  backend_for(a).binary(op, a, b, out);
  return out;
}

// What backward holds: the operands the table says the needed derivatives read (the others undefined).
struct Saved {
  Tensor a, b, out;
};

// Derivative<Op>::grad_a / grad_b: the gradient of a (of b) for the output gradient g, summed to `shape`.
// The primary template has no definition: binary_op instantiates every table entry, so an entry without
// its derivative here does not compile.
template <BinaryOp Op>
struct Derivative;

template <>
struct Derivative<BinaryOp::Add> {  // d(a + b) = (g, g)
  static Tensor grad_a(const Tensor& g, const Saved&, const Shape& shape) { return reduce_to_shape(g, shape); }
  static Tensor grad_b(const Tensor& g, const Saved&, const Shape& shape) { return reduce_to_shape(g, shape); }
};

template <>
struct Derivative<BinaryOp::Sub> {  // d(a - b) = (g, -g)
  static Tensor grad_a(const Tensor& g, const Saved&, const Shape& shape) { return reduce_to_shape(g, shape); }
  static Tensor grad_b(const Tensor& g, const Saved&, const Shape& shape) {
    Tensor gb = reduce_to_shape(g, shape);  // reduce first: the negation then runs on the smaller tensor
    Tensor neg_gb = empty_like(gb);
    backend_for(g).unary(UnaryOp::Neg, gb, neg_gb);
    return neg_gb;
  }
};

template <>
struct Derivative<BinaryOp::Mul> {  // d(a * b) = (g * b, g * a)
  static Tensor grad_a(const Tensor& g, const Saved& s, const Shape& shape) {
    return reduce_to_shape(apply(BinaryOp::Mul, g, s.b, g.shape()), shape);
  }
  static Tensor grad_b(const Tensor& g, const Saved& s, const Shape& shape) {
    return reduce_to_shape(apply(BinaryOp::Mul, g, s.a, g.shape()), shape);
  }
};

template <>
struct Derivative<BinaryOp::Div> {  // d(a / b) = (g / b, -g * out / b)
  static Tensor grad_a(const Tensor& g, const Saved& s, const Shape& shape) {
    return reduce_to_shape(apply(BinaryOp::Div, g, s.b, g.shape()), shape);
  }
  static Tensor grad_b(const Tensor& g, const Saved& s, const Shape& shape) {
    Tensor t = apply(BinaryOp::Mul, g, s.out, g.shape());
    Backend& be = backend_for(g);
    be.binary(BinaryOp::Div, t, s.b, t);
    be.unary(UnaryOp::Neg, t, t);
    return reduce_to_shape(t, shape);
  }
};

}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const BinaryInfo& info = binary_info(op);
  detail::check_floating(a, info.name, "first input");
  detail::check_floating(b, info.name, "second input");
  detail::check_same_device_dtype(a, b, info.name);
  const Shape out_shape = broadcast_shapes(a.shape(), b.shape(), info.name);
  Tensor out = apply(op, a, b, out_shape);

  OpRecord rec(binary_op(op), {a, b});
  if (!rec) return out;
  // Operands read by the derivatives of the inputs that need a gradient.
  const uint8_t reads = (rec.needs_grad(0) ? info.grad_a_reads : 0) | (rec.needs_grad(1) ? info.grad_b_reads : 0);
  Saved saved;
  if (reads & ReadsA) saved.a = rec.save(a);
  if (reads & ReadsB) saved.b = rec.save(b);
  if (reads & ReadsOut) saved.out = rec.save(out);
  const Shape a_shape = a.shape(), b_shape = b.shape();
  visit_binary(op, [&]<BinaryOp Op>() {
    rec.finish(out, [saved, a_shape, b_shape](const Tensor& g, GradSink& grads) {
      if (grads.needs_grad(0)) grads.set(0, Derivative<Op>::grad_a(g, saved, a_shape));
      if (grads.needs_grad(1)) grads.set(1, Derivative<Op>::grad_b(g, saved, b_shape));
    });
  });
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::Add, a, b);
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::Sub, a, b);
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::Mul, a, b);
}
Tensor div(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::Div, a, b);
}

}  // namespace lora::ops
