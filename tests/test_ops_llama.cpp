// The ops the Llama family needs: rms_norm, swiglu, rope and grouped-query causal_attention (silu is an entry of the
// elementwise table, tested with it). For each: registered cases (a float64 gradcheck with GradcheckOptions'
// defaults; float32 against float64 and CUDA against the CPU, run by tests/test_op_registry.cpp), a forward
// check against loops written here, equality with the same computation composed from existing ops (values
// and gradients, float64, |a - b| <= 1e-12 + 1e-10 |b|), what is saved, and the errors on bad shapes.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "tests/op_cases.h"

using namespace lora;
using testing::Inputs;

namespace {

// cos and sin [T, D/2] of Llama's rotary embedding for positions [start, start + T):
// angle(t, i) = t * base^(-2i / D).
std::vector<Tensor> rope_tables(int64_t start, int64_t T, int64_t D, DType dtype, double base = 10000.0) {
  std::vector<double> c, s;
  for (int64_t t = start; t < start + T; ++t) {
    for (int64_t i = 0; i < D / 2; ++i) {
      const double angle = static_cast<double>(t) * std::pow(base, -2.0 * static_cast<double>(i) / D);
      c.push_back(std::cos(angle));
      s.push_back(std::sin(angle));
    }
  }
  return {Tensor::from_vector(c, {T, D / 2}).to(dtype), Tensor::from_vector(s, {T, D / 2}).to(dtype)};
}

// Normal leaves of `shapes` (requiring grad unless listed in `frozen`) from `seed`.
testing::MakeInputs normal_inputs(std::vector<Shape> shapes, uint64_t seed, DType dtype, std::vector<int> frozen = {}) {
  return [=] {
    Generator gen(seed);
    Inputs in;
    for (size_t i = 0; i < shapes.size(); ++i) {
      bool trains = true;
      for (int f : frozen) trains = trains && f != static_cast<int>(i);
      in.push_back(testing::randn_leaf(shapes[i], gen, dtype, trains));
    }
    return in;
  };
}

// x [B, T, H, D] followed by its cos and sin tables for positions [start, start + T).
testing::MakeInputs rope_inputs(Shape x, int64_t start, uint64_t seed, DType dtype) {
  return [=] {
    Inputs in = normal_inputs({x}, seed, dtype)();
    for (Tensor& t : rope_tables(start, x[1], x[3], dtype)) in.push_back(t);
    return in;
  };
}

// |a - b| <= atol + rtol |b| for every element.
void require_close(const Tensor& a, const Tensor& b, double atol = 1e-12, double rtol = 1e-10) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("element " << i << ": " << x[i] << " vs " << y[i]);
    REQUIRE(std::abs(x[i] - y[i]) <= atol + rtol * std::abs(y[i]));
  }
}

// Runs `fused` and `composed` on copies of the same float64 inputs with the same seed gradient and requires
// equal outputs and equal input gradients.
void require_same_as_composed(const testing::OpFn& fused, const testing::OpFn& composed, const Inputs& inputs) {
  Inputs a, b;
  for (const Tensor& t : inputs) {
    a.push_back(t.detach().clone().set_requires_grad(t.requires_grad()));
    b.push_back(t.detach().clone().set_requires_grad(t.requires_grad()));
  }
  Tensor ya = fused(a);
  Generator gen(77);
  Tensor seed = Tensor::randn(ya.shape(), gen, 0.0, 1.0, DType::F64);
  backward(ya, seed);
  Tensor yb = composed(b);
  backward(yb, seed);
  require_close(ya, yb);
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].requires_grad()) continue;
    INFO("gradient of input " << i);
    require_close(a[i].grad(), b[i].grad());
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Registered cases

LORA_OP_CASES(llama_cases) {
  using testing::gradcheck_case;
  using testing::parity_case;
  const DType F64 = DType::F64, F32 = DType::F32;

  const testing::OpFn rms = [](const Inputs& in) { return ops::rms_norm(in[0], in[1]); };
  for (const Shape& shape : {Shape{4, 6}, Shape{2, 3, 5}, Shape{1, 8}, Shape{3, 1}, Shape{7}}) {
    gradcheck_case("rms_norm", shape.str() + ", both inputs train", rms, normal_inputs({shape, {shape[-1]}}, 31, F64));
  }
  gradcheck_case("rms_norm", "frozen weight (the LoRA case)", rms, normal_inputs({{3, 5}, {5}}, 32, F64, {1}));
  gradcheck_case("rms_norm", "only the weight trains", rms, normal_inputs({{3, 5}, {5}}, 32, F64, {0}));
  gradcheck_case(
      "rms_norm", "eps = 0.1", [](const Inputs& in) { return ops::rms_norm(in[0], in[1], 0.1); },
      normal_inputs({{2, 4}, {4}}, 33, F64));
  // [100, 200] takes the multi-threaded CPU path with per-thread weight sums.
  for (const Shape& shape : {Shape{3, 7}, Shape{100, 200}}) {
    parity_case("rms_norm", shape.str(), rms, normal_inputs({shape, {shape[-1]}}, 34, F32), testing::kSums);
  }

  const testing::OpFn swiglu = [](const Inputs& in) { return ops::swiglu(in[0], in[1]); };
  for (const Shape& shape : {Shape{4, 6}, Shape{2, 3, 5}, Shape{7}}) {
    gradcheck_case("swiglu", shape.str() + ", both inputs train", swiglu, normal_inputs({shape, shape}, 61, F64));
  }
  gradcheck_case("swiglu", "only gate trains", swiglu, normal_inputs({{3, 5}, {3, 5}}, 62, F64, {1}));
  gradcheck_case("swiglu", "only up trains", swiglu, normal_inputs({{3, 5}, {3, 5}}, 63, F64, {0}));
  // [64, 1024] takes the multi-threaded CPU path.
  for (const Shape& shape : {Shape{3, 7}, Shape{64, 1024}}) {
    parity_case("swiglu", shape.str(), swiglu, normal_inputs({shape, shape}, 64, F32));
  }

  const testing::OpFn rope = [](const Inputs& in) { return ops::rope(in[0], in[1], in[2]); };
  gradcheck_case("rope", "[2, 3, 2, 4] from position 0", rope, rope_inputs({2, 3, 2, 4}, 0, 35, F64));
  gradcheck_case("rope", "[1, 5, 3, 6] from position 7", rope, rope_inputs({1, 5, 3, 6}, 7, 36, F64));
  parity_case("rope", "[2, 33, 4, 16] from position 100", rope, rope_inputs({2, 33, 4, 16}, 100, 37, F32));

  const testing::OpFn attn = [](const Inputs& in) { return ops::causal_attention(in[0], in[1], in[2]); };
  const auto gqa = [](Shape q, int64_t kv_heads) {
    const Shape kv{q[0], kv_heads, q[2], q[3]};
    return std::vector<Shape>{q, kv, kv};
  };
  gradcheck_case("causal_attention", "grouped: 4 query heads on 2 kv heads", attn,
                 normal_inputs(gqa({2, 4, 3, 4}, 2), 38, F64));
  gradcheck_case("causal_attention", "grouped: 4 query heads on 1 kv head", attn,
                 normal_inputs(gqa({1, 4, 5, 2}, 1), 39, F64));
  // T = 67 crosses the CPU kernel's 64-row block.
  gradcheck_case("causal_attention", "grouped: T = 67", attn, normal_inputs(gqa({1, 2, 67, 2}, 1), 40, F64));
  gradcheck_case("causal_attention", "grouped: only k needs a gradient", attn,
                 normal_inputs(gqa({1, 6, 4, 3}, 2), 41, F64, {0, 2}));
  parity_case("causal_attention", "grouped: [2, 4, 33, 8] on 1 kv head", attn,
              normal_inputs(gqa({2, 4, 33, 8}, 1), 42, F32), testing::kAttention);
  parity_case("causal_attention", "grouped: [1, 6, 70, 16] on 2 kv heads", attn,
              normal_inputs(gqa({1, 6, 70, 16}, 2), 43, F32), testing::kAttention);
}

// ---------------------------------------------------------------------------------------------------
// rms_norm

TEST_CASE("rms_norm: y = x / sqrt(mean(x^2) + eps) * weight, row by row", "[llama]") {
  Generator gen(50);
  const int64_t rows = 6, cols = 10;
  const double eps = 1e-6;
  Tensor x = Tensor::randn({2, 3, cols}, gen, 0.5, 2.0, DType::F64),
         w = Tensor::randn({cols}, gen, 1.0, 0.5, DType::F64);
  const std::vector<double> xs = x.to_vector<double>(), ws = w.to_vector<double>();
  const std::vector<double> y = ops::rms_norm(x, w, eps).to_vector<double>();
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < cols; ++j) ms += xs[r * cols + j] * xs[r * cols + j] / cols;
    for (int64_t j = 0; j < cols; ++j) {
      REQUIRE(y[r * cols + j] == Approx(xs[r * cols + j] / std::sqrt(ms + eps) * ws[j]).margin(1e-12));
    }
  }
}

TEST_CASE("rms_norm: matches the same computation composed from simple ops", "[llama]") {
  Generator gen(51);
  const testing::OpFn fused = [](const Inputs& in) { return ops::rms_norm(in[0], in[1], 1e-5); };
  const testing::OpFn composed = [](const Inputs& in) {
    return in[0] / ops::sqrt(ops::mean(ops::square(in[0]), -1, true) + 1e-5) * in[1];
  };
  require_same_as_composed(fused, composed, normal_inputs({{2, 3, 6}, {6}}, 51, DType::F64)());
  require_same_as_composed(fused, composed, normal_inputs({{4, 5}, {5}}, 52, DType::F64, {1})());
}

// ---------------------------------------------------------------------------------------------------
// swiglu

TEST_CASE("swiglu: the values and gradients of silu(gate) * up, bit for bit in float32", "[llama]") {
  // Bit for bit: the fused kernels round in the composed ops' order, so a model's logits and gradients do not
  // move when its MLP takes the fused op. [64, 1024] runs multi-threaded, [3, 5] on one thread.
  for (const Shape& shape : {Shape{3, 5}, Shape{64, 1024}}) {
    INFO(shape.str());
    Generator gen(65);
    const Tensor gate = Tensor::randn(shape, gen, 0.0, 3.0, DType::F32), up = Tensor::randn(shape, gen);
    const Tensor seed = Tensor::randn(shape, gen);
    Tensor g1 = gate.clone().set_requires_grad(true), u1 = up.clone().set_requires_grad(true);
    Tensor g2 = gate.clone().set_requires_grad(true), u2 = up.clone().set_requires_grad(true);
    const Tensor fused = ops::swiglu(g1, u1);
    backward(fused, seed);  // each backward runs (and clears) the tape recorded since the last
    const Tensor composed = ops::silu(g2) * u2;
    backward(composed, seed);
    CHECK(fused.to_vector<float>() == composed.to_vector<float>());
    CHECK(g1.grad().to_vector<float>() == g2.grad().to_vector<float>());
    CHECK(u1.grad().to_vector<float>() == u2.grad().to_vector<float>());
  }
  const testing::OpFn fused = [](const Inputs& in) { return ops::swiglu(in[0], in[1]); };
  const testing::OpFn composed = [](const Inputs& in) { return ops::silu(in[0]) * in[1]; };
  require_same_as_composed(fused, composed, normal_inputs({{2, 3, 6}, {2, 3, 6}}, 66, DType::F64)());
}

TEST_CASE("swiglu: saves gate and up, and up only for gate's gradient; bad shapes are errors", "[llama]") {
  Generator gen(67);
  auto& tape = autograd::Tape::current();
  tape.clear();
  Tensor g = testing::randn_leaf({4, 6}, gen, DType::F64), u = testing::randn_leaf({4, 6}, gen, DType::F64);
  ops::swiglu(g, u);
  REQUIRE(tape.nodes().back().saved.size() == 2);  // gate, up (the composed ops keep three)
  tape.clear();
  ops::swiglu(g.detach(), u);
  REQUIRE(tape.nodes().back().saved.size() == 1);  // gate: up's gradient is grad_y * silu(gate)
  tape.clear();
  REQUIRE_THROWS_WITH(ops::swiglu(g, Tensor::ones({4, 5}, DType::F64)),
                      Catch::Contains("swiglu") && Catch::Contains("[4, 6]") && Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(ops::swiglu(g, Tensor::ones({4, 6}, DType::F32)), Catch::Contains("swiglu"));
}

TEST_CASE("rms_norm: saves x and rstd, and the weight only for x's gradient", "[llama]") {
  Generator gen(53);
  auto& tape = autograd::Tape::current();
  tape.clear();
  Tensor x = testing::randn_leaf({4, 6}, gen, DType::F64), w = testing::randn_leaf({6}, gen, DType::F64, false);
  ops::rms_norm(x, w);
  REQUIRE(tape.nodes().back().saved.size() == 3);  // x, rstd, weight
  tape.clear();
  ops::rms_norm(x.detach(), w.detach().set_requires_grad(true));
  REQUIRE(tape.nodes().back().saved.size() == 2);  // x, rstd
  tape.clear();
}

TEST_CASE("rms_norm: bad shapes are errors naming the op and the shapes", "[llama]") {
  Tensor x = Tensor::zeros({2, 4}, DType::F64);
  REQUIRE_THROWS_WITH(ops::rms_norm(x, Tensor::ones({3}, DType::F64)),
                      Catch::Contains("rms_norm") && Catch::Contains("[3]") && Catch::Contains("[2, 4]"));
  REQUIRE_THROWS_WITH(ops::rms_norm(x, Tensor::ones({4}, DType::F32)), Catch::Contains("rms_norm"));
  REQUIRE_THROWS_WITH(ops::rms_norm(Tensor::zeros({2, 0}, DType::F64), Tensor::ones({0}, DType::F64)),
                      Catch::Contains("rms_norm") && Catch::Contains("[2, 0]"));
}

// ---------------------------------------------------------------------------------------------------
// rope

TEST_CASE("rope: rotates each pair (x[i], x[i + D/2]) by the angle of its position", "[llama]") {
  Generator gen(54);
  const int64_t B = 2, T = 5, H = 3, D = 8, half = D / 2, start = 11;
  Tensor x = Tensor::randn({B, T, H, D}, gen, 0.0, 1.0, DType::F64);
  const std::vector<Tensor> cs = rope_tables(start, T, D, DType::F64);
  const std::vector<double> xs = x.to_vector<double>(), y = ops::rope(x, cs[0], cs[1]).to_vector<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double angle = static_cast<double>(start + t) * std::pow(10000.0, -2.0 * static_cast<double>(i) / D);
          const int64_t base = ((b * T + t) * H + h) * D;
          const double x1 = xs[base + i], x2 = xs[base + half + i];
          REQUIRE(y[base + i] == Approx(x1 * std::cos(angle) - x2 * std::sin(angle)).margin(1e-12));
          REQUIRE(y[base + half + i] == Approx(x2 * std::cos(angle) + x1 * std::sin(angle)).margin(1e-12));
        }
}

TEST_CASE("rope: matches the same computation composed from simple ops", "[llama]") {
  const testing::OpFn fused = [](const Inputs& in) { return ops::rope(in[0], in[1], in[2]); };
  const testing::OpFn composed = [](const Inputs& in) {
    const int64_t T = in[0].size(1), half = in[0].size(3) / 2;
    Tensor x1 = ops::slice(in[0], 3, 0, half), x2 = ops::slice(in[0], 3, half, 2 * half);  // [B, T, H, D/2]
    Tensor c = ops::reshape(in[1], {T, 1, half}), s = ops::reshape(in[2], {T, 1, half});   // broadcast over H
    return ops::concat({x1 * c - x2 * s, x2 * c + x1 * s}, 3);
  };
  require_same_as_composed(fused, composed, rope_inputs({2, 4, 3, 6}, 3, 55, DType::F64)());
}

TEST_CASE("rope: saves only cos and sin, and keeps norms", "[llama]") {
  auto& tape = autograd::Tape::current();
  tape.clear();
  const Inputs in = rope_inputs({1, 3, 2, 4}, 0, 56, DType::F64)();
  Tensor y = ops::rope(in[0], in[1], in[2]);
  REQUIRE(tape.nodes().back().saved.size() == 2);
  CHECK(tape.nodes().back().saved[0].storage() == in[1].storage());
  CHECK(tape.nodes().back().saved[1].storage() == in[2].storage());
  tape.clear();
  // A rotation: every (x[i], x[i + D/2]) pair keeps its length, so the whole tensor keeps its norm.
  REQUIRE(ops::sum(ops::square(y)).item() == Approx(ops::sum(ops::square(in[0])).item()).epsilon(1e-12));
}

TEST_CASE("rope: bad shapes are errors naming the op and the shapes", "[llama]") {
  const std::vector<Tensor> cs = rope_tables(0, 3, 4, DType::F64);
  Tensor x = Tensor::zeros({1, 3, 2, 4}, DType::F64);
  REQUIRE_THROWS_WITH(ops::rope(Tensor::zeros({1, 3, 2, 5}, DType::F64), cs[0], cs[1]),
                      Catch::Contains("rope") && Catch::Contains("[1, 3, 2, 5]") && Catch::Contains("even"));
  REQUIRE_THROWS_WITH(ops::rope(Tensor::zeros({3, 2, 4}, DType::F64), cs[0], cs[1]), Catch::Contains("[B, T, H, D]"));
  const std::vector<Tensor> longer = rope_tables(0, 4, 4, DType::F64);
  REQUIRE_THROWS_WITH(ops::rope(x, longer[0], longer[1]),
                      Catch::Contains("rope") && Catch::Contains("[4, 2]") && Catch::Contains("[3, 2]"));
  REQUIRE_THROWS_WITH(ops::rope(x, cs[0].to(DType::F32), cs[1]), Catch::Contains("rope"));
  Tensor trainable = cs[0].clone().set_requires_grad(true);
  REQUIRE_THROWS_WITH(ops::rope(x, trainable, cs[1]), Catch::Contains("rope") && Catch::Contains("constant"));
}

// ---------------------------------------------------------------------------------------------------
// Grouped-query attention

TEST_CASE("causal_attention: grouped-query attention equals attention on repeated kv heads", "[llama]") {
  const testing::OpFn fused = [](const Inputs& in) { return ops::causal_attention(in[0], in[1], in[2], 0.4); };
  // Query head h reads kv head h / G: repeat each kv head G times along the head axis.
  const testing::OpFn composed = [](const Inputs& in) {
    const int64_t G = in[0].size(1) / in[1].size(1);
    std::vector<Tensor> ks, vs;
    for (int64_t h = 0; h < in[0].size(1); ++h) {
      ks.push_back(ops::slice(in[1], 1, h / G, h / G + 1));
      vs.push_back(ops::slice(in[2], 1, h / G, h / G + 1));
    }
    return ops::causal_attention(in[0], ops::concat(ks, 1), ops::concat(vs, 1), 0.4);
  };
  require_same_as_composed(fused, composed,
                           normal_inputs({{2, 6, 5, 3}, {2, 2, 5, 3}, {2, 2, 5, 3}}, 57, DType::F64)());
  require_same_as_composed(fused, composed,
                           normal_inputs({{1, 4, 70, 4}, {1, 1, 70, 4}, {1, 1, 70, 4}}, 58, DType::F64)());
}

TEST_CASE("causal_attention: kv heads that do not divide the query heads are an error", "[llama]") {
  Tensor q = Tensor::zeros({1, 4, 3, 2});
  REQUIRE_THROWS_WITH(
      ops::causal_attention(q, Tensor::zeros({1, 3, 3, 2}), Tensor::zeros({1, 3, 3, 2})),
      Catch::Contains("causal_attention") && Catch::Contains("[1, 4, 3, 2]") && Catch::Contains("[1, 3, 3, 2]"));
  REQUIRE_THROWS_WITH(ops::causal_attention(q, Tensor::zeros({1, 2, 4, 2}), Tensor::zeros({1, 2, 4, 2})),
                      Catch::Contains("causal_attention") && Catch::Contains("[1, 2, 4, 2]"));
  REQUIRE_THROWS_WITH(ops::causal_attention(q, Tensor::zeros({1, 2, 3, 2}), Tensor::zeros({1, 1, 3, 2})),
                      Catch::Contains("causal_attention") && Catch::Contains("[1, 1, 3, 2]"));
}
