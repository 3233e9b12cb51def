// The exercises of docs/exercises.md: what each learner's solution must do. They pass against the reference
// solutions in exercises/; `bash scripts/exercise.sh start N` stubs one out and its [exercise-N] test fails
// until the learner writes it again.
#include <catch2/catch.hpp>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <vector>

#include "exercises/dora.h"
#include "exercises/lion.h"
#include "exercises/parallel_block.h"
#include "exercises/softplus.h"
#include "nn/lora/apply_lora.h"
#include "optim/adam.h"
#include "tests/op_cases.h"
#include "tests/test_helpers.h"

using namespace lora;
using namespace lora::testing;
using Catch::Matchers::Contains;

// ---------------------------------------------------------------------------------------------------
// Exercise 1: softplus, an op with its own node

// Its cases for the op registry (tests/test_op_registry.cpp), as every registered op has.
LORA_OP_CASES(softplus_cases) {
  const testing::OpFn f = [](const testing::Inputs& in) { return exercises::softplus(in[0]); };
  testing::gradcheck_case("softplus", "[3, 4], values of both signs", f, [] {
    Generator gen(41);
    return testing::Inputs{testing::uniform_leaf({3, 4}, gen, DType::F64, -4.0, 4.0)};
  });
  testing::parity_case("softplus", "[64, 33]", f, [] {
    Generator gen(42);
    return testing::Inputs{testing::uniform_leaf({64, 33}, gen, DType::F32, -6.0, 6.0)};
  });
}

TEST_CASE("exercise 1: softplus values, without overflow, in float64 and float32", "[exercise-1]") {
  const std::vector<double> xs = {-50, -20, -1, -1e-3, 0, 1e-3, 1, 20, 50, 100};
  auto reference = [](double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); };
  std::vector<double> expected;
  for (double x : xs) expected.push_back(reference(x));
  const int64_t n = static_cast<int64_t>(xs.size());
  // Relative to the value, or to 1 where the value is below the precision of 1 + e^-|x| (x << 0).
  require_close(exercises::softplus(Tensor::from_vector(xs, {n})), expected, 1e-12, 1e-15);
  std::vector<float> xf(xs.begin(), xs.end());  // log(1 + e^100) would be inf in float32
  require_close(exercises::softplus(Tensor::from_vector(xf, {n})), expected, 1e-6, 1e-7);
}

TEST_CASE("exercise 1: softplus' gradient is sigmoid (float64 gradcheck)", "[exercise-1]") {
  Generator gen(11);
  REQUIRE_GRADCHECK([](const std::vector<Tensor>& in) { return exercises::softplus(in[0]); },
                    {random_input({3, 5}, gen, -4.0, 4.0)});
  // And at the far ends, where 1 - e^-y must not lose it: sigmoid(-20) = 2.06e-9, sigmoid(20) = 1 - 2.06e-9.
  Tensor x = Tensor::from_vector(std::vector<double>{-20, 20}, {2});
  x.set_requires_grad(true);
  backward(ops::sum(exercises::softplus(x)));
  require_close(x.grad(), {1 / (1 + std::exp(20.0)), 1 / (1 + std::exp(-20.0))}, 1e-6, 0);
}

TEST_CASE("exercise 1: softplus records one node that saves one tensor, and nothing without a gradient",
          "[exercise-1]") {
  auto& tape = autograd::Tape::current();
  tape.clear();
  Tensor x = Tensor::ones({4, 3});
  exercises::softplus(x);
  CHECK(tape.size() == 0);  // x needs no gradient: nothing to record
  x.set_requires_grad(true);
  const Tensor y = exercises::softplus(x);
  REQUIRE(tape.size() == 1);
  CHECK(tape.nodes()[0].op->name() == "softplus");
  CHECK(tape.nodes()[0].saved.size() == 1);
  CHECK(tape.nodes()[0].saved_bytes() == x.nbytes());
  CHECK(y.requires_grad());
  tape.clear();
}

// ---------------------------------------------------------------------------------------------------
// Exercise 2: Lion

namespace {
Tensor leaf(std::vector<float> values) {
  Tensor t = Tensor::from_vector(values, {static_cast<int64_t>(values.size())});
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST_CASE("exercise 2: Lion's first three steps follow its update rule", "[exercise-2]") {
  const exercises::LionOptions o{.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .weight_decay = 0.5};
  Tensor p = leaf({1.0f, -2.0f, 0.5f, 3.0f});
  exercises::Lion lion({p}, o);
  const std::vector<std::vector<float>> grads = {
      {0.5f, -1.0f, 0.0f, 2.0f}, {-4.0f, 1.0f, 0.0f, -0.1f}, {-0.1f, -0.2f, 3.0f, 0.05f}};
  // The rule, written out in double: c = b1 m + (1 - b1) g; p -= lr (sign(c) + wd p); m = b2 m + (1 - b2) g.
  std::vector<double> ref_p = {1.0, -2.0, 0.5, 3.0}, ref_m(4, 0.0);
  for (const auto& g : grads) {
    p.set_grad(Tensor::from_vector(g, {4}));
    lion.step();
    for (size_t i = 0; i < 4; ++i) {
      const double c = o.beta1 * ref_m[i] + (1 - o.beta1) * g[i];
      ref_p[i] -= o.lr * ((c > 0) - (c < 0) + o.weight_decay * ref_p[i]);
      ref_m[i] = o.beta2 * ref_m[i] + (1 - o.beta2) * g[i];
    }
    require_close(p, ref_p, 1e-6, 1e-6);
  }
  CHECK(lion.step_count(0) == 3);
  // One buffer per parameter (Adam keeps two), charged to the optimizer state.
  CHECK(lion.state_bytes() == p.nbytes());
}

TEST_CASE("exercise 2: Lion leaves frozen parameters alone and keeps no state for them", "[exercise-2]") {
  Tensor trained = leaf({1.0f, 1.0f}), frozen = Tensor::from_vector(std::vector<float>{1.0f, 1.0f}, {2});
  exercises::Lion lion({trained, frozen}, {.lr = 0.1});
  trained.set_grad(Tensor::from_vector(std::vector<float>{1.0f, -1.0f}, {2}));
  lion.step();
  require_close(trained, {0.9, 1.1});
  require_close(frozen, {1.0, 1.0});
  CHECK(lion.step_count(1) == 0);
  CHECK(lion.state_bytes() == trained.nbytes());
}

TEST_CASE("exercise 2: Lion minimises a quadratic and resumes from its saved state", "[exercise-2]") {
  // f(p) = sum (p - t)^2: every coordinate walks to its target in steps of lr (300 steps cover 3.0), then
  // hovers around it: the slow momentum (beta2) overshoots by a few steps before the sign turns.
  const std::vector<double> target = {0.3, -0.7, 1.2};
  auto grad_at = [&](const Tensor& p) {
    std::vector<float> g;
    for (size_t i = 0; i < target.size(); ++i) g.push_back(static_cast<float>(2 * (p.at({int64_t(i)}) - target[i])));
    return Tensor::from_vector(g, {3});
  };
  Tensor p = leaf({0.0f, 0.0f, 0.0f});
  exercises::Lion lion({p}, {.lr = 0.01}, {"p"});
  for (int s = 0; s < 300; ++s) {
    p.set_grad(grad_at(p));
    lion.step();
  }
  require_close(p, target, 0.0, 5 * 0.01);

  const auto path =
      std::filesystem::temp_directory_path() / ("lion_state_" + std::to_string(getpid()) + ".safetensors");
  lion.save_state(path.string());
  Tensor copy = leaf(p.to_vector<float>());
  exercises::Lion resumed({copy}, {.lr = 0.5}, {"p"});
  resumed.load_state(path.string());
  CHECK(resumed.lr() == 0.01);
  CHECK(resumed.step_count(0) == 300);
  p.set_grad(grad_at(p)), copy.set_grad(grad_at(copy));
  lion.step(), resumed.step();
  require_close(copy, p, 0.0, 0.0);  // the same state: the same step, bit for bit
  // Another optimizer's file is refused.
  optim::AdamW adam({leaf({0.0f, 0.0f, 0.0f})}, {}, {"p"});
  CHECK_THROWS_WITH(adam.load_state(path.string()), Contains("lion"));
  std::filesystem::remove(path);
}

// ---------------------------------------------------------------------------------------------------
// Exercise 3: DoRA

TEST_CASE("exercise 3: a DoRA layer starts as its base layer, with three trainable tensors", "[exercise-3]") {
  Generator gen(3);
  auto base = std::make_shared<nn::Linear>(6, 4, true, gen);
  const Tensor x = Tensor::uniform({5, 6}, gen, -1, 1);
  Tensor expected;
  {
    NoGradGuard no_grad;
    expected = base->forward(x);
  }
  exercises::DoRALinear dora(base, 2, 4.0, gen);
  CHECK(dora.scaling() == 2.0);
  require_close(dora.forward(x), expected, 1e-5, 1e-6);
  std::vector<std::string> names;
  for (const auto& [name, p] : dora.named_parameters(true)) names.push_back(name);
  CHECK(names == std::vector<std::string>{"lora_A", "lora_B", "lora_magnitude_vector"});
  CHECK_FALSE(base->weight.requires_grad());
  // m = ||W|| row by row.
  const std::vector<float> w = base->weight.to_vector<float>(), m = dora.lora_magnitude_vector.to_vector<float>();
  for (int64_t r = 0; r < 4; ++r) {
    double sq = 0;
    for (int64_t c = 0; c < 6; ++c) sq += double(w[r * 6 + c]) * w[r * 6 + c];
    CHECK(m[r] == Approx(std::sqrt(sq)).epsilon(1e-6));
  }
  autograd::Tape::current().clear();
}

TEST_CASE("exercise 3: DoRA's gradients, through the norm too (float64 gradcheck)", "[exercise-3]") {
  Generator gen(5);
  const Tensor W = Tensor::uniform({4, 3}, gen, -1, 1, DType::F64), b = Tensor::uniform({4}, gen, -1, 1, DType::F64);
  REQUIRE_GRADCHECK(
      [&](const std::vector<Tensor>& in) { return exercises::dora_linear(in[0], W, b, in[1], in[2], in[3], 1.5); },
      {random_input({2, 3}, gen), random_input({2, 3}, gen), random_input({4, 2}, gen),
       random_input({4}, gen, 0.5, 2.0)});
}

TEST_CASE("exercise 3: DoRA learns a change of row lengths with its magnitude alone", "[exercise-3]") {
  // Target: the base layer with each output row scaled by c_r. DoRA's m can express it exactly; LoRA alone
  // would need rank 4.
  Generator gen(9);
  auto base = std::make_shared<nn::Linear>(8, 4, false, gen);
  const Tensor x = Tensor::uniform({64, 8}, gen, -1, 1);
  Tensor target;
  {
    NoGradGuard no_grad;
    target = base->forward(x) * Tensor::from_vector(std::vector<float>{0.5f, 2.0f, 1.5f, 0.8f}, {4});
  }
  exercises::DoRALinear dora(base, 1, 1.0, gen);
  optim::Adam adam(dora.parameters(true), {.lr = 0.02});
  auto loss = [&] { return ops::mean(ops::square(dora.forward(x) - target)); };
  double first = 0, last = 0;
  for (int s = 0; s < 300; ++s) {
    Tensor l = loss();
    last = l.item();
    if (s == 0) first = last;
    backward(l);
    adam.step();
    adam.zero_grad();
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < 1e-3 * first);
}

// ---------------------------------------------------------------------------------------------------
// Exercise 4: the parallel block

namespace {
gpt2::GPT2Config tiny_config() {
  gpt2::GPT2Config c;
  c.n_embd = 16, c.n_head = 2, c.n_layer = 1, c.n_positions = 8, c.vocab_size = 11;
  return c;
}
}  // namespace

TEST_CASE("exercise 4: the parallel block is x + attn(ln_1(x)) + mlp(ln_1(x)), one LayerNorm", "[exercise-4]") {
  Generator gen(1);
  exercises::ParallelGPT2Block block(tiny_config(), gen);
  const Tensor x = Tensor::uniform({2, 5, 16}, gen, -1, 1);
  NoGradGuard no_grad;
  const Tensor y = block.forward(x);
  REQUIRE(y.shape() == Shape({2, 5, 16}));
  const Tensor h = block.ln_1->forward(x);
  require_close(y, x + block.attn->forward(h) + block.mlp->forward(h), 1e-5, 1e-6);
  // Not the sequential block: the MLP must read ln_1(x), not ln(x + attn(...)).
  const Tensor seq = (x + block.attn->forward(h)) + block.mlp->forward(block.ln_1->forward(x + block.attn->forward(h)));
  double diff = 0;
  const auto a = y.to_vector<float>(), s = seq.to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, double(std::abs(a[i] - s[i])));
  CHECK(diff > 1e-4);
  for (const auto& [name, p] : block.named_parameters()) CHECK(name.rfind("ln_2", 0) != 0);
}

TEST_CASE("exercise 4: the parallel block is causal and trains every parameter", "[exercise-4]") {
  Generator gen(2);
  exercises::ParallelGPT2Block block(tiny_config(), gen);
  Tensor x = Tensor::uniform({1, 6, 16}, gen, -1, 1);
  Tensor x_changed = x.clone();
  for (int64_t c = 0; c < 16; ++c) x_changed.set({0, 4, c}, 3.0);  // change position 4 only
  {
    NoGradGuard no_grad;
    const auto a = block.forward(x).to_vector<float>(), b = block.forward(x_changed).to_vector<float>();
    for (int64_t i = 0; i < 4 * 16; ++i) REQUIRE(a[i] == b[i]);  // positions 0..3 cannot see position 4
    bool later_changed = false;
    for (int64_t i = 4 * 16; i < 6 * 16; ++i) later_changed = later_changed || a[i] != b[i];
    CHECK(later_changed);
  }
  backward(ops::sum(ops::square(block.forward(x))));
  for (const auto& [name, p] : block.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }
  // LoRA finds its layers by the same paths as in GPT-2's block.
  nn::LoRAConfig lora;
  lora.targets = {"attn.c_attn", "mlp.c_fc"};
  lora.options.rank = 2;
  CHECK(nn::apply_lora(block, lora).adapted_layers == 2);
}
