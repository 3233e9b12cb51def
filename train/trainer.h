// Trainer: the fine-tuning loop that programs share. Each step:
//
//   lr = schedule(step);  micro-batches = grad_accum x source.next()     (this rank's shard in a job)
//   train_step(model, optimizer, micro-batches)                          (train/train_step.h)
//   a non-finite step stops training with an error naming the step, or is skipped (--skip-nonfinite)
//
// around which it prints progress (epoch, loss, tokens/s, examples/s, ETA), evaluates on held-out data
// every N steps (stopping early when the held-out loss has not improved for N evaluations, and giving the
// model back its best weights at the end), prints greedy samples, writes one JSON line per step and per
// evaluation to a log, writes resumable checkpoints (train/checkpoint.h) and stops cleanly on
// SIGINT/SIGTERM after saving one. In a data-parallel job every rank runs the same loop on its own shard
// and takes the same step; only rank 0 prints, evaluates, logs and saves.
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "dist/gradient_reducer.h"
#include "models/causal_lm.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "train/batch_source.h"
#include "train/checkpoint.h"
#include "train/train_step.h"

namespace lora::train {

struct TrainerOptions {
  int64_t steps = 1;       // optimizer steps in all
  int64_t grad_accum = 1;  // micro-batches per step
  optim::LRSchedule schedule;
  StepSettings step;                // gradient clipping
  bool skip_nonfinite = false;      // skip a non-finite step (counted) instead of stopping
  int64_t eval_every = 0;           // held-out evaluation every N steps (0: none during training)
  int64_t early_stop_patience = 0;  // stop after N evaluations without a better held-out loss (0: never)
  int64_t sample_every = 0;         // a greedy sample every N steps (0: none)
  std::string checkpoint_dir;       // where checkpoints go ("" : none, not even on interruption)
  int64_t save_every = 0;           // a checkpoint every N steps (0: only when interrupted)
  int keep_checkpoints = 2;
  std::string resume_dir;  // continue from its newest checkpoint
  std::string log_path;    // JSON lines, one per step and per evaluation ("": no log)
};

// What the program supplies; each may be empty. Called on rank 0 only.
struct TrainerCallbacks {
  std::function<double()> evaluate;     // the held-out loss
  std::function<std::string()> sample;  // a greedy continuation of the sample prompt
};

// What a run measured (rank 0's view; losses are every rank's together).
struct TrainingRecord {
  std::vector<double> losses;                     // per step, resumed steps included
  std::vector<double> step_times_s;               // per step of this process (not of resumed steps)
  std::vector<std::pair<int64_t, double>> evals;  // (step, held-out loss), resumed ones included
  int64_t steps_done = 0, skipped_steps = 0;
  bool stopped_early = false;
  int64_t best_step = 0;  // the step of the best held-out loss (early stopping), 0: none
  double best_eval = 0;
  double epochs = 0;  // epochs of the training data read by the end
  // This process's batches: sequences, positions, padded positions and trained tokens (all ranks).
  int64_t sequences = 0, positions = 0, padding = 0, trained_tokens = 0;
  // Data parallelism (ranks > 1): the engine, gradient bytes all-reduced per step, buckets, the median
  // time per step inside the all-reduce calls and the share of it hidden behind backward.
  int ranks = 1;
  std::string comm_engine;
  int64_t allreduce_bytes_per_step = 0, comm_buckets = 0;
  double comm_seconds_per_step = 0, comm_hidden_share = 0;

  double padding_share() const { return positions > 0 ? double(padding) / double(positions) : 0.0; }
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
  // `identity` is checked against and written into checkpoints.
  Trainer(models::CausalLM& model, optim::Optimizer& optimizer, BatchSource& source, Device device,
          dist::Communicator& comm, TrainerOptions options, RunIdentity identity, TrainerCallbacks callbacks = {});
  ~Trainer();

  // Runs the remaining steps (all of them, or those after the checkpoint it resumed from). With early
  // stopping, the model holds its best weights when this returns. Throws Interrupted, or lora::Error.
  TrainingRecord run();

 private:
  void resume();
  void save_checkpoint();
  void evaluate(int64_t step);
  void log_line(const nlohmann::json& line);

  models::CausalLM& model_;
  optim::Optimizer& optimizer_;
  BatchSource& source_;
  Device device_;
  dist::Communicator& comm_;
  TrainerOptions options_;
  RunIdentity identity_;
  TrainerCallbacks callbacks_;
  std::unique_ptr<dist::GradientReducer> reducer_;  // data-parallel jobs only
  TrainingProgress progress_;
  TrainingRecord record_;
  std::FILE* log_ = nullptr;
};

}  // namespace lora::train
