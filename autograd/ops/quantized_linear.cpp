// quantized_linear: forward and backward of the matmul with a quantized frozen weight.
//
//   y = x W^T + b        dx = dy W        db = sum over rows of dy        (no dW: W is frozen)
//
// Both products dequantize W a tile of rows at a time (backends/kernels/quantized_linear.h), so the only
// f32 copy of W is one tile, a Workspace tensor that lives for the call (none where the forward reads W in
// registers: a decoding step's few rows on the CPU).
#include "autograd/ops/quantized_linear.h"

#include "autograd/ops/op_utils.h"
#include "backends/kernels/quantized_linear.h"

namespace lora::ops {
namespace {

LORA_REGISTER_OP(quantized_linear_op, "quantized_linear");

using detail::empty_like;

// The workspace of one tile: [t, in] in x's dtype.
Tensor tile_for(const Tensor& like, const QuantizedWeight& w) {
  const int64_t t = std::clamp<int64_t>(kQuantizedTileElements / std::max<int64_t>(w.cols, 1), 1, w.rows);
  return empty_like(like, Shape{t, w.cols});
}

}  // namespace

Tensor quantized_linear(const Tensor& x, const std::shared_ptr<const QuantizedWeight>& weight, const Tensor& bias) {
  LORA_CHECK(weight != nullptr, "quantized_linear: no weight");
  const QuantizedWeight& w = *weight;
  detail::check_floating(x, "quantized_linear", "input");
  LORA_CHECK(x.device() == w.device(),
             "quantized_linear: input on {} but the quantized weight on {} (move the model "
             "before quantizing its base)",
             x.device().str(), w.device().str());
  LORA_CHECK(x.rank() >= 1 && x.size(-1) == w.cols,
             "quantized_linear: input {} does not match the weight [{}, {}] (expected [..., {}])", x.shape().str(),
             w.rows, w.cols, w.cols);
  if (bias.defined()) {
    detail::check_same_device_dtype(x, bias, "quantized_linear");
    LORA_CHECK(bias.rank() == 1 && bias.size(0) == w.rows,
               "quantized_linear: bias {} does not match the weight "
               "[{}, {}] (expected [{}])",
               bias.shape().str(), w.rows, w.cols, w.rows);
  }
  std::vector<int64_t> dims = x.shape().dims();
  dims.back() = w.rows;
  Tensor y = empty_like(x, Shape(dims));
  {
    Tensor tile = kernels::QuantizedLinearForward::needs_tile(x) ? tile_for(x, w) : Tensor();
    kernels::run<kernels::QuantizedLinearForward>(x.device(), x, w, tile, y);
  }
  if (bias.defined()) backend_for(x).expand(bias, y, /*accumulate=*/true);

  if (OpRecord rec(quantized_linear_op(), {x, bias}); rec) {
    const Shape x_shape = x.shape();
    const int64_t out_features = w.rows;
    rec.finish(y, [=](const Tensor& g, autograd::GradSink& grads) {
      if (grads.needs_grad(0)) {  // dx [rows, in] = g [rows, out] W [out, in]
        Tensor gx = empty_like(g, x_shape);
        Tensor tile = tile_for(g, *weight);
        kernels::run<kernels::QuantizedLinearBackward>(g.device(), g, *weight, tile, gx);
        grads.set(0, gx);
      }
      if (grads.size() > 1 && grads.needs_grad(1)) grads.set(1, detail::reduce_to_shape(g, Shape{out_features}));
    });
  }
  return y;
}

}  // namespace lora::ops
