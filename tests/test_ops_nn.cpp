// Tests of the fused NN ops: softmax, log_softmax, layer_norm, embedding, cross_entropy, dropout and
// causal_attention. For each: registered cases (a float64 gradcheck with GradcheckOptions' defaults, central
// differences at eps = 1e-6 passing when |analytic - numeric| <= 1e-7 + 1e-5 |numeric|; parity of float32
// against float64 and of CUDA against the CPU, run by tests/test_op_registry.cpp), a forward check against a
// naive loop or the composed ops, and the errors on bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "tests/op_cases.h"

using namespace lora;

namespace {

Tensor randn64(const Shape& shape, Generator& gen, bool requires_grad = true) {
  Tensor t = Tensor::randn(shape, gen, 0.0, 1.0, DType::F64);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor ids64(const std::vector<int64_t>& values, const Shape& shape) {
  return Tensor::from_vector(values, shape);
}

// |a - b| <= atol + rtol * |b| elementwise.
void require_close(const std::vector<double>& a, const std::vector<double>& b, double atol, double rtol) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i << ": " << a[i] << " vs " << b[i]);
    REQUIRE(std::abs(a[i] - b[i]) <= atol + rtol * std::abs(b[i]));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Registered cases

namespace {

using testing::gradcheck_case;
using testing::Inputs;
using testing::MakeInputs;
using testing::parity_case;

// Normal leaves of the given shapes and dtype (each requires grad unless listed in `frozen`), from `seed`.
MakeInputs normal_inputs(std::vector<Shape> shapes, uint64_t seed, DType dtype = DType::F64,
                         std::vector<int> frozen = {}) {
  return [=] {
    Generator gen(seed);
    Inputs in;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const bool trains = std::find(frozen.begin(), frozen.end(), static_cast<int>(i)) == frozen.end();
      in.push_back(testing::randn_leaf(shapes[i], gen, dtype, trains));
    }
    return in;
  };
}

// Inputs followed by one integer tensor (ids or targets).
MakeInputs with_ids(MakeInputs make, std::vector<int64_t> values, Shape shape) {
  return [=] {
    Inputs in = make();
    in.push_back(testing::ids(values, shape));
    return in;
  };
}

// n ids in [0, vocab).
std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int64_t>(gen.below(vocab));
  return t;
}

// n targets in [0, vocab), one of them ignored (-100).
std::vector<int64_t> random_targets(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> t = random_ids(n, vocab, seed);
  t[n / 3] = -100;
  return t;
}

}  // namespace

LORA_OP_CASES(nn_cases) {
  const DType F32 = DType::F32;
  // softmax, log_softmax
  const testing::OpFn softmax = [](const Inputs& in) { return ops::softmax(in[0]); };
  const testing::OpFn log_softmax = [](const Inputs& in) { return ops::log_softmax(in[0]); };
  for (const Shape& shape : {Shape{5}, Shape{3, 7}, Shape{2, 3, 4}, Shape{1, 1}, Shape{4, 1}}) {
    gradcheck_case("softmax", shape.str(), softmax, normal_inputs({shape}, 1));
    gradcheck_case("log_softmax", shape.str(), log_softmax, normal_inputs({shape}, 2));
  }
  // [64, 300] is large enough for the multi-threaded CPU path.
  for (const Shape& shape : {Shape{3, 5}, Shape{64, 300}}) {
    parity_case("softmax", shape.str(), softmax, normal_inputs({shape}, 3, F32), testing::kRows);
    parity_case("log_softmax", shape.str(), log_softmax, normal_inputs({shape}, 3, F32), testing::kRows);
  }

  // layer_norm: all inputs train; C = 1 is degenerate (x - mean = 0, so y = bias) but has a zero gradient for x.
  const testing::OpFn ln = [](const Inputs& in) { return ops::layer_norm(in[0], in[1], in[2]); };
  for (const Shape& shape : {Shape{4, 6}, Shape{2, 3, 5}, Shape{1, 8}, Shape{3, 1}, Shape{7}}) {
    const Shape param{shape[-1]};
    gradcheck_case("layer_norm", shape.str() + ", every input trains", ln, normal_inputs({shape, param, param}, 4));
  }
  gradcheck_case("layer_norm", "frozen weight and bias (the LoRA case)", ln,
                 normal_inputs({{3, 5}, {5}, {5}}, 5, DType::F64, {1, 2}));
  gradcheck_case("layer_norm", "only the bias trains", ln, normal_inputs({{3, 5}, {5}, {5}}, 5, DType::F64, {0, 1}));
  gradcheck_case("layer_norm", "only the weight trains", ln, normal_inputs({{3, 5}, {5}, {5}}, 5, DType::F64, {0, 2}));
  // [100, 200] takes the multi-threaded path with per-thread parameter sums.
  for (const Shape& shape : {Shape{3, 7}, Shape{100, 200}}) {
    const Shape param{shape[-1]};
    parity_case("layer_norm", shape.str(), ln, normal_inputs({shape, param, param}, 6, F32), testing::kSums);
  }

  // embedding: repeated ids; I32 ids with a single lookup.
  const testing::OpFn emb = [](const Inputs& in) { return ops::embedding(in[0], in[1]); };
  gradcheck_case("embedding", "[5, 3] with repeated ids", emb,
                 with_ids(normal_inputs({{5, 3}}, 8), {1, 4, 1, 0, 4, 4}, {2, 3}));
  gradcheck_case("embedding", "a single int32 id", emb, [] {
    Generator gen(8);
    return Inputs{testing::randn_leaf({3, 1}, gen, DType::F64), Tensor::from_vector(std::vector<int32_t>{2}, {1})};
  });
  parity_case("embedding", "[50, 300], 100 ids", emb,
              with_ids(normal_inputs({{50, 300}}, 9, F32), random_ids(100, 50, 9), {4, 25}), testing::kSums);

  // cross_entropy: ignored rows, a custom ignore_index, one row, one class.
  const testing::OpFn ce = [](const Inputs& in) { return ops::cross_entropy(in[0], in[1]); };
  gradcheck_case("cross_entropy", "[4, 5] with one ignored row", ce,
                 with_ids(normal_inputs({{4, 5}}, 10), {2, -100, 0, 4}, {4}));
  gradcheck_case(
      "cross_entropy", "[2, 3, 6] with ignore_index 3",
      [](const Inputs& in) { return ops::cross_entropy(in[0], in[1], 3); },
      with_ids(normal_inputs({{2, 3, 6}}, 10), {1, 5, 3, 3, 0, 1}, {2, 3}));
  gradcheck_case("cross_entropy", "a single row", ce, with_ids(normal_inputs({{1, 4}}, 10), {3}, {1}));
  gradcheck_case("cross_entropy", "a single class", ce, with_ids(normal_inputs({{2, 1}}, 10), {0, 0}, {2}));
  parity_case("cross_entropy", "[64, 500] with an ignored row", ce,
              with_ids(normal_inputs({{64, 500}}, 13, F32), random_targets(64, 500, 13), {64}), testing::kRows);

  // dropout: p = 0.3 (the seed fixes the mask).
  const testing::OpFn drop = [](const Inputs& in) { return ops::dropout(in[0], 0.3, true, 1234); };
  for (const Shape& shape : {Shape{4, 5}, Shape{1}})
    gradcheck_case("dropout", shape.str(), drop, normal_inputs({shape}, 14));
  parity_case("dropout", "[33, 257]", drop, normal_inputs({{33, 257}}, 14, F32));

  // causal_attention: T = 67 crosses the CPU kernel's 64-row block (the cross-block sums of grad_k, grad_v).
  const testing::OpFn attn = [](const Inputs& in) { return ops::causal_attention(in[0], in[1], in[2]); };
  for (const Shape& shape : {Shape{2, 2, 3, 4}, Shape{1, 1, 1, 3}, Shape{1, 2, 5, 1}, Shape{1, 1, 67, 2}}) {
    gradcheck_case("causal_attention", shape.str(), attn, normal_inputs({shape, shape, shape}, 16));
  }
  gradcheck_case(
      "causal_attention", "an explicit scale, and only v needs a gradient",
      [](const Inputs& in) { return ops::causal_attention(in[0], in[1], in[2], 0.7); },
      normal_inputs({{1, 2, 4, 3}, {1, 2, 4, 3}, {1, 2, 4, 3}}, 16, DType::F64, {0, 1}));
  for (const Shape& shape : {Shape{2, 2, 6, 4}, Shape{1, 3, 70, 16}}) {
    parity_case("causal_attention", shape.str(), attn, normal_inputs({shape, shape, shape}, 18, F32),
                testing::kAttention);
  }
}

// ---------------------------------------------------------------------------------------------------
// softmax / log_softmax

TEST_CASE("softmax and log_softmax: forward against a naive loop", "[nn]") {
  Generator gen(2);
  const int64_t rows = 6, cols = 9;
  Tensor x = Tensor::randn({2, 3, cols}, gen, 0.0, 3.0, DType::F64);
  x.set({0, 0, 0}, 1000.0);  // stability: exp(1000) overflows unless the row max is subtracted
  const std::vector<double> xs = x.to_vector<double>();
  const std::vector<double> y = ops::softmax(x).to_vector<double>();
  const std::vector<double> ly = ops::log_softmax(x).to_vector<double>();
  for (int64_t r = 0; r < rows; ++r) {
    double m = xs[r * cols];
    for (int64_t j = 0; j < cols; ++j) m = std::max(m, xs[r * cols + j]);
    double sum = 0, total = 0;
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(xs[r * cols + j] - m);
    for (int64_t j = 0; j < cols; ++j) {
      const double expected = std::exp(xs[r * cols + j] - m) / sum;
      REQUIRE(y[r * cols + j] == Approx(expected).margin(1e-15));
      REQUIRE(ly[r * cols + j] == Approx(xs[r * cols + j] - m - std::log(sum)).margin(1e-12));
      total += y[r * cols + j];
    }
    REQUIRE(total == Approx(1.0).margin(1e-12));
  }
}

// ---------------------------------------------------------------------------------------------------
// layer_norm

TEST_CASE("layer_norm: normalises each row, then applies the affine map", "[nn]") {
  Generator gen(5);
  const int64_t rows = 6, cols = 10;
  const double eps = 1e-5;
  Tensor x = Tensor::randn({2, 3, cols}, gen, 2.0, 3.0, DType::F64);
  Tensor w = Tensor::randn({cols}, gen, 1.0, 0.5, DType::F64), b = Tensor::randn({cols}, gen, 0.0, 0.5, DType::F64);
  const std::vector<double> xs = x.to_vector<double>(), ws = w.to_vector<double>(), bs = b.to_vector<double>();
  const std::vector<double> plain =
      ops::layer_norm(x, Tensor::ones({cols}, DType::F64), Tensor::zeros({cols}, DType::F64), eps).to_vector<double>();
  const std::vector<double> affine = ops::layer_norm(x, w, b, eps).to_vector<double>();
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0, out_mean = 0, out_var = 0;
    for (int64_t j = 0; j < cols; ++j) mean += xs[r * cols + j] / cols;
    for (int64_t j = 0; j < cols; ++j) var += (xs[r * cols + j] - mean) * (xs[r * cols + j] - mean) / cols;
    for (int64_t j = 0; j < cols; ++j) out_mean += plain[r * cols + j] / cols;
    for (int64_t j = 0; j < cols; ++j)
      out_var += (plain[r * cols + j] - out_mean) * (plain[r * cols + j] - out_mean) / cols;
    REQUIRE(out_mean == Approx(0.0).margin(1e-12));
    REQUIRE(out_var == Approx(var / (var + eps)).epsilon(1e-12));  // 1, up to eps
    for (int64_t j = 0; j < cols; ++j) {
      const double expected = (xs[r * cols + j] - mean) / std::sqrt(var + eps) * ws[j] + bs[j];
      REQUIRE(affine[r * cols + j] == Approx(expected).margin(1e-12));
    }
  }
}

TEST_CASE("layer_norm: matches the same computation composed from simple ops", "[nn]") {
  Generator gen(19);
  const auto fused = [](const std::vector<Tensor>& in) { return ops::layer_norm(in[0], in[1], in[2], 1e-5); };
  const auto composed = [](const std::vector<Tensor>& in) {
    Tensor centred = in[0] - ops::mean(in[0], -1, true);
    Tensor std = ops::sqrt(ops::mean(ops::square(centred), -1, true) + 1e-5);
    return centred / std * in[1] + in[2];
  };
  std::vector<Tensor> a{randn64({2, 3, 6}, gen), randn64({6}, gen), randn64({6}, gen)}, b;
  for (const Tensor& t : a) b.push_back(t.detach().clone().set_requires_grad(true));
  Tensor seed = Tensor::randn({2, 3, 6}, gen, 0.0, 1.0, DType::F64);
  Tensor ya = fused(a);
  backward(ya, seed);
  Tensor yb = composed(b);
  backward(yb, seed);
  require_close(ya.to_vector<double>(), yb.to_vector<double>(), 1e-12, 1e-10);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("gradient of input " << i);
    require_close(a[i].grad().to_vector<double>(), b[i].grad().to_vector<double>(), 1e-12, 1e-10);
  }
}

TEST_CASE("layer_norm: saves only what the needed gradients use", "[nn]") {
  Generator gen(7);
  auto& tape = autograd::Tape::current();
  tape.clear();
  SECTION("only the bias trains: nothing is saved") {
    ops::layer_norm(randn64({4, 6}, gen, false), randn64({6}, gen, false), randn64({6}, gen));
    REQUIRE(tape.size() == 1);
    REQUIRE(tape.nodes().back().saved.empty());
  }
  SECTION("x needs a gradient: x, mean, rstd and the weight are saved") {
    ops::layer_norm(randn64({4, 6}, gen), randn64({6}, gen, false), randn64({6}, gen, false));
    REQUIRE(tape.size() == 1);
    REQUIRE(tape.nodes().back().saved.size() == 4);
  }
  tape.clear();
}

TEST_CASE("layer_norm: bad shapes are errors", "[nn]") {
  Tensor x = Tensor::zeros({2, 4}, DType::F64);
  REQUIRE_THROWS_AS(ops::layer_norm(x, Tensor::ones({3}, DType::F64), Tensor::zeros({4}, DType::F64)), lora::Error);
  REQUIRE_THROWS_AS(ops::layer_norm(x, Tensor::ones({4}, DType::F64), Tensor::zeros({2, 4}, DType::F64)), lora::Error);
  REQUIRE_THROWS_AS(ops::layer_norm(x, Tensor::ones({4}, DType::F32), Tensor::zeros({4}, DType::F64)), lora::Error);
}

// ---------------------------------------------------------------------------------------------------
// embedding

TEST_CASE("embedding: picks rows, and the gradient is a scatter-add", "[nn]") {
  Generator gen(9);
  // [100 ids, 300 columns] takes the multi-threaded paths.
  const int64_t vocab = 50, cols = 300, n = 100;
  Tensor w = Tensor::randn({vocab, cols}, gen);
  w.set_requires_grad(true);
  std::vector<int64_t> idv(n);
  for (auto& id : idv) id = static_cast<int64_t>(gen.below(vocab));
  Tensor ids = ids64(idv, {4, 25});
  Tensor out = ops::embedding(w, ids);
  REQUIRE(out.shape() == Shape({4, 25, cols}));
  const std::vector<float> ws = w.to_vector<float>(), os = out.to_vector<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) REQUIRE(os[i * cols + c] == ws[idv[i] * cols + c]);

  Tensor g = Tensor::randn(out.shape(), gen);
  backward(out, g);
  const std::vector<double> gs = g.to_vector<double>();
  std::vector<double> expected(vocab * cols, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) expected[idv[i] * cols + c] += gs[i * cols + c];
  require_close(w.grad().to_vector<double>(), expected, 1e-5, 1e-5);
}

TEST_CASE("embedding: an id out of range is an error", "[nn]") {
  Tensor w = Tensor::zeros({4, 3});
  REQUIRE_THROWS_AS(ops::embedding(w, ids64({0, 4}, {2})), lora::Error);
  REQUIRE_THROWS_AS(ops::embedding(w, ids64({-1}, {1})), lora::Error);
  REQUIRE_THROWS_AS(ops::embedding(w, Tensor::zeros({2}, DType::F32)), lora::Error);  // ids must be integers
}

// ---------------------------------------------------------------------------------------------------
// cross_entropy

TEST_CASE("cross_entropy: equals the mean of -log softmax at the target", "[nn]") {
  Generator gen(11);
  const int64_t rows = 6, vocab = 7;
  Tensor logits = Tensor::randn({2, 3, vocab}, gen, 0.0, 4.0, DType::F64);
  const std::vector<int64_t> tv{0, 6, -100, 3, 3, -100};
  const std::vector<double> xs = logits.to_vector<double>();
  double total = 0;
  int count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (tv[r] == -100) continue;
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(xs[r * vocab + j]);
    total += -std::log(std::exp(xs[r * vocab + tv[r]]) / sum);
    ++count;
  }
  Tensor loss = ops::cross_entropy(logits, ids64(tv, {2, 3}));
  REQUIRE(loss.shape() == Shape());
  REQUIRE(loss.item() == Approx(total / count).epsilon(1e-12));

  // Huge logits: the fused logsumexp stays finite where the naive formula would overflow.
  Tensor big = Tensor::from_vector(std::vector<double>{1000.0, 0.0}, {1, 2});
  REQUIRE(ops::cross_entropy(big, ids64({1}, {1})).item() == Approx(1000.0));
}

TEST_CASE("cross_entropy: every row ignored gives a zero loss and a zero gradient", "[nn]") {
  Generator gen(12);
  Tensor logits = randn64({3, 4}, gen);
  Tensor loss = ops::cross_entropy(logits, ids64({-100, -100, -100}, {3}));
  REQUIRE(loss.item() == 0.0);
  backward(loss);
  for (double g : logits.grad().to_vector<double>()) REQUIRE(g == 0.0);
}

TEST_CASE("cross_entropy: a target out of range is an error", "[nn]") {
  Tensor logits = Tensor::zeros({2, 5});
  REQUIRE_THROWS_AS(ops::cross_entropy(logits, ids64({0, 5}, {2})), lora::Error);
  REQUIRE_THROWS_AS(ops::cross_entropy(logits, ids64({-1, 0}, {2})), lora::Error);    // negative, not ignore_index
  REQUIRE_THROWS_AS(ops::cross_entropy(logits, ids64({0, 1, 2}, {3})), lora::Error);  // one target per row
}

// ---------------------------------------------------------------------------------------------------
// dropout

TEST_CASE("dropout: keeps about 1 - p of the elements, scaled by 1 / (1 - p)", "[nn]") {
  const double p = 0.3;
  const int64_t n = 100000;
  Tensor x = Tensor::ones({n});
  const std::vector<float> y = ops::dropout(x, p, true, 42).to_vector<float>();
  int64_t kept = 0;
  for (float v : y) {
    if (v != 0.0f) {
      ++kept;
      REQUIRE(v == Approx(1.0 / (1.0 - p)));
    }
  }
  REQUIRE(static_cast<double>(kept) / n == Approx(1.0 - p).margin(0.01));
  // Element i is kept exactly when counter_uniform(42, i) >= p (what the CUDA kernel must also do).
  for (int64_t i = 0; i < 1000; ++i) REQUIRE((y[i] != 0.0f) == (counter_uniform(42, i) >= static_cast<float>(p)));
  // The same seed gives the same mask; another seed another one.
  REQUIRE(ops::dropout(x, p, true, 42).to_vector<float>() == y);
  REQUIRE(ops::dropout(x, p, true, 43).to_vector<float>() != y);
}

TEST_CASE("dropout: identity when p = 0 or not training, and p must lie between 0 (inclusive) and 1 (exclusive)",
          "[nn]") {
  Generator gen(15);
  Tensor x = randn64({3, 4}, gen);
  auto& tape = autograd::Tape::current();
  tape.clear();
  REQUIRE(ops::dropout(x, 0.0, true, 1).impl() == x.impl());
  REQUIRE(ops::dropout(x, 0.5, false, 1).impl() == x.impl());
  REQUIRE(tape.size() == 0);
  ops::dropout(x, 0.5, true, 1);
  REQUIRE(tape.size() == 1);
  REQUIRE(tape.nodes().back().saved.empty());  // the mask is regenerated, not stored
  tape.clear();
  REQUIRE_THROWS_AS(ops::dropout(x, 1.0, true, 1), lora::Error);
  REQUIRE_THROWS_AS(ops::dropout(x, -0.1, true, 1), lora::Error);
}

// ---------------------------------------------------------------------------------------------------
// causal_attention

namespace {

// out[b, h, i] = sum_{j <= i} softmax_j(q[i] . k[j] * scale) v[j], in plain loops.
std::vector<double> naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  const int64_t bh = q.size(0) * q.size(1), t = q.size(2), d = q.size(3);
  const std::vector<double> qs = q.to_vector<double>(), ks = k.to_vector<double>(), vs = v.to_vector<double>();
  std::vector<double> out(qs.size(), 0.0), s(t);
  for (int64_t n = 0; n < bh; ++n) {
    const int64_t base = n * t * d;
    for (int64_t i = 0; i < t; ++i) {
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j <= i; ++j) {
        s[j] = 0;
        for (int64_t c = 0; c < d; ++c) s[j] += qs[base + i * d + c] * ks[base + j * d + c] * scale;
        m = std::max(m, s[j]);
      }
      for (int64_t j = 0; j <= i; ++j) sum += std::exp(s[j] - m);
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t c = 0; c < d; ++c) out[base + i * d + c] += std::exp(s[j] - m) / sum * vs[base + j * d + c];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("causal_attention: equals a naive masked softmax(q k^T * scale) v", "[nn]") {
  Generator gen(17);
  for (const Shape& shape : {Shape{2, 3, 5, 4}, Shape{1, 1, 1, 2}, Shape{1, 2, 70, 8}}) {
    INFO("shape " << shape.str());
    Tensor q = randn64(shape, gen, false), k = randn64(shape, gen, false), v = randn64(shape, gen, false);
    const double scale = 1.0 / std::sqrt(static_cast<double>(shape[3]));
    require_close(ops::causal_attention(q, k, v).to_vector<double>(), naive_attention(q, k, v, scale), 1e-12, 1e-10);
    require_close(ops::causal_attention(q, k, v, 0.3).to_vector<double>(), naive_attention(q, k, v, 0.3), 1e-12, 1e-10);
  }
}

TEST_CASE("causal_attention: matches the same computation composed from simple ops", "[nn]") {
  Generator gen(20);
  const int64_t t = 5;
  std::vector<double> mask_values(t * t, 0.0);  // [T, T]: -1e30 above the diagonal
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = i + 1; j < t; ++j) mask_values[i * t + j] = -1e30;
  Tensor mask = Tensor::from_vector(mask_values, {t, t});
  const double scale = 0.4;
  const auto composed = [&](const std::vector<Tensor>& in) {
    Tensor scores = ops::matmul(in[0], in[1], false, true) * scale + mask;  // [B, H, T, T]
    return ops::matmul(ops::softmax(scores), in[2]);
  };
  const Shape shape{2, 2, t, 3};
  std::vector<Tensor> a{randn64(shape, gen), randn64(shape, gen), randn64(shape, gen)}, b;
  for (const Tensor& x : a) b.push_back(x.detach().clone().set_requires_grad(true));
  Tensor seed = Tensor::randn(shape, gen, 0.0, 1.0, DType::F64);
  Tensor ya = ops::causal_attention(a[0], a[1], a[2], scale);
  backward(ya, seed);
  Tensor yb = composed(b);
  backward(yb, seed);
  require_close(ya.to_vector<double>(), yb.to_vector<double>(), 1e-12, 1e-10);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("gradient of input " << i);
    require_close(a[i].grad().to_vector<double>(), b[i].grad().to_vector<double>(), 1e-12, 1e-10);
  }
}

TEST_CASE("causal_attention: mismatched shapes are errors", "[nn]") {
  Tensor q = Tensor::zeros({1, 2, 3, 4});
  REQUIRE_THROWS_AS(ops::causal_attention(q, Tensor::zeros({1, 2, 4, 4}), q), lora::Error);
  REQUIRE_THROWS_AS(ops::causal_attention(q, q, Tensor::zeros({1, 2, 3, 5})), lora::Error);
  REQUIRE_THROWS_AS(ops::causal_attention(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 3, 4})),
                    lora::Error);
  REQUIRE_THROWS_AS(ops::causal_attention(q, q, Tensor::zeros({1, 2, 3, 4}, DType::F64)), lora::Error);
}
