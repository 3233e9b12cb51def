// Trainer: the shared fine-tuning loop (see trainer.h).
#include "train/trainer.h"
#include "core/json.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "autograd/grad_mode.h"
#include "core/atomic_file.h"
#include "core/files.h"
#include "core/memory.h"
#include "core/stopwatch.h"
#include "train/interrupt.h"

namespace lora::train {
namespace {

// A JSON number for a figure that may be inf or nan (which JSON cannot hold): null then.
nlohmann::json number(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json();
}

// Keeps the lines of a log written up to `step` (a resumed run rewrites what followed its checkpoint).
void truncate_log(const std::string& path, int64_t step) {
  if (!is_regular_file(path)) return;
  std::ifstream in(path);
  std::vector<std::string> kept;
  for (std::string line; std::getline(in, line);) {
    try {
      const auto j = parse_json(line, "log line");
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step) {
        kept.push_back(line);
      }
    } catch (const Error&) {
      // a line cut short by a kill: dropped
    }
  }
  write_file_atomically(path, [&](std::ostream& out) {
    for (const std::string& line : kept) out << line << "\n";
  });
}

}  // namespace

Trainer::Trainer(models::CausalLM& model, optim::Optimizer& optimizer, BatchSource& source, Device device,
                 dist::Communicator& comm, TrainerOptions options, RunIdentity identity, TrainerCallbacks callbacks)
    : model_(model),
      optimizer_(optimizer),
      source_(source),
      device_(device),
      comm_(comm),
      options_(std::move(options)),
      identity_(std::move(identity)),
      callbacks_(std::move(callbacks)) {
  options_.schedule.validate();
  LORA_CHECK(options_.steps >= 1, "training needs at least one step (got {})", options_.steps);
  LORA_CHECK(options_.grad_accum >= 1, "--grad-accum {}: expected at least 1 micro-batch per step",
             options_.grad_accum);
  LORA_CHECK(options_.save_every == 0 || !options_.checkpoint_dir.empty(),
             "checkpoints every {} steps need a folder to write them into", options_.save_every);
  LORA_CHECK(options_.early_stop_patience == 0 || (options_.eval_every > 0 && callbacks_.evaluate),
             "--early-stop-patience {} needs evaluations during training (--eval-every N and held-out data)",
             options_.early_stop_patience);
  LORA_CHECK(options_.sample_every == 0 || callbacks_.sample, "--sample-every {} needs a sample prompt",
             options_.sample_every);
  if (comm_.size() > 1) reducer_ = std::make_unique<dist::GradientReducer>(comm_, optimizer_.params());
}

Trainer::~Trainer() {
  if (log_) std::fclose(log_);
}

void Trainer::log_line(const nlohmann::json& line) {
  if (!log_) return;
  const std::string text = line.dump() + "\n";
  std::fwrite(text.data(), 1, text.size(), log_);
  std::fflush(log_);  // a run that dies leaves its log complete up to the last line
}

void Trainer::save_checkpoint() {
  if (comm_.rank() != 0) return;  // one writer; every rank resumes from the same files
  progress_.data = source_.state();
  progress_.losses = record_.losses;
  progress_.evals = record_.evals;
  const std::string path = save_training_checkpoint(options_.checkpoint_dir, model_, optimizer_, identity_, progress_,
                                                    options_.keep_checkpoints);
  fmt::print("checkpoint: {}\n", path);
}

void Trainer::resume() {
  const std::string checkpoint = latest_checkpoint(options_.resume_dir);
  LORA_CHECK(!checkpoint.empty(), "--resume '{}': no complete checkpoint (checkpoint-<step>/) in the folder",
             options_.resume_dir);
  progress_ = load_training_checkpoint(checkpoint, model_, optimizer_, identity_);
  source_.set_state(progress_.data);
  record_.losses = progress_.losses;
  record_.evals = progress_.evals;
  fmt::print("resumed from {} after step {} of {} (epoch {:.2f})\n", checkpoint, progress_.step, options_.steps,
             source_.epoch());
}

// The held-out loss at `step`; with early stopping, keeps the best weights and counts evaluations since.
void Trainer::evaluate(int64_t step) {
  const double loss = callbacks_.evaluate();
  record_.evals.emplace_back(step, loss);
  std::string note;
  if (progress_.best_step == 0 || loss < progress_.best_eval) {
    progress_.best_step = step;
    progress_.best_eval = loss;
    progress_.evals_since_best = 0;
    if (options_.early_stop_patience > 0) {
      NoGradGuard no_grad;
      progress_.best_weights.clear();
      for (const auto& [name, p] : model_.named_parameters(true))
        progress_.best_weights.emplace_back(name, p.to(Device::cpu()).clone());
      note = " (best so far)";
    }
  } else {
    ++progress_.evals_since_best;
    if (options_.early_stop_patience > 0) {
      note = fmt::format(" (best {:.4f} at step {}; {} of {} evaluations without improvement)", progress_.best_eval,
                         progress_.best_step, progress_.evals_since_best, options_.early_stop_patience);
    }
  }
  fmt::print("held-out loss at step {}: {:.4f}{}\n", step, loss, note);
  log_line({{"type", "eval"}, {"step", step}, {"epoch", source_.epoch()}, {"eval_loss", number(loss)}});
}

TrainingRecord Trainer::run() {
  if (!options_.resume_dir.empty()) resume();
  if (!options_.log_path.empty() && comm_.rank() == 0) {
    if (progress_.step > 0)
      truncate_log(options_.log_path, progress_.step);
    else
      std::filesystem::remove(options_.log_path);
    log_ = std::fopen(options_.log_path.c_str(), "a");
    LORA_CHECK(log_ != nullptr, "--log '{}': cannot write it", options_.log_path);
  }
  install_interrupt_handlers();

  MemoryTracker& tracker = MemoryTracker::instance();
  tracker.reset_peaks();  // the peaks of the training steps alone
  const auto t_start = std::chrono::steady_clock::now();
  const int64_t first_step = progress_.step;
  std::vector<double> comm_seconds, hidden_shares;
  for (int64_t step = first_step; step < options_.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    optimizer_.set_lr(options_.schedule.lr_at(step));
    std::vector<Batch> micro_batches;
    for (int64_t i = 0; i < options_.grad_accum; ++i) {
      micro_batches.push_back(source_.next(device_));
      record_.positions += micro_batches.back().positions();
      record_.padding += micro_batches.back().padding;
    }
    const StepResult result = train_step(model_, optimizer_, micro_batches, options_.step, reducer_.get());
    record_.sequences += result.sequences;
    record_.trained_tokens += result.trained_tokens;
    if (!result.applied) {
      // A non-finite value: stop, or skip the step. Every rank decides alike (it read averaged values).
      LORA_CHECK(options_.skip_nonfinite,
                 "step {}: {}; training stopped, no update was applied (--skip-nonfinite "
                 "skips such steps instead)",
                 step + 1, result.nonfinite);
      ++progress_.skipped_steps;
      fmt::print("step {:>4}/{} | skipped: {} ({} skipped so far)\n", step + 1, options_.steps, result.nonfinite,
                 progress_.skipped_steps);
    }
    const double dt = seconds_since(t0);
    record_.losses.push_back(result.loss);
    record_.step_times_s.push_back(dt);
    if (reducer_) {
      comm_seconds.push_back(reducer_->last_step().comm_seconds);
      hidden_shares.push_back(reducer_->last_step().hidden_share());
    }
    progress_.step = step + 1;
    // Tokens: every position the model read on every rank (padding included); trained: those the loss counts.
    const double positions = double(micro_batches.front().positions()) * double(options_.grad_accum * comm_.size());
    const double eta = seconds_since(t_start) / double(step + 1 - first_step) * double(options_.steps - step - 1);
    fmt::print(
        "step {:>4}/{} | epoch {:.2f} | loss {:.4f} | lr {:.2e} | {:.2f} s | {:.0f} tokens/s | {:.0f} trained "
        "tokens/s | {:.1f} examples/s | ETA {:.0f} s\n",
        step + 1, options_.steps, source_.epoch(), result.loss, optimizer_.lr(), dt, positions / dt,
        double(result.trained_tokens) / dt, double(result.sequences) / dt, eta);
    std::fflush(stdout);
    const DeviceMemoryStats memory = tracker.stats(device_);
    log_line({{"type", "step"},
              {"step", step + 1},
              {"epoch", source_.epoch()},
              {"loss", number(result.loss)},
              {"lr", optimizer_.lr()},
              {"grad_norm", number(result.grad_norm)},
              {"step_s", dt},
              {"tokens_per_s", positions / dt},
              {"trained_tokens_per_s", double(result.trained_tokens) / dt},
              {"examples_per_s", double(result.sequences) / dt},
              {"memory_bytes", memory.live.total()},
              {"peak_memory_bytes", memory.global_peak},
              {"skipped", !result.applied}});

    const bool last = step + 1 == options_.steps;
    bool stop_early = false;
    // With early stopping the last step is evaluated too, so that the best weights are chosen among all.
    const bool eval_now = options_.eval_every > 0 && callbacks_.evaluate &&
                          ((step + 1) % options_.eval_every == 0 || (last && options_.early_stop_patience > 0));
    if (eval_now) {
      if (comm_.rank() == 0) evaluate(step + 1);
      // Every rank stops after the same evaluation: rank 0's verdict, shared.
      const bool patience_out =
          options_.early_stop_patience > 0 && progress_.evals_since_best >= options_.early_stop_patience;
      stop_early = comm_.size() > 1 ? comm_.all_reduce_sum(patience_out ? 1.0 : 0.0) > 0 : patience_out;
    }
    if (options_.sample_every > 0 && (step + 1) % options_.sample_every == 0 && comm_.rank() == 0) {
      fmt::print("sample at step {}: {}\n", step + 1, callbacks_.sample());
      std::fflush(stdout);
    }
    // Every rank stops after the same step: a signal seen by any rank stops all of them.
    const int local = interrupt_signal();
    const int signal = comm_.size() > 1 ? (comm_.all_reduce_sum(double(local)) > 0 ? (local ? local : 15) : 0) : local;
    if (signal) {
      if (!options_.checkpoint_dir.empty()) {
        save_checkpoint();
        fmt::print("interrupted (signal {}) after step {}: resume with --resume {}\n", signal, progress_.step,
                   options_.checkpoint_dir);
      } else {
        fmt::print("interrupted (signal {}) after step {}: nothing saved (give --save DIR to keep checkpoints)\n",
                   signal, progress_.step);
      }
      std::fflush(stdout);
      throw Interrupted{signal};
    }
    if (stop_early) {
      record_.stopped_early = true;
      fmt::print(
          "early stop after step {}: the held-out loss has not improved for {} evaluations (best {:.4f} at step "
          "{})\n",
          step + 1, options_.early_stop_patience, progress_.best_eval, progress_.best_step);
      break;
    }
    if (options_.save_every > 0 && progress_.step % options_.save_every == 0 && progress_.step < options_.steps) {
      save_checkpoint();
    }
  }
  if (progress_.skipped_steps > 0) {
    fmt::print("{} of {} steps were skipped for non-finite values\n", progress_.skipped_steps, progress_.step);
  }
  // Early stopping keeps the best weights: every rank takes rank 0's copy.
  if (options_.early_stop_patience > 0 && progress_.best_step > 0 && progress_.best_step != progress_.step) {
    NoGradGuard no_grad;
    auto trainable = model_.named_parameters(true);
    for (size_t i = 0; i < trainable.size(); ++i) {
      if (comm_.rank() == 0) trainable[i].second.copy_from(progress_.best_weights.at(i).second);
      if (comm_.size() > 1) comm_.broadcast(trainable[i].second, 0);
    }
    fmt::print("kept the weights of step {} (held-out loss {:.4f})\n", progress_.best_step, progress_.best_eval);
  }
  record_.steps_done = progress_.step;
  record_.skipped_steps = progress_.skipped_steps;
  record_.best_step = progress_.best_step;
  record_.best_eval = progress_.best_eval;
  record_.epochs = source_.epoch();
  record_.ranks = comm_.size();
  if (reducer_) {
    record_.comm_engine = comm_.engine();
    record_.allreduce_bytes_per_step = reducer_->last_step().bytes;
    record_.comm_buckets = reducer_->num_buckets();
    record_.comm_seconds_per_step = median(comm_seconds);
    record_.comm_hidden_share = median(hidden_shares);
  }
  return record_;
}

}  // namespace lora::train
