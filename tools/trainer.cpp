// Trainer: the shared fine-tuning loop (see trainer.h).
#include "tools/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "autograd/tape.h"
#include "core/stopwatch.h"
#include "optim/clip.h"
#include "tools/fault_injection.h"
#include "tools/interrupt.h"

namespace lora::tools {
Trainer::Trainer(models::CausalLM& model, optim::Optimizer& optimizer, BatchSampler& sampler, Device device,
                 dist::Communicator& comm, TrainerOptions options, RunIdentity identity,
                 std::function<double()> evaluate)
    : model_(model), optimizer_(optimizer), sampler_(sampler), device_(device), comm_(comm),
      options_(std::move(options)), identity_(std::move(identity)), evaluate_(std::move(evaluate)),
      names_(optimizer.names()), reducer_(comm, optimizer.params()) {
  options_.schedule.validate();
  LORA_CHECK(options_.save_every == 0 || !options_.checkpoint_dir.empty(),
             "checkpoints every {} steps need a folder to write them into", options_.save_every);
}

void Trainer::save_checkpoint(const ModeReport& report) {
  if (comm_.rank() != 0) return;  // one writer; every rank resumes from the same files
  progress_.sampler = sampler_.state();
  progress_.losses = report.losses;
  const std::string path = save_training_checkpoint(options_.checkpoint_dir, model_, optimizer_, identity_, progress_,
                                                    options_.keep_checkpoints);
  fmt::print("checkpoint: {}\n", path);
}

void Trainer::run(ModeReport& report) {
  if (!options_.resume_dir.empty()) {
    const std::string checkpoint = latest_checkpoint(options_.resume_dir);
    LORA_CHECK(!checkpoint.empty(), "--resume '{}': no complete checkpoint (checkpoint-<step>/) in the folder",
               options_.resume_dir);
    progress_ = load_training_checkpoint(checkpoint, model_, optimizer_, identity_);
    sampler_.set_state(progress_.sampler);
    report.losses = progress_.losses;
    fmt::print("resumed from {} after step {} of {}\n", checkpoint, progress_.step, options_.steps);
  }
  install_interrupt_handlers();

  MemoryTracker::instance().reset_peaks();  // the peaks of the training steps alone
  const auto t_start = std::chrono::steady_clock::now();
  const int64_t first_step = progress_.step;
  std::vector<double> comm_seconds, hidden_shares;
  for (int64_t step = first_step; step < options_.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    Tensor x, y;
    sampler_.next_shard(x, y, device_, comm_.rank(), comm_.size());
    optimizer_.set_lr(options_.schedule.lr_at(step));
    Tensor loss = model_.loss(x, y);
    {
      // Each bucket of gradients is all-reduced on a background thread as soon as backward completes it.
      autograd::GradReadyHookGuard overlap([this](const TensorImpl& leaf) { reducer_.mark_ready(leaf); });
      backward(loss);
    }
    reducer_.finish();  // every rank now holds the average gradient
    tools::fault_point("train-step");
    const double loss_value = comm_.all_reduce_sum(loss.item()) / comm_.size();
    // A non-finite loss or gradient would poison the weights and the moments: stop, or skip the step. The
    // decision is the same on every rank: it reads averaged values.
    const double norm = optim::grad_norm(optimizer_.params());
    if (!std::isfinite(loss_value) || !std::isfinite(norm)) {
      const int64_t bad = optim::first_nonfinite_gradient(optimizer_.params());
      const std::string what = !std::isfinite(loss_value) ? fmt::format("the loss is {}", loss_value)
                               : bad >= 0 ? fmt::format("the gradient of '{}' is not finite", names_[bad])
                                          : fmt::format("the gradient norm is {}", norm);
      LORA_CHECK(options_.skip_nonfinite, "step {}: {}; training stopped, no update was applied (--skip-nonfinite "
                 "skips such steps instead)", step + 1, what);
      optimizer_.zero_grad();
      ++progress_.skipped_steps;
      fmt::print("step {:>4}/{} | skipped: {} ({} skipped so far)\n", step + 1, options_.steps, what,
                 progress_.skipped_steps);
    } else {
      if (options_.grad_clip > 0) optim::clip_grad_norm(optimizer_.params(), options_.grad_clip, true, names_);
      optimizer_.step();
      optimizer_.zero_grad();
    }
    const double dt = seconds_since(t0);
    report.losses.push_back(loss_value);
    report.step_times_s.push_back(dt);
    if (comm_.size() > 1) {
      comm_seconds.push_back(reducer_.last_step().comm_seconds);
      hidden_shares.push_back(reducer_.last_step().hidden_share());
    }
    progress_.step = step + 1;
    const double eta = seconds_since(t_start) / double(step + 1 - first_step) * double(options_.steps - step - 1);
    fmt::print("step {:>4}/{} | loss {:.4f} | lr {:.2e} | {:.2f} s | {:.0f} tokens/s | ETA {:.0f} s\n", step + 1,
               options_.steps, loss_value, optimizer_.lr(), dt, double(options_.tokens_per_step) / dt, eta);
    std::fflush(stdout);
    if (options_.eval_every > 0 && (step + 1) % options_.eval_every == 0 && step + 1 < options_.steps &&
        comm_.rank() == 0) {
      fmt::print("held-out loss: {:.4f}\n", evaluate_());
    }
    // Every rank stops after the same step: a signal seen by any rank stops all of them.
    const int local = interrupt_signal();
    const int signal = comm_.size() > 1 ? (comm_.all_reduce_sum(double(local)) > 0 ? (local ? local : 15) : 0) : local;
    if (signal) {
      if (!options_.checkpoint_dir.empty()) {
        save_checkpoint(report);
        fmt::print("interrupted (signal {}) after step {}: resume with --resume {}\n", signal, progress_.step,
                   options_.checkpoint_dir);
      } else {
        fmt::print("interrupted (signal {}) after step {}: nothing saved (give --save DIR to keep checkpoints)\n",
                   signal, progress_.step);
      }
      std::fflush(stdout);
      throw Interrupted{signal};
    }
    if (options_.save_every > 0 && progress_.step % options_.save_every == 0 && progress_.step < options_.steps) {
      save_checkpoint(report);
    }
  }
  if (progress_.skipped_steps > 0) {
    fmt::print("{} of {} steps were skipped for non-finite values\n", progress_.skipped_steps, options_.steps);
  }
  report.skipped_steps = progress_.skipped_steps;
  report.ranks = comm_.size();
  if (comm_.size() > 1) {
    report.comm_engine = comm_.engine();
    report.allreduce_bytes_per_step = reducer_.last_step().bytes;
    report.comm_buckets = reducer_.num_buckets();
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.empty() ? 0.0 : v[v.size() / 2];
    };
    report.comm_seconds_per_step = median(comm_seconds);
    report.comm_hidden_share = median(hidden_shares);
  }
}

}  // namespace lora::tools
