// cross_entropy: the fused, numerically stable mean of -log softmax(logits)[target], forward and backward.
#include "backends/kernels/cross_entropy.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(cross_entropy_op, "cross_entropy");
}  // namespace

// logits [..., V], targets [...] (I32/I64) -> shape []: the mean over the rows whose target is not
// ignore_index. When every row is ignored there is nothing to average: the loss is 0 and so is the
// gradient (rather than PyTorch's 0/0 = NaN), so a batch made only of padding is a harmless no-op.
//
// Backward needs the logits, the targets and the per-row logsumexp from the forward pass; the per-row
// losses are not kept.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  constexpr const char* op = "cross_entropy";
  detail::check_floating(logits, op, "logits");
  detail::check_integer(targets, op, "targets");
  LORA_CHECK(targets.device() == logits.device(), "cross_entropy: targets are on {} but the logits are on {}",
             targets.device().str(), logits.device().str());
  LORA_CHECK(logits.rank() >= 1 && logits.size(-1) > 0, "cross_entropy: logits have shape {}, expected [..., V]",
             logits.shape().str());
  std::vector<int64_t> lead = logits.shape().dims();
  lead.pop_back();
  LORA_CHECK(targets.shape() == Shape(lead), "cross_entropy: targets have shape {}, expected {} for logits {}",
             targets.shape().str(), Shape(lead).str(), logits.shape().str());
  const int64_t vocab = logits.size(-1), rows = logits.numel() / vocab;

  Tensor logits2 = logits.view({rows, vocab});         // [N, V]
  Tensor targets1 = targets.view({rows});              // [N]
  Tensor losses = detail::empty_like(logits, {rows});  // [N]
  Tensor lse = detail::empty_like(logits, {rows});     // [N]
  Backend& be = backend_for(logits);
  // Checks every target against [0, V).
  kernels::run<kernels::CrossEntropyForward>(logits.device(), logits2, targets1, ignore_index, losses, lse);

  // The rows that count, on the host (N integers: cheap next to the N x V logits). The meta device has no
  // targets to read: every row counts.
  int64_t count = rows;
  if (!targets1.device().is_meta()) {
    count = 0;
    for (int64_t t : targets1.to_vector<int64_t>()) count += t != ignore_index;
  }
  const double scale = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;

  Tensor loss = detail::empty_like(logits, Shape());  // []
  if (count > 0) {
    be.sum_to(losses, loss);
    be.unary(UnaryOp::MulScalar, loss, loss, scale);
  } else {
    be.fill(loss, 0.0);
  }

  if (OpRecord rec(cross_entropy_op(), {logits}); rec) {
    Tensor logits_saved = rec.save(logits2);
    Tensor targets_saved = rec.save(targets1);
    Tensor lse_saved = rec.save(lse);
    const Shape logits_shape = logits.shape();
    rec.finish(loss, [=](const Tensor& grad_loss, GradSink& g) {
      Tensor grad_logits = detail::empty_like(logits_saved);  // [N, V]
      kernels::run<kernels::CrossEntropyBackward>(grad_loss.device(), logits_saved, targets_saved, lse_saved, grad_loss,
                                                  scale, ignore_index, grad_logits);
      g.set(0, grad_logits.view(logits_shape));
    });
  }
  return loss;
}

}  // namespace lora::ops
