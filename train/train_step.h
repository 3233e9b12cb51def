// train_step: the one training step every program takes (finetune, the replication experiment, the
// memory prediction's dry run on the meta device, bench_train, each rank of a data-parallel job):
//
//   N = trained tokens over every micro-batch (and every rank)
//   for each micro-batch i:  loss_i = model.loss(ids_i, targets_i)      the mean over its n_i trained tokens
//                            backward(loss_i * n_i / N)                  gradients add up in .grad
//   all-reduce the gradients (dist::GradientReducer; nothing to do alone)
//   if the loss or a gradient is inf/nan: drop the gradients, no update (the caller stops or skips)
//   clip the global gradient norm;  optimizer.step();  zero the gradients
//
// so the gradient is that of sum(token losses) / N whatever the micro-batches' sizes: accumulating N
// micro-batches equals one batch holding all of them, the normalisation transformers got wrong until 2024
// (it averaged the micro-batches' means, which over-weights the tokens of short micro-batches).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dist/gradient_reducer.h"
#include "models/causal_lm.h"
#include "optim/optimizer.h"
#include "train/batch.h"

namespace lora::train {

struct StepSettings {
  double grad_clip = 1.0;  // clip the global gradient norm to this (0: no clipping)
};

// The loss of a set of micro-batches (over every rank): the mean over all their trained tokens.
struct AccumulatedLoss {
  double loss = 0;             // NaN on the meta device (shapes only, no values)
  int64_t trained_tokens = 0;  // N
  int64_t sequences = 0;       // over every micro-batch and rank
};

struct StepResult {
  double loss = 0;             // as AccumulatedLoss::loss
  double grad_norm = 0;        // of the (averaged) gradients, before clipping
  int64_t trained_tokens = 0;  // over every micro-batch and rank
  int64_t sequences = 0;
  bool applied = true;    // false: a non-finite loss or gradient; nothing was updated
  std::string nonfinite;  // when not applied: what was not finite ("the loss is nan", ...)
};

// Forward and backward over `micro_batches`: leaves in .grad the gradient of the mean loss over all their
// trained tokens (and, with a reducer, over every rank's, once reduced: the reducer averages over ranks, so
// each rank scales by ranks x n_i / N). With a reducer, each bucket of gradients is all-reduced while the
// last micro-batch's backward goes on, and every rank holds the average when this returns.
// Throws lora::Error when no micro-batch has a trained token.
AccumulatedLoss accumulate_gradients(models::CausalLM& model, const std::vector<Batch>& micro_batches,
                                     dist::GradientReducer* reducer = nullptr);

// The whole step: accumulate_gradients, the non-finite guard, clipping, the optimizer's update, gradients
// released. The learning rate is the optimizer's (the caller sets it from its schedule). A non-finite loss
// or gradient norm leaves every weight and the optimizer as they were and returns applied = false: the
// caller decides whether that stops training. Every rank decides alike: it reads averaged values.
[[nodiscard]] StepResult train_step(models::CausalLM& model, optim::Optimizer& optimizer,
                                    const std::vector<Batch>& micro_batches, const StepSettings& settings = {},
                                    dist::GradientReducer* reducer = nullptr);

}  // namespace lora::train
