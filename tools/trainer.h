// Trainer: the fine-tuning loop that programs share. One step:
//
//   x, y = the next batch (in a data-parallel job: this rank's shard of the global batch)
//   loss = model.loss(x, y);  backward(loss)
//   average the gradients over the ranks (dist::GradientReducer; nothing to do alone)
//   if the loss or a gradient is inf/nan: stop with an error naming the step and the parameter, or skip
//   clip the global gradient norm;  optimizer.step() at the schedule's learning rate;  zero the gradients
//
// around which it prints progress (loss, tokens/s, ETA), evaluates on held-out data every N steps, writes
// resumable checkpoints (tools/train_checkpoint.h) and stops cleanly on SIGINT/SIGTERM after saving one.
// In a data-parallel job every rank runs the same loop on its own shard and takes the same step; only rank 0
// prints, evaluates and saves.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/gradient_reducer.h"
#include "models/causal_lm.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "tools/token_data.h"
#include "tools/train_checkpoint.h"
#include "tools/train_report.h"

namespace lora::tools {

struct TrainerOptions {
  int64_t steps = 1;
  optim::LRSchedule schedule;
  double grad_clip = 1.0;            // 0: no clipping
  bool skip_nonfinite = false;
  int64_t eval_every = 0;            // held-out evaluation every N steps (0: none during training)
  std::string checkpoint_dir;        // where checkpoints go ("" : none, not even on interruption)
  int64_t save_every = 0;            // a checkpoint every N steps (0: only when interrupted)
  int keep_checkpoints = 2;
  std::string resume_dir;            // continue from its newest checkpoint
  int64_t tokens_per_step = 0;       // for the tokens/s figure (all ranks together)
};

// Thrown when SIGINT/SIGTERM stopped training after a step (programs exit with 128 + signal).
struct Interrupted {
  int signal;
};

// An error every rank of a data-parallel job reached together (a start-up check): each rank reports it and
// exits; nothing needs aborting.
struct AllRanksError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Trainer {
 public:
  // `identity` is checked against and written into checkpoints; `evaluate` computes a held-out loss (rank 0).
  Trainer(models::CausalLM& model, optim::Optimizer& optimizer, BatchSampler& sampler, Device device,
          dist::Communicator& comm, TrainerOptions options, RunIdentity identity, std::function<double()> evaluate);

  // Runs the remaining steps (all of them, or those after the checkpoint it resumed from), filling the
  // report's losses, step times and communication figures. Throws Interrupted, or lora::Error.
  void run(ModeReport& report);

 private:
  void save_checkpoint(const ModeReport& report);

  models::CausalLM& model_;
  optim::Optimizer& optimizer_;
  BatchSampler& sampler_;
  Device device_;
  dist::Communicator& comm_;
  TrainerOptions options_;
  RunIdentity identity_;
  std::function<double()> evaluate_;
  std::vector<std::string> names_;  // the trainable parameters' names, in the optimizer's order
  dist::GradientReducer reducer_;
  TrainingProgress progress_;
};

}  // namespace lora::tools
