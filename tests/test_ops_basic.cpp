// The elementwise, matmul, reduction and shape ops: their registered cases (a float64 gradcheck against
// central differences with gradcheck's defaults, |analytic - numeric| <= 1e-7 + 1e-5 |numeric| at eps = 1e-6;
// parity: float32 against float64, CUDA against the CPU; run by tests/test_op_registry.cpp), then forward
// checks and errors.
#include <catch2/catch.hpp>

#include "autograd/ops.h"
#include "tests/op_cases.h"
#include "tests/test_helpers.h"

using namespace lora;
using namespace lora::testing;

// ---------------------------------------------------------------------------------------------------
// Registered cases

namespace {

const DType F64 = DType::F64, F32 = DType::F32;

// A uniform leaf in [low, high) of `dtype`, from a generator seeded by `seed`.
MakeInputs uniform_inputs(std::vector<Shape> shapes, uint64_t seed, DType dtype, double low = -1.0, double high = 1.0) {
  return [=] {
    Generator gen(seed);
    Inputs in;
    for (const Shape& s : shapes) in.push_back(uniform_leaf(s, gen, dtype, low, high));
    return in;
  };
}

}  // namespace

LORA_OP_CASES(elementwise_cases) {
  // Binary ops: same shape, trailing bias, leading broadcast, size-1 axes on both sides, scalars. b is kept
  // away from 0 for div.
  const std::vector<std::pair<Shape, Shape>> shapes = {{{3, 4}, {3, 4}},    {{2, 3, 4}, {4}}, {{2, 3, 4}, {3, 4}},
                                                       {{4, 1, 3}, {5, 1}}, {{2, 3}, {2, 1}}, {{1}, {3, 2}},
                                                       {{}, {2, 2}},        {{1, 1}, {1}}};
  uint64_t seed = 100;
  for (const BinaryInfo& info : kBinaryOps) {
    const OpFn f = [op = info.op](const Inputs& in) { return ops::binary(op, in[0], in[1]); };
    for (const auto& shape_pair : shapes) {
      const Shape sa = shape_pair.first, sb = shape_pair.second;  // captured by copy below
      const uint64_t s = seed++;
      gradcheck_case(info.name, sa.str() + " with " + sb.str(), f, [=] {
        Generator gen(s);
        return Inputs{uniform_leaf(sa, gen, F64), uniform_leaf(sb, gen, F64, 0.5, 2.0)};
      });
    }
    for (const auto& shape_pair :
         std::vector<std::pair<Shape, Shape>>{{{33, 257}, {257}}, {{4, 1, 5}, {3, 1}}, {{7, 33}, {7, 33}}}) {
      const Shape sa = shape_pair.first, sb = shape_pair.second;
      const uint64_t s = seed++;
      parity_case(info.name, sa.str() + " with " + sb.str(), f,
                  [=] {
                    Generator gen(s);
                    return Inputs{uniform_leaf(sa, gen, F32, -2.0, 2.0), uniform_leaf(sb, gen, F32, 0.5, 2.0)};
                  },
                  kSums, {1e-4, 1e-4});
    }
  }
  // One input constant (no gradient wanted for it).
  gradcheck_case(
      "div", "constant numerator", [](const Inputs& in) { return ops::div(in[1], in[0] * in[0] + 1.0); },
      [] {
        Generator gen(12);
        return Inputs{uniform_leaf({3, 2}, gen, F64), uniform_leaf({2}, gen, F64, 0.5, 1.5, false)};
      });
  gradcheck_case(
      "mul", "one input constant", [](const Inputs& in) { return ops::mul(in[1], in[0]); },
      [] {
        Generator gen(12);
        return Inputs{uniform_leaf({3, 2}, gen, F64), uniform_leaf({2}, gen, F64, 0.5, 1.5, false)};
      });

  // Unary ops: every table entry, on inputs from its test domain, alpha = 0.7 (used by the scalar ops).
  for (const UnaryInfo& info : kUnaryOps) {
    const OpFn f = [op = info.op](const Inputs& in) { return ops::unary(op, in[0], 0.7); };
    const TestDomain domain = info.domain;
    for (const Shape& shape : {Shape{5}, Shape{2, 3, 4}, Shape{1}}) {
      const uint64_t s = seed++;
      gradcheck_case(info.name, shape.str(), f, [=] {
        Generator gen(s);
        return Inputs{domain_input(shape, gen, domain)};
      });
    }
    const uint64_t s = seed++;
    parity_case(info.name, "[33, 257]", f, [=] {
      Generator gen(s);
      return Inputs{domain_input({33, 257}, gen, domain, F32)};
    });
  }
}

LORA_OP_CASES(matmul_cases) {
  const OpFn plain = [](const Inputs& in) { return ops::matmul(in[0], in[1]); };
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const OpFn f = [ta, tb](const Inputs& in) { return ops::matmul(in[0], in[1], ta, tb); };
      const std::string flags = std::string(ta ? "A^T" : "A") + (tb ? " B^T" : " B");
      const int64_t m = 3, k = 4, n = 2;
      const Shape a = ta ? Shape{k, m} : Shape{m, k}, b = tb ? Shape{n, k} : Shape{k, n};
      const Shape ab = ta ? Shape{2, 2, k, m} : Shape{2, 2, m, k}, bb = tb ? Shape{2, 2, n, k} : Shape{2, 2, k, n};
      const Shape as = ta ? Shape{3, k, m} : Shape{3, m, k};
      gradcheck_case("matmul", flags + ", 2-D", f, uniform_inputs({a, b}, 140 + 4 * ta + 2 * tb, F64));
      gradcheck_case("matmul", flags + ", batched", f, uniform_inputs({ab, bb}, 150 + 4 * ta + 2 * tb, F64));
      gradcheck_case("matmul", flags + ", one shared B", f, uniform_inputs({as, b}, 160 + 4 * ta + 2 * tb, F64));
      const Shape pa = ta ? Shape{2, 64, 48} : Shape{2, 48, 64}, pb = tb ? Shape{33, 64} : Shape{64, 33};
      parity_case("matmul", flags + ", batched against a shared B", f,
                  uniform_inputs({pa, pb}, 170 + 4 * ta + 2 * tb, F32), kGemm, {1e-4, 1e-4});
    }
  }
  gradcheck_case("matmul", "size-1 dimensions", plain, uniform_inputs({{1, 1}, {1, 5}}, 14, F64));

  const OpFn with_bias = [](const Inputs& in) { return ops::linear(in[0], in[1], in[2]); };
  const OpFn no_bias = [](const Inputs& in) { return ops::linear(in[0], in[1]); };
  for (const Shape& xs : {Shape{5, 4}, Shape{2, 3, 4}, Shape{1, 4}, Shape{4}}) {
    gradcheck_case("linear", "x " + xs.str() + " with bias", with_bias, uniform_inputs({xs, {3, 4}, {3}}, 15, F64));
    gradcheck_case("linear", "x " + xs.str() + " without bias", no_bias, uniform_inputs({xs, {3, 4}}, 15, F64));
  }
  parity_case("linear", "x [4, 33, 64], weight [48, 64], bias", with_bias,
              uniform_inputs({{4, 33, 64}, {48, 64}, {48}}, 16, F32), kGemm, {1e-4, 1e-4});
}

LORA_OP_CASES(reduce_cases) {
  for (const Shape& s : {Shape{4}, Shape{2, 3, 4}, Shape{1, 5}, Shape{3, 1}}) {
    gradcheck_case(
        "sum", s.str() + " all", [](const Inputs& in) { return ops::sum(in[0]); }, uniform_inputs({s}, 17, F64));
    gradcheck_case(
        "mean", s.str() + " all", [](const Inputs& in) { return ops::mean(in[0]); }, uniform_inputs({s}, 17, F64));
    for (int axis = -s.rank(); axis < s.rank(); ++axis) {
      for (bool keep : {false, true}) {
        const std::string what = s.str() + " axis " + std::to_string(axis) + (keep ? " keepdim" : "");
        gradcheck_case(
            "sum", what, [axis, keep](const Inputs& in) { return ops::sum(in[0], axis, keep); },
            uniform_inputs({s}, 18, F64));
        gradcheck_case(
            "mean", what, [axis, keep](const Inputs& in) { return ops::mean(in[0], axis, keep); },
            uniform_inputs({s}, 18, F64));
      }
    }
  }
  parity_case("sum", "[33, 257] over axis 0", [](const Inputs& in) { return ops::sum(in[0], 0); },
              uniform_inputs({{33, 257}}, 19, F32), kSums, {1e-4, 1e-4});
  parity_case("mean", "[7, 1000] over the last axis", [](const Inputs& in) { return ops::mean(in[0], -1, true); },
              uniform_inputs({{7, 1000}}, 20, F32), kSums, {1e-4, 1e-4});
}

LORA_OP_CASES(shape_cases) {
  gradcheck_case(
      "reshape", "[2, 3, 4] -> [4, -1]",
      [](const Inputs& in) {
        return ops::reshape(in[0], {4, -1}) * 2.0;
      },
      uniform_inputs({{2, 3, 4}}, 21, F64));
  gradcheck_case(
      "permute", "[2, 3, 4] by (2, 0, 1)",
      [](const Inputs& in) {
        return ops::permute(in[0], {2, 0, 1});
      },
      uniform_inputs({{2, 3, 4}}, 21, F64));
  gradcheck_case(
      "permute", "[2, 3, 4] by (1, 2, 0)",
      [](const Inputs& in) {
        return ops::permute(in[0], {1, 2, 0});
      },
      uniform_inputs({{2, 3, 4}}, 21, F64));
  gradcheck_case(
      "permute", "transpose of the first and last axes", [](const Inputs& in) { return ops::transpose(in[0], 0, -1); },
      uniform_inputs({{2, 3, 4}}, 21, F64));
  gradcheck_case(
      "permute", "transpose of [1, 3, 1]", [](const Inputs& in) { return ops::transpose(in[0], 1, 2); },
      uniform_inputs({{1, 3, 1}}, 22, F64));
  parity_case(
      "reshape", "[33, 257] -> [257, 33]",
      [](const Inputs& in) {
        return ops::reshape(in[0], {257, 33});
      },
      uniform_inputs({{33, 257}}, 23, F32));
  parity_case(
      "permute", "[2, 33, 3, 16] by (0, 2, 1, 3)",
      [](const Inputs& in) {
        return ops::permute(in[0], {0, 2, 1, 3});
      },
      uniform_inputs({{2, 33, 3, 16}}, 24, F32));

  for (int axis : {0, 1, 2}) {
    const int64_t n = Shape{3, 5, 2}[axis];
    gradcheck_case(
        "slice", "[1, n) of axis " + std::to_string(axis),
        [axis, n](const Inputs& in) { return ops::slice(in[0], axis, 1, n); }, uniform_inputs({{3, 5, 2}}, 25, F64));
    gradcheck_case(
        "slice", "[0, 1) of axis " + std::to_string(axis),
        [axis](const Inputs& in) { return ops::slice(in[0], axis, 0, 1); }, uniform_inputs({{3, 5, 2}}, 25, F64));
  }
  gradcheck_case(
      "concat", "split and concatenated in another order",
      [](const Inputs& in) {
        auto parts = ops::split(in[0], 1, {2, 1, 2});
        return ops::concat({parts[2] * 2.0, parts[0], parts[1] * -1.0}, 1);
      },
      uniform_inputs({{3, 5, 2}}, 26, F64));
  gradcheck_case(
      "concat", "one input twice",
      [](const Inputs& in) {
        return ops::concat({in[0], in[1], in[0]}, -1);
      },
      uniform_inputs({{2, 3}, {2, 1}}, 27, F64));
  gradcheck_case(
      "concat", "with a constant",
      [](const Inputs& in) {
        return ops::concat({in[1], in[0]}, 1);
      },
      [] {
        Generator gen(28);
        return Inputs{uniform_leaf({2, 3}, gen, F64), uniform_leaf({2, 2}, gen, F64, -1.0, 1.0, false)};
      });
  parity_case(
      "slice", "[7, 300, 5], columns [33, 290) of axis 1",
      [](const Inputs& in) { return ops::slice(in[0], 1, 33, 290); }, uniform_inputs({{7, 300, 5}}, 29, F32));
  parity_case(
      "concat", "[4, 33] and [4, 257] along the last axis",
      [](const Inputs& in) {
        return ops::concat({in[0], in[1]}, -1);
      },
      uniform_inputs({{4, 33}, {4, 257}}, 30, F32));
}

// ---------------------------------------------------------------------------------------------------
// Forward values and errors

TEST_CASE("gelu matches GPT-2's tanh approximation", "[ops]") {
  Tensor x = Tensor::from_vector<double>({-3, -1, 0, 0.5, 2}, {5});
  const std::vector<double> xs = x.to_vector<double>();
  std::vector<double> expected;
  for (double v : xs) expected.push_back(0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
  testing::require_close(ops::gelu(x), expected, 1e-12, 1e-12);
}

TEST_CASE("silu is x * sigmoid(x), in float64 and in float32", "[ops]") {
  const std::vector<double> xs{-30, -3, -1, 0, 0.5, 2, 30};
  std::vector<double> expected;
  for (double v : xs) expected.push_back(v / (1 + std::exp(-v)));
  testing::require_close(ops::silu(Tensor::from_vector(xs, {7})), expected, 1e-15, 1e-300);
  const std::vector<float> xf(xs.begin(), xs.end());  // the float path uses the vectorised exp
  testing::require_close(ops::silu(Tensor::from_vector(xf, {7})), expected, 1e-6, 1e-7);
}

TEST_CASE("matmul forward against a naive product, and shape errors", "[ops]") {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({1, 0, 0, 1, 1, 1}, {3, 2});
  testing::require_close(ops::matmul(a, b), std::vector<double>{4, 5, 10, 11});
  testing::require_close(ops::matmul(a, a, false, true), std::vector<double>{14, 32, 32, 77});
  REQUIRE_THROWS_WITH(ops::matmul(a, a), Catch::Contains("matmul") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_AS(ops::matmul(Tensor::ones({2, 2, 3}), Tensor::ones({3, 3, 2})), Error);
}

TEST_CASE("linear equals matmul against the transposed weight plus bias", "[ops]") {
  Generator gen(16);
  Tensor x = Tensor::randn({6, 5}, gen), w = Tensor::randn({7, 5}, gen), b = Tensor::randn({7}, gen);
  testing::require_close(ops::linear(x, w, b), ops::add(ops::matmul(x, w, false, true), b), 1e-5, 1e-5);
}

TEST_CASE("sum and mean forward values and shapes", "[ops]") {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  REQUIRE(ops::sum(x).item() == 21);
  REQUIRE(ops::sum(x).shape() == Shape{});
  testing::require_close(ops::sum(x, 0), std::vector<double>{5, 7, 9});
  testing::require_close(ops::mean(x, 1), std::vector<double>{2, 5});
  REQUIRE(ops::sum(x, 1, true).shape() == Shape{2, 1});
  REQUIRE(ops::mean(x).item() == 3.5);
}

TEST_CASE("permute forward moves elements", "[ops]") {
  Tensor x = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = ops::transpose(x, 0, 1);
  REQUIRE(t.shape() == Shape{3, 2});
  testing::require_close(t, std::vector<double>{0, 3, 1, 4, 2, 5});
  REQUIRE_THROWS_AS(ops::permute(x, {0, 0}), Error);
}

TEST_CASE("slice, split and concat forward and errors", "[ops]") {
  Tensor x = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  testing::require_close(ops::slice(x, 1, 1, 3), std::vector<double>{1, 2, 4, 5});
  auto parts = ops::split(x, 0, {1, 1});
  testing::require_close(parts[1], std::vector<double>{3, 4, 5});
  testing::require_close(ops::concat({parts[1], parts[0]}, 0), std::vector<double>{3, 4, 5, 0, 1, 2});
  REQUIRE_THROWS_AS(ops::slice(x, 1, 2, 4), Error);
  REQUIRE_THROWS_AS(ops::split(x, 1, {1, 1}), Error);
  REQUIRE_THROWS_WITH(ops::concat({x, Tensor::ones({3, 3})}, 1), Catch::Contains("concat"));
}
