// linear_cross_entropy: the LM head (logits = x W^T) and the mean cross-entropy as one op, forward and backward.
//
// Composed from linear + cross_entropy, a step holds two [N, V] buffers at once: the logits (saved by the
// cross-entropy) and their gradient (50257 floats per token: 206 MB each for GPT-2 at 4 x 256). Here the
// logits never leave the op, so backward can overwrite them with their gradient,
//   G = (softmax(logits) - onehot(targets)) * grad_loss / count      (in place: each element is read, then written)
// and then  grad_x = G W  and  grad_W = G^T x.  Saved: the logits [N, V] and lse [N]; x only when W trains,
// W only when x needs a gradient.
//
// W is a dense tensor (f32/f64, may train) or a frozen compact weight (core/quantized.h): the two differ only
// in how the two products with W are formed, so one implementation takes them as a HeadProducts.
#include "autograd/ops/linear_cross_entropy.h"

#include <algorithm>
#include <functional>
#include <vector>

#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"
#include "autograd/ops/quantized_linear.h"
#include "backends/kernels/cross_entropy.h"
#include "backends/kernels/quantized_linear.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(linear_cross_entropy_op, "linear_cross_entropy");

// The products with the head W [V, C] that the op needs.
struct HeadProducts {
  int64_t vocab = 0, cols = 0;
  std::function<void(const Tensor& x2, Tensor& logits)> logits;  // logits [N, V] = x2 [N, C] W^T
  // gx [N, C] = g [N, V] W, in backward; `dense_w` is the saved dense W (undefined for a compact head).
  std::function<void(const Tensor& g, const Tensor& dense_w, Tensor& gx)> input_grad;
};

// Checks x and targets against the head; returns N, the rows.
int64_t check_args(const char* op, const Tensor& x, const Tensor& targets, int64_t V, int64_t C) {
  detail::check_floating(x, op, "x");
  detail::check_integer(targets, op, "targets");
  LORA_CHECK(targets.device() == x.device(), "{}: targets are on {} but x is on {}", op, targets.device().str(),
             x.device().str());
  LORA_CHECK(V > 0, "{}: the head [{}, {}] has no rows", op, V, C);
  LORA_CHECK(x.rank() >= 1 && x.size(-1) == C, "{}: x {} does not end in C = {} of the head [{}, {}]", op,
             x.shape().str(), C, V, C);
  std::vector<int64_t> lead = x.shape().dims();
  lead.pop_back();
  LORA_CHECK(targets.shape() == Shape(lead), "{}: targets have shape {}, expected {} for x {}", op,
             targets.shape().str(), Shape(lead).str(), x.shape().str());
  return x.numel() / C;
}

// The op, given the head's products. `weight` is the dense W (recorded as the op's second input, and given
// grad_W = G^T x when it trains), or undefined for a compact head (x is the only input).
Tensor head_and_loss(const Tensor& x, const Tensor& targets, int64_t ignore_index, const HeadProducts& head,
                     const Tensor& weight) {
  const int64_t C = head.cols, V = head.vocab, N = x.numel() / C;
  Backend& be = backend_for(x);
  Tensor x2 = x.view({N, C});                     // [N, C]
  Tensor targets1 = targets.view({N});            // [N]
  Tensor logits = detail::empty_like(x, {N, V});  // [N, V]
  head.logits(x2, logits);
  Tensor losses = detail::empty_like(x, {N});                                                           // [N]
  Tensor lse = detail::empty_like(x, {N});                                                              // [N]
  kernels::run<kernels::CrossEntropyForward>(x.device(), logits, targets1, ignore_index, losses, lse);  // checks ids

  int64_t count = N;  // the rows that count, on the host (N integers; on the meta device, every row)
  if (!targets1.device().is_meta()) {
    count = 0;
    for (int64_t t : targets1.to_vector<int64_t>()) count += t != ignore_index;
  }
  const double scale = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;
  Tensor loss = detail::empty_like(x, Shape());  // []
  if (count > 0) {
    be.sum_to(losses, loss);
    be.unary(UnaryOp::MulScalar, loss, loss, scale);
  } else {
    be.fill(loss, 0.0);
  }

  const bool dense = weight.defined();
  const std::vector<Tensor> inputs = dense ? std::vector<Tensor>{x, weight} : std::vector<Tensor>{x};
  if (OpRecord rec(linear_cross_entropy_op(), inputs); rec) {
    Tensor logits_saved = rec.save(logits), lse_saved = rec.save(lse), targets_saved = rec.save(targets1);
    Tensor x_saved = dense && rec.needs_grad(1) ? rec.save(x2) : Tensor();
    Tensor w_saved = dense && rec.needs_grad(0) ? rec.save(weight) : Tensor();
    const Shape x_shape = x.shape();
    const auto input_grad = head.input_grad;
    rec.finish(loss, [=](const Tensor& grad_loss, GradSink& g) {
      Tensor grad_logits = logits_saved;  // the same storage: overwritten with the gradient
      Backend& b = backend_for(grad_loss);
      kernels::run<kernels::CrossEntropyBackward>(grad_loss.device(), logits_saved, targets_saved, lse_saved, grad_loss,
                                                  scale, ignore_index, grad_logits);
      if (g.needs_grad(0)) {  // grad_x [N, C] = G [N, V] W [V, C]
        Tensor gx = detail::empty_like(grad_logits, {N, C});
        input_grad(grad_logits, w_saved, gx);
        g.set(0, gx.view(x_shape));
      }
      if (g.size() > 1 && g.needs_grad(1)) {  // grad_W [V, C] = G^T [V, N] x [N, C]
        Tensor gw = detail::empty_like(grad_logits, {V, C});
        GemmShape gs;
        gs.m = V, gs.n = C, gs.k = N, gs.trans_a = true;
        b.gemm(grad_logits, x_saved, gw, gs);
        g.set(1, gw);
      }
    });
  }
  return loss;
}

}  // namespace

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t ignore_index) {
  constexpr const char* op = "linear_cross_entropy";
  detail::check_floating(weight, op, "weight");
  detail::check_same_device_dtype(x, weight, op);
  LORA_CHECK(weight.rank() == 2, "{}: weight has shape {}, expected [V, C]", op, weight.shape().str());
  const int64_t V = weight.size(0), C = weight.size(1);
  check_args(op, x, targets, V, C);
  HeadProducts head;
  head.vocab = V, head.cols = C;
  head.logits = [&weight, V, C](const Tensor& x2, Tensor& logits) {
    GemmShape s;  // logits = x W^T
    s.m = x2.size(0), s.n = V, s.k = C, s.trans_b = true;
    backend_for(x2).gemm(x2, weight, logits, s);
  };
  head.input_grad = [V, C](const Tensor& g, const Tensor& w, Tensor& gx) {
    GemmShape gs;  // gx = G W
    gs.m = g.size(0), gs.n = C, gs.k = V;
    backend_for(g).gemm(g, w, gx, gs);
  };
  return head_and_loss(x, targets, ignore_index, head, weight);
}

Tensor linear_cross_entropy(const Tensor& x, const std::shared_ptr<const QuantizedWeight>& weight,
                            const Tensor& targets, int64_t ignore_index) {
  constexpr const char* op = "linear_cross_entropy";
  LORA_CHECK(weight != nullptr, "{}: no head weight", op);
  LORA_CHECK(x.device() == weight->device(), "{}: x is on {} but the compact head on {}", op, x.device().str(),
             weight->device().str());
  const int64_t V = weight->rows, C = weight->cols;
  check_args(op, x, targets, V, C);
  // One tile of the head in f32 at a time (as ops::quantized_linear).
  const int64_t tile_rows = std::clamp<int64_t>(kQuantizedTileElements / std::max<int64_t>(C, 1), 1, V);
  HeadProducts head;
  head.vocab = V, head.cols = C;
  head.logits = [&weight, tile_rows, C](const Tensor& x2, Tensor& logits) {
    Tensor tile = kernels::QuantizedLinearForward::needs_tile(x2) ? detail::empty_like(x2, {tile_rows, C}) : Tensor();
    kernels::run<kernels::QuantizedLinearForward>(x2.device(), x2, *weight, tile, logits);
  };
  head.input_grad = [weight, tile_rows, C](const Tensor& g, const Tensor&, Tensor& gx) {
    Tensor tile = detail::empty_like(g, {tile_rows, C});
    kernels::run<kernels::QuantizedLinearBackward>(g.device(), g, *weight, tile, gx);
  };
  return head_and_loss(x, targets, ignore_index, head, Tensor());
}

}  // namespace lora::ops
