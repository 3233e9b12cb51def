// Elementwise functions (exp, log, tanh, relu, gelu, square, sqrt), forward and backward.
// Each saves only what its derivative reads: the output for exp, tanh and sqrt, the input for the others.
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {

enum class Saves { Input, Output };

Tensor unary_op(UnaryOp op, const char* name, Saves saves, const Tensor& x) {
  detail::check_floating(x, name, "input");
  Tensor y = detail::empty_like(x);
  backend_for(x).unary(op, x, y);
  if (OpRecord rec(name, {x}); rec) {
    Tensor x_saved = saves == Saves::Input ? rec.save(x) : Tensor();
    Tensor y_saved = saves == Saves::Output ? rec.save(y) : Tensor();
    rec.finish(y, [op, x_saved, y_saved](const Tensor& g, autograd::GradSink& grads) {
      Tensor gx = detail::empty_like(g);
      backend_for(g).unary_backward(op, x_saved, y_saved, g, gx);
      grads.set(0, gx);
    });
  }
  return y;
}

}  // namespace

Tensor exp(const Tensor& x) { return unary_op(UnaryOp::Exp, "exp", Saves::Output, x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::Log, "log", Saves::Input, x); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::Tanh, "tanh", Saves::Output, x); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::Relu, "relu", Saves::Input, x); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::Gelu, "gelu", Saves::Input, x); }
Tensor square(const Tensor& x) { return unary_op(UnaryOp::Square, "square", Saves::Input, x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::Sqrt, "sqrt", Saves::Output, x); }

}  // namespace lora::ops
