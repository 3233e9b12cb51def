// Gradient checks (double precision, against central finite differences) and forward checks of the
// elementwise, matmul, reduction and shape ops. Tolerance: gradcheck's defaults, |analytic - numeric| <=
// 1e-7 + 1e-5 |numeric| with eps = 1e-6, in float64.
#include <catch2/catch.hpp>

#include "autograd/ops.h"
#include "tests/test_helpers.h"

using namespace lora;
using testing::random_input;
using Inputs = std::vector<Tensor>;

TEST_CASE("gradcheck: add, sub, mul, div with broadcasting", "[ops][gradcheck]") {
  Generator gen(11);
  // (a shape, b shape): same shape, trailing bias, leading broadcast, size-1 axes on both sides, scalars
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{2, 3, 4}, {3, 4}}, {{4, 1, 3}, {5, 1}},
      {{2, 3}, {2, 1}}, {{1}, {3, 2}},    {{}, {2, 2}},         {{1, 1}, {1}}};
  for (const auto& [sa, sb] : cases) {
    INFO("shapes " << sa.str() << " and " << sb.str());
    Tensor a = random_input(sa, gen), b = random_input(sb, gen, 0.5, 2.0);  // b away from 0 for div
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::add(in[0], in[1]); }, (Inputs{a, b}));
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::sub(in[0], in[1]); }, (Inputs{a, b}));
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::mul(in[0], in[1]); }, (Inputs{a, b}));
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::div(in[0], in[1]); }, (Inputs{a, b}));
  }
}

TEST_CASE("gradcheck: one input constant", "[ops][gradcheck]") {
  Generator gen(12);
  Tensor a = random_input({3, 2}, gen);
  Tensor b = Tensor::uniform({2}, gen, 0.5, 1.5, DType::F64);  // no grad
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::div(in[1], in[0] * in[0] + 1.0); }, (Inputs{a, b}));
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::mul(in[1], in[0]); }, (Inputs{a, b}));
}

TEST_CASE("gradcheck: every unary op of the elementwise table", "[ops][gradcheck]") {
  Generator gen(13);
  for (const UnaryInfo& info : kUnaryOps) {
    for (const Shape& s : {Shape{5}, Shape{2, 3, 4}, Shape{1}}) {
      INFO(info.name << " on " << s.str());
      Tensor x = testing::domain_input(s, gen, info.domain);
      REQUIRE_GRADCHECK([op = info.op](const Inputs& in) { return ops::unary(op, in[0], 0.7); }, Inputs{x});
    }
  }
}

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

TEST_CASE("gradcheck: matmul with transposes, batches and a shared matrix", "[ops][gradcheck]") {
  Generator gen(14);
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      const int64_t m = 3, k = 4, n = 2;
      // plain 2-D
      Tensor a = random_input(ta ? Shape{k, m} : Shape{m, k}, gen);
      Tensor b = random_input(tb ? Shape{n, k} : Shape{k, n}, gen);
      auto f = [ta, tb](const Inputs& in) { return ops::matmul(in[0], in[1], ta, tb); };
      REQUIRE_GRADCHECK(f, (Inputs{a, b}));
      // batched on both sides
      Tensor ab = random_input(ta ? Shape{2, 2, k, m} : Shape{2, 2, m, k}, gen);
      Tensor bb = random_input(tb ? Shape{2, 2, n, k} : Shape{2, 2, k, n}, gen);
      REQUIRE_GRADCHECK(f, (Inputs{ab, bb}));
      // batched a against one shared b
      Tensor as = random_input(ta ? Shape{3, k, m} : Shape{3, m, k}, gen);
      REQUIRE_GRADCHECK(f, (Inputs{as, b}));
    }
  }
  // size-1 dimensions
  Tensor a1 = random_input({1, 1}, gen), b1 = random_input({1, 5}, gen);
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::matmul(in[0], in[1]); }, (Inputs{a1, b1}));
}

TEST_CASE("matmul forward against a naive product, and shape errors", "[ops]") {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({1, 0, 0, 1, 1, 1}, {3, 2});
  testing::require_close(ops::matmul(a, b), std::vector<double>{4, 5, 10, 11});
  testing::require_close(ops::matmul(a, a, false, true), std::vector<double>{14, 32, 32, 77});
  REQUIRE_THROWS_WITH(ops::matmul(a, a), Catch::Contains("matmul") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_AS(ops::matmul(Tensor::ones({2, 2, 3}), Tensor::ones({3, 3, 2})), Error);
}

TEST_CASE("gradcheck: linear with and without bias, any leading dims", "[ops][gradcheck]") {
  Generator gen(15);
  Tensor w = random_input({3, 4}, gen), bias = random_input({3}, gen);
  for (const Shape& xs : {Shape{5, 4}, Shape{2, 3, 4}, Shape{1, 4}, Shape{4}}) {
    Tensor x = random_input(xs, gen);
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::linear(in[0], in[1], in[2]); }, (Inputs{x, w, bias}));
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::linear(in[0], in[1]); }, (Inputs{x, w}));
  }
  REQUIRE_THROWS_WITH(ops::linear(Tensor::ones({2, 5}), Tensor::ones({3, 4})), Catch::Contains("linear"));
  REQUIRE_THROWS_AS(ops::linear(Tensor::ones({2, 4}), Tensor::ones({3, 4}), Tensor::ones({4})), Error);
}

TEST_CASE("linear equals matmul against the transposed weight plus bias", "[ops]") {
  Generator gen(16);
  Tensor x = Tensor::randn({6, 5}, gen), w = Tensor::randn({7, 5}, gen), b = Tensor::randn({7}, gen);
  testing::require_close(ops::linear(x, w, b), ops::add(ops::matmul(x, w, false, true), b), 1e-5, 1e-5);
}

TEST_CASE("gradcheck: sum and mean over all and over an axis", "[ops][gradcheck]") {
  Generator gen(17);
  for (const Shape& s : {Shape{4}, Shape{2, 3, 4}, Shape{1, 5}, Shape{3, 1}}) {
    Tensor x = random_input(s, gen);
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::sum(in[0]); }, Inputs{x});
    REQUIRE_GRADCHECK([](const Inputs& in) { return ops::mean(in[0]); }, Inputs{x});
    for (int axis = -s.rank(); axis < s.rank(); ++axis) {
      for (bool keep : {false, true}) {
        INFO("shape " << s.str() << " axis " << axis << " keepdim " << keep);
        REQUIRE_GRADCHECK([axis, keep](const Inputs& in) { return ops::sum(in[0], axis, keep); }, Inputs{x});
        REQUIRE_GRADCHECK([axis, keep](const Inputs& in) { return ops::mean(in[0], axis, keep); }, Inputs{x});
      }
    }
  }
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

TEST_CASE("gradcheck: reshape, permute, transpose", "[ops][gradcheck]") {
  Generator gen(18);
  Tensor x = random_input({2, 3, 4}, gen);
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::reshape(in[0], {4, -1}) * 2.0; }, Inputs{x});
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::permute(in[0], {2, 0, 1}); }, Inputs{x});
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::permute(in[0], {1, 2, 0}); }, Inputs{x});
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::transpose(in[0], 0, -1); }, Inputs{x});
  Tensor y = random_input({1, 3, 1}, gen);
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::transpose(in[0], 1, 2); }, Inputs{y});
}

TEST_CASE("permute forward moves elements", "[ops]") {
  Tensor x = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = ops::transpose(x, 0, 1);
  REQUIRE(t.shape() == Shape{3, 2});
  testing::require_close(t, std::vector<double>{0, 3, 1, 4, 2, 5});
  REQUIRE_THROWS_AS(ops::permute(x, {0, 0}), Error);
}

TEST_CASE("gradcheck: slice, split, concat", "[ops][gradcheck]") {
  Generator gen(19);
  Tensor x = random_input({3, 5, 2}, gen);
  for (int axis : {0, 1, 2}) {
    const int64_t n = x.shape()[axis];
    REQUIRE_GRADCHECK([axis, n](const Inputs& in) { return ops::slice(in[0], axis, 1, n); }, Inputs{x});
    REQUIRE_GRADCHECK([axis](const Inputs& in) { return ops::slice(in[0], axis, 0, 1); }, Inputs{x});
  }
  REQUIRE_GRADCHECK(
      [](const Inputs& in) {
        auto parts = ops::split(in[0], 1, {2, 1, 2});
        return ops::concat({parts[2] * 2.0, parts[0], parts[1] * -1.0}, 1);
      },
      Inputs{x});
  Tensor a = random_input({2, 3}, gen), b = random_input({2, 1}, gen);
  REQUIRE_GRADCHECK([](const Inputs& in) { return ops::concat({in[0], in[1], in[0]}, -1); }, (Inputs{a, b}));
  Tensor c = Tensor::uniform({2, 2}, gen, -1, 1, DType::F64);  // a constant among them
  REQUIRE_GRADCHECK([c](const Inputs& in) { return ops::concat({c, in[0]}, 1); }, Inputs{a});
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
