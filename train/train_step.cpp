// train_step: forward, backward, accumulation, all-reduce, the non-finite guard, clipping, the update.
#include "train/train_step.h"

#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "optim/clip.h"
#include "train/fault_injection.h"

namespace lora::train {

AccumulatedLoss accumulate_gradients(models::CausalLM& model, const std::vector<Batch>& micro_batches,
                                     dist::GradientReducer* reducer) {
  LORA_CHECK(!micro_batches.empty(), "a training step needs at least one micro-batch");
  dist::Communicator* comm = reducer ? &reducer->communicator() : nullptr;
  const int ranks = comm ? comm->size() : 1;
  const bool shapes_only = micro_batches.front().ids.device().is_meta();

  // N: every micro-batch's trained tokens, on every rank (one small all-reduce, before any backward).
  int64_t local_tokens = 0, local_sequences = 0;
  for (const Batch& b : micro_batches) {
    local_tokens += b.trained_tokens;
    local_sequences += b.sequences;
  }
  AccumulatedLoss out;
  out.trained_tokens = local_tokens;
  out.sequences = local_sequences;
  if (ranks > 1) {
    out.trained_tokens = std::llround(comm->all_reduce_sum(double(local_tokens)));
    out.sequences = std::llround(comm->all_reduce_sum(double(local_sequences)));
  }
  LORA_CHECK(out.trained_tokens > 0,
             "a training step whose {} micro-batch(es) hold no trained token (every target is ignored): nothing "
             "to learn from",
             micro_batches.size());

  double weighted = 0;  // sum over this rank's micro-batches of mean_i x n_i
  // The last micro-batch with trained tokens is the one whose backward completes each gradient: the
  // reducer's hook goes there, so buckets are all-reduced once, after every micro-batch has added in.
  size_t last = 0;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    if (micro_batches[i].trained_tokens > 0) last = i;
  }
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    const Batch& b = micro_batches[i];
    if (b.trained_tokens == 0) continue;  // its loss and gradient are zero
    // Packed examples: the segment ids keep attention inside each example and restart its positions.
    models::ForwardBatch forward(b.ids);
    if (b.segments.defined()) forward.with_segments(b.segments.to(Device::cpu()).to_vector<int32_t>());
    Tensor loss = model.loss(forward, b.targets);  // mean over its n_i trained tokens
    // Scaled by ranks x n_i / N: summed over micro-batches and averaged over ranks, the gradient is that
    // of sum(token losses) / N. One micro-batch on one rank has scale 1 and records no extra op.
    const double scale = double(ranks) * double(b.trained_tokens) / double(out.trained_tokens);
    const Tensor scaled = scale == 1.0 ? loss : loss * scale;
    if (!shapes_only) weighted += double(loss.item()) * double(b.trained_tokens);
    if (reducer && i == last) {
      // Each bucket of gradients is all-reduced on a background thread as soon as backward completes it.
      autograd::GradReadyHookGuard overlap([reducer](const TensorImpl& leaf) { reducer->mark_ready(leaf); });
      backward(scaled);
    } else {
      backward(scaled);
    }
  }
  if (reducer) reducer->finish();  // every rank now holds the average gradient
  if (shapes_only) {
    out.loss = std::nan("");
  } else {
    out.loss = (ranks > 1 ? comm->all_reduce_sum(weighted) : weighted) / double(out.trained_tokens);
  }
  return out;
}

StepResult train_step(models::CausalLM& model, optim::Optimizer& optimizer, const std::vector<Batch>& micro_batches,
                      const StepSettings& settings, dist::GradientReducer* reducer) {
  LORA_CHECK(settings.grad_clip >= 0 && std::isfinite(settings.grad_clip), "gradient clipping at {}: expected >= 0",
             settings.grad_clip);
  const bool shapes_only = micro_batches.front().ids.device().is_meta();
  const AccumulatedLoss accumulated = accumulate_gradients(model, micro_batches, reducer);
  if (!shapes_only) fault_point("train-step");  // tests kill the process here (the dry run does not count)
  StepResult result;
  result.loss = accumulated.loss;
  result.trained_tokens = accumulated.trained_tokens;
  result.sequences = accumulated.sequences;
  const std::vector<Tensor>& params = optimizer.params();
  // One pass over the gradients gives the norm for clipping and for the guard (a non-finite norm is
  // returned unscaled).
  result.grad_norm =
      settings.grad_clip > 0 ? optim::clip_grad_norm(params, settings.grad_clip, false) : optim::grad_norm(params);
  if (!shapes_only && (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm))) {
    // A non-finite value would poison the weights and the moments: nothing is applied.
    const int64_t bad = optim::first_nonfinite_gradient(params);
    result.nonfinite = !std::isfinite(result.loss) ? fmt::format("the loss is {}", result.loss)
                       : bad >= 0 ? fmt::format("the gradient of '{}' is not finite", optimizer.names()[size_t(bad)])
                                  : fmt::format("the gradient norm is {}", result.grad_norm);
    result.applied = false;
    optimizer.zero_grad();
    return result;
  }
  optimizer.step();
  optimizer.zero_grad();
  return result;
}

}  // namespace lora::train
