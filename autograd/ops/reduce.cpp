// Reductions: sum and mean over all elements or one axis, forward and backward.
// The backward of a sum broadcasts the gradient back over the summed axes; nothing is saved.
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {

LORA_REGISTER_OP(sum_op, "sum");
LORA_REGISTER_OP(mean_op, "mean");

// Sums x into `out_shape` (whose dims are x's with the reduced axes set to 1, or [] for all), scales by
// `scale`, and reshapes to `result_shape`.
Tensor reduce(const autograd::OpDef& op, const Tensor& x, const Shape& keep_shape, const Shape& result_shape,
              double scale) {
  detail::check_floating(x, op.name(), "input");
  Tensor kept = detail::empty_like(x, keep_shape);
  Backend& be = backend_for(x);
  be.sum_to(x, kept);
  if (scale != 1.0) be.unary(UnaryOp::MulScalar, kept, kept, scale);
  Tensor out = kept.view(result_shape);
  if (OpRecord rec(op, {x}); rec) {
    const Shape x_shape = x.shape();
    rec.finish(out, [x_shape, keep_shape, scale](const Tensor& g, autograd::GradSink& grads) {
      Tensor gx = detail::empty_like(g, x_shape);
      Backend& be = backend_for(g);
      be.expand(g.view(keep_shape), gx, /*accumulate=*/false);
      if (scale != 1.0) be.unary(UnaryOp::MulScalar, gx, gx, scale);
      grads.set(0, gx);
    });
  }
  return out;
}

Shape keep_shape_for_axis(const Shape& s, int axis) {
  std::vector<int64_t> dims = s.dims();
  dims[s.normalize_axis(axis)] = 1;
  return Shape(std::move(dims));
}

Shape result_shape_for_axis(const Shape& s, int axis, bool keepdim) {
  if (keepdim) return keep_shape_for_axis(s, axis);
  std::vector<int64_t> dims = s.dims();
  dims.erase(dims.begin() + s.normalize_axis(axis));
  return Shape(std::move(dims));
}

}  // namespace

Tensor sum(const Tensor& x) {
  return reduce(sum_op(), x, Shape{}, Shape{}, 1.0);
}

Tensor sum(const Tensor& x, int axis, bool keepdim) {
  return reduce(sum_op(), x, keep_shape_for_axis(x.shape(), axis), result_shape_for_axis(x.shape(), axis, keepdim),
                1.0);
}

Tensor mean(const Tensor& x) {
  LORA_CHECK(x.numel() > 0, "mean: the input {} is empty", x.shape().str());
  return reduce(mean_op(), x, Shape{}, Shape{}, 1.0 / static_cast<double>(x.numel()));
}

Tensor mean(const Tensor& x, int axis, bool keepdim) {
  const int64_t n = x.shape()[axis];
  LORA_CHECK(n > 0, "mean: axis {} of {} is empty", axis, x.shape().str());
  return reduce(mean_op(), x, keep_shape_for_axis(x.shape(), axis), result_shape_for_axis(x.shape(), axis, keepdim),
                1.0 / static_cast<double>(n));
}

}  // namespace lora::ops
