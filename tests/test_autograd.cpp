// Tests of the tape: what is recorded and saved, gradient accumulation, errors, and memory categories.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "tests/test_helpers.h"

using namespace lora;
using autograd::Tape;

TEST_CASE("nodes are recorded only in grad mode and when an input requires grad", "[autograd]") {
  Tape::current().clear();
  Tensor a = Tensor::ones({3});
  Tensor b = Tensor::ones({3});
  Tensor c = a + b;
  REQUIRE(Tape::current().size() == 0);
  REQUIRE_FALSE(c.requires_grad());

  a.set_requires_grad(true);
  {
    NoGradGuard no_grad;
    Tensor d = a + b;
    REQUIRE(Tape::current().size() == 0);
    REQUIRE_FALSE(d.requires_grad());
  }
  Tensor e = a + b;
  REQUIRE(Tape::current().size() == 1);
  REQUIRE(e.requires_grad());
  REQUIRE_FALSE(e.is_leaf());
  Tape::current().clear();
}

TEST_CASE("backward accumulates into leaves, frees the tape, and adds across calls", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3});
  x.set_requires_grad(true);
  Tensor loss = ops::sum(ops::mul(x, x));  // d/dx sum x^2 = 2x
  backward(loss);
  REQUIRE(Tape::current().size() == 0);
  testing::require_close(x.grad(), std::vector<double>{2, 4, 6});

  Tensor loss2 = ops::sum(ops::mul_scalar(x, 3.0));  // + 3
  backward(loss2);
  testing::require_close(x.grad(), std::vector<double>{5, 7, 9});
}

TEST_CASE("a tensor used twice gets both gradient contributions", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, -2}, {2});
  x.set_requires_grad(true);
  Tensor y = ops::add(x, x);  // the same gradient handle flows to both inputs
  Tensor z = ops::mul(y, x);  // z = 2 x^2, dz/dx = 4x
  backward(ops::sum(z));
  testing::require_close(x.grad(), std::vector<double>{4, -8});
}

TEST_CASE("backward on a non-scalar needs a seed gradient", "[autograd]") {
  Tensor x = Tensor::ones({2, 2});
  x.set_requires_grad(true);
  Tensor y = ops::mul_scalar(x, 2.0);
  REQUIRE_THROWS_WITH(backward(y), Catch::Contains("seed") && Catch::Contains("[2, 2]"));
  backward(y, Tensor::full({2, 2}, 0.5));
  testing::require_close(x.grad(), std::vector<double>{1, 1, 1, 1});
  Tensor no_grad = Tensor::ones({1});
  REQUIRE_THROWS_AS(backward(no_grad), Error);
}

TEST_CASE("a matmul against a frozen weight saves nothing for the weight and computes no weight gradient",
          "[autograd][memory]") {
  Tape::current().clear();
  Generator gen(1);
  Tensor w = Tensor::randn({4, 3}, gen, 0, 1, DType::F32, Device::cpu());  // frozen: requires_grad false
  Tensor x = Tensor::randn({5, 4}, gen);
  x.set_requires_grad(true);
  Tensor y = ops::matmul(x, w);  // [5, 3]

  const auto& node = Tape::current().nodes().back();
  REQUIRE(node.op->name() == "matmul");
  // Only w is kept (to compute dx); x would only be needed for dW, which nobody wants.
  REQUIRE(node.saved.size() == 1);
  REQUIRE(node.saved[0].storage() == w.storage());
  REQUIRE_FALSE(node.inputs[1].needs_grad);

  backward(ops::sum(y));
  REQUIRE(x.grad().defined());
  REQUIRE_FALSE(w.grad().defined());

  // And the other way round: a trainable weight with a constant input saves only the input.
  Tensor w2 = Tensor::randn({4, 3}, gen);
  w2.set_requires_grad(true);
  Tensor x2 = Tensor::randn({5, 4}, gen);
  Tensor y2 = ops::linear(x2, ops::transpose(w2, 0, 1));
  const auto& node2 = Tape::current().nodes().back();
  REQUIRE(node2.op->name() == "linear");
  REQUIRE(node2.saved.size() == 1);
  REQUIRE(node2.saved[0].storage() == x2.storage());
  Tape::current().clear();
}

TEST_CASE("saved activations are charged to the activation category and released by backward", "[autograd][memory]") {
  Tape::current().clear();
  auto& tracker = MemoryTracker::instance();
  const int64_t act0 = tracker.live(MemoryCategory::Activation);
  Tensor x = Tensor::ones({256});
  x.set_requires_grad(true);
  Tensor y = ops::tanh(x);  // saves y: 1 KiB
  REQUIRE(tracker.live(MemoryCategory::Activation) == act0 + 1024);
  Tensor z = ops::sum(y);
  backward(z);
  REQUIRE(tracker.live(MemoryCategory::Activation) == act0);
  // y is still held here: it went back to working memory.
  REQUIRE(y.storage()->category() == MemoryCategory::Workspace);
  // The leaf's gradient is gradient memory.
  REQUIRE(x.grad().storage()->category() == MemoryCategory::Gradient);
}

TEST_CASE("a storage saved by two nodes stays an activation until both have let go", "[autograd][memory]") {
  Tape::current().clear();
  auto& tracker = MemoryTracker::instance();
  const int64_t act0 = tracker.live(MemoryCategory::Activation);
  Tensor x = Tensor::full({256}, 0.5);
  x.set_requires_grad(true);
  Tensor h = ops::exp(x);     // node 0 saves its output h (1 KiB)
  Tensor a = ops::square(h);  // node 1 saves its input h: the same storage
  Tensor b = ops::log(h);     // node 2 saves h too
  REQUIRE(Tape::current().size() == 3);
  REQUIRE(h.storage()->tape_saves() == 3);
  REQUIRE(tracker.live(MemoryCategory::Activation) == act0 + 1024);  // charged once

  Tape::current().nodes()[1].release();  // as backward does after running node 1
  CHECK(h.storage()->category() == MemoryCategory::Activation);
  CHECK(tracker.live(MemoryCategory::Activation) == act0 + 1024);
  Tape::current().nodes()[2].release();
  CHECK(h.storage()->category() == MemoryCategory::Activation);  // node 0 still holds h
  Tape::current().nodes()[0].release();
  CHECK(h.storage()->category() == MemoryCategory::Workspace);
  CHECK(h.storage()->tape_saves() == 0);
  CHECK(tracker.live(MemoryCategory::Activation) == act0);
  Tape::current().clear();
  CHECK(h.storage()->tape_saves() == 0);  // a released node gives nothing back twice

  // The same through backward: node 1 runs (and lets go) before node 0, which still needs h.
  Tensor y = ops::square(ops::exp(x));
  backward(ops::sum(y));
  CHECK(tracker.live(MemoryCategory::Activation) == act0);
  testing::require_close(x.grad(), std::vector<double>(256, 2.0 * std::exp(1.0)), 1e-6, 0);
}

TEST_CASE("an op that throws after saving gives back what it saved", "[autograd][memory]") {
  Tape::current().clear();
  auto& tracker = MemoryTracker::instance();
  const int64_t act0 = tracker.live(MemoryCategory::Activation);
  Tensor x = Tensor::ones({4, 8});
  x.set_requires_grad(true);
  // OpRecord driven directly: a record that saves and is never finished is what an op that throws leaves.
  Tensor h = ops::exp(x);
  Tape::current().clear();
  REQUIRE(h.storage()->tape_saves() == 0);
  {
    autograd::OpRecord rec(*autograd::find_op("mul"), {h});
    REQUIRE(rec);
    rec.save(h);
    CHECK(tracker.live(MemoryCategory::Activation) == act0 + 128);
  }  // never finished, as when the op throws
  CHECK(h.storage()->tape_saves() == 0);
  CHECK(tracker.live(MemoryCategory::Activation) == act0);
  CHECK(h.storage()->category() == MemoryCategory::Workspace);
}

TEST_CASE("gradients of leaves that do not require grad are never allocated", "[autograd][memory]") {
  auto& tracker = MemoryTracker::instance();
  const int64_t grad0 = tracker.live(MemoryCategory::Gradient);
  Tensor frozen = Tensor::ones({1000});
  Tensor trainable = Tensor::ones({10});
  trainable.set_requires_grad(true);
  backward(ops::sum(ops::mul(frozen, ops::sum(trainable))));
  REQUIRE_FALSE(frozen.grad().defined());
  REQUIRE(tracker.live(MemoryCategory::Gradient) == grad0 + 40);
}

TEST_CASE("the grad-ready hook reports each leaf once, when its gradient is complete, last layer first", "[autograd]") {
  // loss = sum((x * w1) * w2) + sum(x * w1): w1 is used twice, so it is complete only after both uses.
  Tensor x = Tensor::from_vector<double>({1, 2}, {2});
  Tensor w1 = Tensor::from_vector<double>({3, 4}, {2});
  Tensor w2 = Tensor::from_vector<double>({5, 6}, {2});
  Tensor unused = Tensor::from_vector<double>({7}, {1});
  for (Tensor* t : {&w1, &w2, &unused}) t->set_requires_grad(true);
  Tensor h = ops::mul(x, w1);
  Tensor loss = ops::add(ops::sum(ops::mul(h, w2)), ops::sum(h));
  Tensor dead = ops::mul_scalar(unused, 2.0);  // recorded, but does not lead to the loss

  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> grad_when_ready;
  {
    autograd::GradReadyHookGuard hook([&](const TensorImpl& leaf) {
      for (auto [name, w] : {std::pair{"w1", &w1}, std::pair{"w2", &w2}}) {
        if (&leaf != w->impl()) continue;
        order.push_back(name);
        grad_when_ready[name] = w->grad().to_vector<double>();
      }
      if (&leaf == unused.impl()) order.push_back("unused");
    });
    backward(loss);
  }
  // w2's only use is the last node recorded before the sums; w1 waits for both uses of h.
  REQUIRE(order.size() == 3);
  REQUIRE(std::count(order.begin(), order.end(), "w1") == 1);
  const auto w1_at = std::find(order.begin(), order.end(), "w1") - order.begin();
  const auto w2_at = std::find(order.begin(), order.end(), "w2") - order.begin();
  REQUIRE(w2_at < w1_at);
  // When reported, each gradient already holds its final value: d/dw1 = x * (w2 + 1), d/dw2 = x * w1.
  REQUIRE(grad_when_ready["w1"] == std::vector<double>{6, 14});
  REQUIRE(grad_when_ready["w2"] == std::vector<double>{3, 8});
  testing::require_close(w1.grad(), std::vector<double>{6, 14});

  // Without a hook installed (the guard restored the empty one), backward reports nothing.
  order.clear();
  backward(ops::sum(ops::mul(x, w2)));
  REQUIRE(order.empty());
}
