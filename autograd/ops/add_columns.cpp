// add_columns: out = base with columns [column, column + w) increased by scale * delta, forward and
// backward. This is how a LoRA update on one slice of a fused projection (q or v of GPT-2's c_attn)
// joins the base output without splitting the base matmul.
//   base [..., N], delta [..., w]:  out[..., column + j] = base[..., column + j] + scale * delta[..., j]
//   d base = g,  d delta = scale * g[..., column : column + w]
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(add_columns_op, "add_columns");
}  // namespace

Tensor add_columns(const Tensor& base, const Tensor& delta, int64_t column, double scale) {
  detail::check_floating(base, "add_columns", "base");
  detail::check_floating(delta, "add_columns", "delta");
  detail::check_same_device_dtype(base, delta, "add_columns");
  const int64_t n = base.size(-1), w = delta.size(-1), rows = base.numel() / std::max<int64_t>(n, 1);
  LORA_CHECK(delta.numel() == rows * w && column >= 0 && column + w <= n,
             "add_columns: delta {} does not fit columns [{}, {}) of base {}", delta.shape().str(), column, column + w,
             base.shape().str());
  Backend& be = backend_for(base);
  Tensor out = detail::empty_like(base);
  out.copy_from(base);
  Tensor scaled = delta;
  if (scale != 1.0) {
    scaled = detail::empty_like(delta);
    be.unary(UnaryOp::MulScalar, delta, scaled, scale);
  }
  be.copy_block(scaled, out, rows, w, n, 1, 0, column, w, /*accumulate=*/true);
  if (OpRecord rec(add_columns_op(), {base, delta}); rec) {
    const Shape delta_shape = delta.shape();
    rec.finish(out, [=](const Tensor& g, GradSink& grads) {
      if (grads.needs_grad(0)) grads.set(0, g);
      if (grads.needs_grad(1)) {
        Tensor gd = detail::empty_like(g, delta_shape);
        Backend& be = backend_for(g);
        be.copy_block(g, gd, rows, n, w, 1, column, 0, w, false);
        if (scale != 1.0) be.unary(UnaryOp::MulScalar, gd, gd, scale);
        grads.set(1, gd);
      }
    });
  }
  return out;
}

}  // namespace lora::ops
