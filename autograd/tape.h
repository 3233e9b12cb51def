// The tape: reverse-mode autodiff as a list of nodes in execution order, one tape per thread.
//
// An op records a node only when grad mode is on and some input requires a gradient. A node keeps the
// identity of its inputs and output (ids, not data), its backward function, and the tensors it saved.
// It saves only what the gradients of the inputs that need them require (see OpRecord::needs_grad):
// a frozen weight costs no saved activation and no gradient computation.
//
// backward(root) walks the nodes in reverse once, accumulates gradients of leaves into .grad with +=,
// frees each node as soon as it has run, and leaves the tape empty.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "autograd/op_registry.h"
#include "core/tensor.h"

namespace lora::autograd {

// Gradients a backward function produces: one slot per input of the op.
class GradSink {
 public:
  explicit GradSink(std::vector<bool> needs) : needs_(std::move(needs)), grads_(needs_.size()) {}
  bool needs_grad(size_t input) const { return needs_[input]; }
  // Sets the gradient of an input that needs one (same shape as that input).
  void set(size_t input, Tensor grad) { grads_[input] = std::move(grad); }
  Tensor& operator[](size_t input) { return grads_[input]; }
  size_t size() const { return grads_.size(); }

 private:
  std::vector<bool> needs_;
  std::vector<Tensor> grads_;
};

using BackwardFn = std::function<void(const Tensor& grad_output, GradSink& grads)>;

struct NodeInput {
  uint64_t id = 0;
  bool is_leaf = true;
  bool needs_grad = false;
  Shape shape;
  std::weak_ptr<TensorImpl> leaf;  // set for leaves that need a gradient: where .grad accumulates
};

struct Node {
  Node() = default;
  Node(Node&&) noexcept = default;  // the moved-from node holds nothing
  Node& operator=(Node&&) = delete;
  Node(const Node&) = delete;
  ~Node() { release(); }

  const OpDef* op = nullptr;  // the registered op that recorded it
  uint64_t output_id = 0;
  Shape output_shape;
  std::vector<NodeInput> inputs;
  std::vector<Tensor> saved;  // what backward keeps alive (for accounting and tests; the closure holds them too)
  BackwardFn backward;

  size_t saved_bytes() const;
  // Releases what the node saved. A saved storage goes back from Activation to the Workspace category when
  // no other node still holds it (Storage::tape_saves), for whoever else keeps it alive.
  void release();
};

class Tape {
 public:
  static Tape& current();  // this thread's tape
  void push(Node node) { nodes_.push_back(std::move(node)); }
  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }
  size_t size() const { return nodes_.size(); }
  // Drops every node and what it saved (for instance after a forward pass whose backward is not wanted).
  void clear();

 private:
  std::vector<Node> nodes_;
};

// How an op records itself (exp_op() is its registered definition: LORA_REGISTER_OP, op_registry.h):
//
//   Tensor y = ...forward...;
//   if (OpRecord rec(exp_op(), {x}); rec) {
//     Tensor y_saved = rec.save(y);                          // only what backward needs
//     rec.finish(y, [y_saved](const Tensor& gy, GradSink& g) { g.set(0, gy * y_saved); });
//   }
class OpRecord {
 public:
  OpRecord(const OpDef& op, std::initializer_list<Tensor> inputs);
  OpRecord(const OpDef& op, const std::vector<Tensor>& inputs);
  OpRecord(const OpRecord&) = delete;
  OpRecord& operator=(const OpRecord&) = delete;
  ~OpRecord();  // an op that throws between save() and finish() gives back what it saved
  explicit operator bool() const { return active_; }
  bool needs_grad(size_t input) const { return active_ && node_.inputs[input].needs_grad; }
  // Keeps `t` for backward. Its storage is charged to the Activation category while any node of the tape
  // holds it (parameters keep their own category: saving a weight costs no extra memory).
  Tensor save(const Tensor& t);
  // Marks `output` as produced by this op (requires_grad, not a leaf) and pushes the node.
  void finish(Tensor& output, BackwardFn backward);

 private:
  void init(const OpDef& op, const Tensor* inputs, size_t count);
  bool active_ = false;
  Node node_;
};

// Called by backward() on its thread when a leaf's gradient is complete: every node that adds to it has
// run (or was skipped as not leading to the root). Data parallelism uses it to all-reduce a bucket of
// gradients while backward goes on with the rest. Empty: none (and backward does no bookkeeping for it).
using GradReadyHook = std::function<void(const TensorImpl& leaf)>;

// Installs a hook on this thread for its lifetime (the previous one is restored after).
class GradReadyHookGuard {
 public:
  explicit GradReadyHookGuard(GradReadyHook hook);
  ~GradReadyHookGuard();
  GradReadyHookGuard(const GradReadyHookGuard&) = delete;
  GradReadyHookGuard& operator=(const GradReadyHookGuard&) = delete;

 private:
  GradReadyHook previous_;
};

// Runs reverse-mode differentiation from `root`. Without `grad_root`, root must hold one element
// (a loss) and is seeded with 1. Leaves that require a gradient get it added into .grad (allocated in
// the Gradient category on first use). The tape is empty afterwards.
void backward(const Tensor& root, const Tensor& grad_root = Tensor());

}  // namespace lora::autograd

namespace lora {
using autograd::backward;
}
