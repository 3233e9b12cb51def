// The tape, op recording, and the backward pass.
#include "autograd/tape.h"
#include "autograd/tape_guard.h"

#include <unordered_map>

#include "autograd/grad_mode.h"
#include "backends/backend.h"

namespace lora::autograd {

// ---------------------------------------------------------------------------------------------------
// Node and Tape

size_t Node::saved_bytes() const {
  size_t bytes = 0;
  for (const Tensor& t : saved) bytes += t.nbytes();
  return bytes;
}

void Node::release() {
  for (Tensor& t : saved) {
    // When no node needs it any more, whoever else holds it holds ordinary working memory.
    Storage& s = *t.storage();
    if (s.remove_tape_save() == 0 && s.category() == MemoryCategory::Activation) s.recharge(MemoryCategory::Workspace);
  }
  saved.clear();
  backward = nullptr;  // drops the closure's copies of the saved tensors
}

namespace {
thread_local Tape t_default_tape;
thread_local Tape* t_current_tape = nullptr;  // null: the thread's own tape
}  // namespace

Tape& Tape::current() {
  return t_current_tape ? *t_current_tape : t_default_tape;
}

TapeGuard::TapeGuard(Tape& tape) : previous_(t_current_tape) {
  t_current_tape = &tape;
}
TapeGuard::~TapeGuard() {
  t_current_tape = previous_;
}

void Tape::clear() {
  for (Node& n : nodes_) n.release();
  nodes_.clear();
}

// ---------------------------------------------------------------------------------------------------
// OpRecord

OpRecord::OpRecord(const OpDef& op, std::initializer_list<Tensor> inputs) {
  init(op, inputs.begin(), inputs.size());
}
OpRecord::OpRecord(const OpDef& op, const std::vector<Tensor>& inputs) {
  init(op, inputs.data(), inputs.size());
}

void OpRecord::init(const OpDef& op, const Tensor* inputs, size_t count) {
  if (!GradMode::is_enabled()) return;
  bool any = false;
  for (size_t i = 0; i < count; ++i) any = any || inputs[i].requires_grad();
  if (!any) return;
  active_ = true;
  node_.op = &op;
  node_.inputs.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const Tensor& t = inputs[i];
    NodeInput& in = node_.inputs[i];
    in.needs_grad = t.requires_grad();
    if (!t.defined()) continue;
    in.id = t.impl()->id;
    in.is_leaf = t.is_leaf();
    in.shape = t.shape();
    if (in.needs_grad && in.is_leaf) in.leaf = t.impl_ptr();
  }
}

OpRecord::~OpRecord() {
  if (active_) node_.release();
}

Tensor OpRecord::save(const Tensor& t) {
  if (!active_ || !t.defined()) return t;
  Storage& s = *t.storage();
  s.add_tape_save();
  if (s.category() == MemoryCategory::Workspace) s.recharge(MemoryCategory::Activation);
  node_.saved.push_back(t);
  return t;
}

void OpRecord::finish(Tensor& output, BackwardFn backward) {
  if (!active_) return;
  output.impl()->requires_grad = true;
  output.impl()->is_leaf = false;
  node_.output_id = output.impl()->id;
  node_.output_shape = output.shape();
  node_.backward = std::move(backward);
  Tape::current().push(std::move(node_));
  active_ = false;
}

// ---------------------------------------------------------------------------------------------------
// backward

namespace {

// True when `t` is the only handle to its storage, so it may be modified in place or adopted.
bool sole_owner(const Tensor& t) {
  return t.impl_ptr().use_count() == 1 && t.storage().use_count() == 1 && t.storage()->nbytes() == t.nbytes();
}

// acc += g, in place when nobody else sees acc, otherwise into a fresh tensor.
void accumulate(Tensor& acc, const Tensor& g) {
  if (sole_owner(acc)) {
    backend_for(g).binary(BinaryOp::Add, acc, g, acc);
  } else {
    Tensor sum = Tensor::empty(acc.shape(), acc.dtype(), acc.device(), acc.storage()->category());
    backend_for(g).binary(BinaryOp::Add, acc, g, sum);
    acc = sum;
  }
}

// leaf.grad += grad. The first gradient is adopted when nobody else holds it, else copied; either way
// it is charged to the Gradient category.
void accumulate_into_leaf(TensorImpl& leaf, Tensor grad) {
  if (leaf.grad.defined()) {
    accumulate(leaf.grad, grad);
    return;
  }
  if (!sole_owner(grad)) {
    Tensor copy = Tensor::empty(grad.shape(), grad.dtype(), grad.device(), MemoryCategory::Gradient);
    copy.copy_from(grad);
    grad = copy;
  }
  grad.storage()->recharge(MemoryCategory::Gradient);
  grad.impl()->requires_grad = false;
  grad.impl()->is_leaf = true;
  leaf.grad = std::move(grad);
}

}  // namespace

namespace {
thread_local GradReadyHook t_grad_ready_hook;
}  // namespace

GradReadyHookGuard::GradReadyHookGuard(GradReadyHook hook) : previous_(std::move(t_grad_ready_hook)) {
  t_grad_ready_hook = std::move(hook);
}
GradReadyHookGuard::~GradReadyHookGuard() {
  t_grad_ready_hook = std::move(previous_);
}

void backward(const Tensor& root, const Tensor& grad_root) {
  LORA_CHECK(root.defined(), "backward: the root tensor is undefined");
  LORA_CHECK(root.requires_grad(),
             "backward: the root tensor does not require a gradient (was it computed under NoGradGuard, or from "
             "inputs that do not require gradients?)");
  Tensor seed = grad_root;
  if (!seed.defined()) {
    LORA_CHECK(root.numel() == 1,
               "backward: the root has shape {}; backward without a seed gradient needs a one-element tensor (a loss)",
               root.shape().str());
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  LORA_CHECK(seed.shape() == root.shape(), "backward: seed gradient shape {} does not match root shape {}",
             seed.shape().str(), root.shape().str());

  NoGradGuard no_grad;  // backward functions use kernels directly; nothing they do is recorded
  Tape& tape = Tape::current();
  if (root.is_leaf()) {
    accumulate_into_leaf(*root.impl(), std::move(seed));
    tape.clear();
    return;
  }

  // Gradients of non-leaf tensors, by tensor id, held only until the node that produced them has run.
  std::unordered_map<uint64_t, Tensor> pending;
  pending.emplace(root.impl()->id, seed);

  // With a grad-ready hook: how many nodes still hold each leaf that needs a gradient; at zero its gradient
  // is complete.
  std::vector<Node>& nodes = tape.nodes();
  std::unordered_map<const TensorImpl*, size_t> uses;
  if (t_grad_ready_hook) {
    for (const Node& node : nodes) {
      for (const NodeInput& in : node.inputs) {
        if (in.needs_grad && in.is_leaf) {
          if (auto leaf = in.leaf.lock()) ++uses[leaf.get()];
        }
      }
    }
  }
  auto used = [&](const Node& node) {
    if (!t_grad_ready_hook) return;
    for (const NodeInput& in : node.inputs) {
      if (!in.needs_grad || !in.is_leaf) continue;
      auto leaf = in.leaf.lock();
      if (!leaf) continue;
      auto u = uses.find(leaf.get());
      if (u != uses.end() && --u->second == 0) t_grad_ready_hook(*leaf);
    }
  };

  for (size_t i = nodes.size(); i-- > 0;) {
    Node& node = nodes[i];
    auto it = pending.find(node.output_id);
    if (it == pending.end()) {  // this node does not lead to the root
      node.release();
      used(node);
      continue;
    }
    Tensor grad_output = std::move(it->second);
    pending.erase(it);

    std::vector<bool> needs(node.inputs.size());
    for (size_t j = 0; j < needs.size(); ++j) needs[j] = node.inputs[j].needs_grad;
    GradSink sink(std::move(needs));
    node.backward(grad_output, sink);
    grad_output = Tensor();
    node.release();

    for (size_t j = 0; j < node.inputs.size(); ++j) {
      const NodeInput& in = node.inputs[j];
      Tensor& g = sink[j];
      if (!in.needs_grad || !g.defined()) continue;
      LORA_CHECK(g.shape() == in.shape, "backward of {}: gradient of input {} has shape {}, expected {}",
                 node.op->name(), j, g.shape().str(), in.shape.str());
      Tensor grad = std::move(g);
      if (in.is_leaf) {
        if (auto leaf = in.leaf.lock()) accumulate_into_leaf(*leaf, std::move(grad));
      } else {
        auto [slot, inserted] = pending.try_emplace(in.id, grad);
        if (!inserted) accumulate(slot->second, grad);
      }
    }
    used(node);
  }
  tape.clear();
}

}  // namespace lora::autograd
