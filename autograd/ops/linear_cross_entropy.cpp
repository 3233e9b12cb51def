// linear_cross_entropy: the LM head (logits = x W^T) and the mean cross-entropy as one op, forward and backward.
//
// Composed from linear + cross_entropy, a step holds two [N, V] buffers at once: the logits (saved by the
// cross-entropy) and their gradient (50257 floats per token: 206 MB each for GPT-2 at 4 x 256). Here the
// logits never leave the op, so backward can overwrite them with their gradient,
//   G = (softmax(logits) - onehot(targets)) * grad_loss / count      (in place: each element is read, then written)
// and then  grad_x = G W  and  grad_W = G^T x.  Saved: the logits [N, V] and lse [N]; x only when W trains,
// W only when x needs a gradient.
#include "autograd/ops/linear_cross_entropy.h"

#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"
#include "backends/kernels/cross_entropy.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(linear_cross_entropy_op, "linear_cross_entropy");
}  // namespace

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t ignore_index) {
  constexpr const char* op = "linear_cross_entropy";
  detail::check_floating(x, op, "x");
  detail::check_floating(weight, op, "weight");
  detail::check_integer(targets, op, "targets");
  detail::check_same_device_dtype(x, weight, op);
  LORA_CHECK(targets.device() == x.device(), "{}: targets are on {} but x is on {}", op, targets.device().str(),
             x.device().str());
  LORA_CHECK(weight.rank() == 2, "{}: weight has shape {}, expected [V, C]", op, weight.shape().str());
  LORA_CHECK(x.rank() >= 1 && x.size(-1) == weight.size(1), "{}: x {} does not end in C = {} of weight {}", op,
             x.shape().str(), weight.size(1), weight.shape().str());
  std::vector<int64_t> lead = x.shape().dims();
  lead.pop_back();
  LORA_CHECK(targets.shape() == Shape(lead), "{}: targets have shape {}, expected {} for x {}", op,
             targets.shape().str(), Shape(lead).str(), x.shape().str());
  const int64_t C = weight.size(1), V = weight.size(0), N = x.numel() / C;
  LORA_CHECK(V > 0, "{}: weight {} has no rows", op, weight.shape().str());

  Backend& be = backend_for(x);
  Tensor x2 = x.view({N, C});                     // [N, C]
  Tensor targets1 = targets.view({N});            // [N]
  Tensor logits = detail::empty_like(x, {N, V});  // [N, V]
  GemmShape s;                                    // logits = x W^T
  s.m = N, s.n = V, s.k = C, s.trans_b = true;
  be.gemm(x2, weight, logits, s);
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

  if (OpRecord rec(linear_cross_entropy_op(), {x, weight}); rec) {
    Tensor logits_saved = rec.save(logits), lse_saved = rec.save(lse), targets_saved = rec.save(targets1);
    Tensor x_saved = rec.needs_grad(1) ? rec.save(x2) : Tensor();
    Tensor w_saved = rec.needs_grad(0) ? rec.save(weight) : Tensor();
    const Shape x_shape = x.shape();
    rec.finish(loss, [=](const Tensor& grad_loss, GradSink& g) {
      Tensor grad_logits = logits_saved;  // the same storage: overwritten with the gradient
      Backend& b = backend_for(grad_loss);
      kernels::run<kernels::CrossEntropyBackward>(grad_loss.device(), logits_saved, targets_saved, lse_saved, grad_loss,
                                                  scale, ignore_index, grad_logits);
      if (g.needs_grad(0)) {  // grad_x [N, C] = G [N, V] W [V, C]
        Tensor gx = detail::empty_like(grad_logits, {N, C});
        GemmShape gs;
        gs.m = N, gs.n = C, gs.k = V;
        b.gemm(grad_logits, w_saved, gx, gs);
        g.set(0, gx.view(x_shape));
      }
      if (g.needs_grad(1)) {  // grad_W [V, C] = G^T [V, N] x [N, C]
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

}  // namespace lora::ops
