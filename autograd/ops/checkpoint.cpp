// Activation checkpointing (autograd/checkpoint.h): the forward pass runs fn without recording and saves
// only x; backward recomputes fn(x) on a tape of its own and backpropagates through it.
#include "autograd/checkpoint.h"

#include "autograd/grad_mode.h"
#include "autograd/ops/op_utils.h"
#include "autograd/tape_guard.h"

namespace lora::autograd {
namespace {

LORA_REGISTER_OP(checkpoint_op, "checkpoint");

thread_local bool t_checkpoint_enabled = false;

// Grad mode on for a scope (backward runs under NoGradGuard; the recomputation must record).
class EnableGrad {
 public:
  EnableGrad() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(true); }
  ~EnableGrad() { GradMode::set_enabled(previous_); }

 private:
  bool previous_;
};

}  // namespace

bool CheckpointMode::is_enabled() {
  return t_checkpoint_enabled;
}
void CheckpointMode::set_enabled(bool enabled) {
  t_checkpoint_enabled = enabled;
}

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x, const std::vector<Tensor>& params,
                  const std::vector<uint64_t*>& rng_counters) {
  bool needs_grad = x.requires_grad();
  for (const Tensor& p : params) needs_grad = needs_grad || p.requires_grad();
  if (!GradMode::is_enabled() || !needs_grad) return fn(x);

  std::vector<uint64_t> streams_at_forward;
  for (const uint64_t* c : rng_counters) streams_at_forward.push_back(*c);
  Tensor y;
  {
    NoGradGuard no_grad;  // nothing inside is recorded, so nothing inside is saved
    y = fn(x);
  }
  std::vector<Tensor> inputs = {x};
  inputs.insert(inputs.end(), params.begin(), params.end());
  OpRecord rec(checkpoint_op(), inputs);
  if (!rec) return y;
  const Tensor x_saved = rec.save(x);  // the block's input: all that stays for backward
  rec.finish(y, [fn, x_saved, rng_counters, streams_at_forward](const Tensor& g, GradSink& grads) {
    // The recomputation draws what the forward pass drew; the streams then go on from where they are now.
    std::vector<uint64_t> streams_now;
    for (size_t i = 0; i < rng_counters.size(); ++i) {
      streams_now.push_back(*rng_counters[i]);
      *rng_counters[i] = streams_at_forward[i];
    }
    Tensor x_leaf = x_saved.detach();
    if (grads.needs_grad(0)) x_leaf.set_requires_grad(true);
    {
      Tape tape;
      TapeGuard own_tape(tape);
      // The outer backward reports the parameters' gradients as complete after this node has run.
      GradReadyHookGuard no_hook(nullptr);
      Tensor y_again;
      {
        EnableGrad record;
        y_again = fn(x_leaf);
      }
      for (size_t i = 0; i < rng_counters.size(); ++i) *rng_counters[i] = streams_now[i];
      // Parameters get their gradients added into .grad here, in the order the plain backward adds them.
      backward(y_again, g);
    }
    if (grads.needs_grad(0)) {
      // The inner backward charged the input's gradient as a leaf's (Gradient); it is an activation's gradient
      // (one block input at a time, so the Gradient peak grows by at most that).
      Tensor gx = x_leaf.grad();
      gx.storage()->recharge(MemoryCategory::Workspace);
      grads.set(0, gx);
    }
  });
  return y;
}

}  // namespace lora::autograd
