// Tests of the ops and kernels added for speed: linear_cross_entropy (registered cases, run by
// tests/test_op_registry.cpp; equality with linear + cross_entropy in float32), the vectorised float exp, and
// the float32 GELU against float64; and that no combined parallel-for-simd loop turns its simd off with a
// bare if clause.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/tape.h"
#include "backends/backend.h"
#include "backends/cpu/fast_math.h"
#include "backends/kernels/optimizer.h"
#include "tests/op_cases.h"

using namespace lora;

namespace {

Tensor randn(const Shape& shape, Generator& gen, DType dtype, bool requires_grad = true) {
  Tensor t = Tensor::randn(shape, gen, 0.0, 1.0, dtype);
  if (requires_grad) t.set_requires_grad(true);
  return t;
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

LORA_OP_CASES(linear_cross_entropy_cases) {
  using testing::Inputs;
  const auto inputs = [](std::vector<bool> trains, uint64_t seed, DType dtype) {
    return [=] {
      Generator gen(seed);
      return Inputs{testing::randn_leaf({2, 3, 5}, gen, dtype, trains[0]),
                    testing::randn_leaf({7, 5}, gen, dtype, trains[1]), testing::ids({2, -100, 0, 6, 6, 1}, {2, 3})};
    };
  };
  const testing::OpFn f = [](const Inputs& in) { return ops::linear_cross_entropy(in[0], in[1], in[2]); };
  testing::gradcheck_case("linear_cross_entropy", "x and weight, an ignored row", f,
                          inputs({true, true}, 21, DType::F64));
  testing::gradcheck_case("linear_cross_entropy", "frozen weight", f, inputs({true, false}, 21, DType::F64));
  testing::gradcheck_case("linear_cross_entropy", "frozen x", f, inputs({false, true}, 21, DType::F64));
  testing::parity_case("linear_cross_entropy", "x and weight", f, inputs({true, true}, 22, DType::F32), testing::kGemm);
}

TEST_CASE("linear_cross_entropy: equals linear + cross_entropy in float32, value and gradients", "[perf]") {
  Generator gen(22);
  const int64_t B = 2, T = 5, C = 16, V = 300;
  std::vector<int64_t> ids(B * T);
  for (auto& id : ids) id = static_cast<int64_t>(gen.below(V));
  ids[3] = -100;
  const Tensor targets = Tensor::from_vector(ids, {B, T});
  Tensor x1 = randn({B, T, C}, gen, DType::F32), w1 = randn({V, C}, gen, DType::F32);
  Tensor x2 = x1.detach().clone(), w2 = w1.detach().clone();
  x2.set_requires_grad(true);
  w2.set_requires_grad(true);
  Tensor fused = ops::linear_cross_entropy(x1, w1, targets);
  backward(fused);
  Tensor composed = ops::cross_entropy(ops::linear(x2, w2), targets);
  backward(composed);
  REQUIRE(fused.item() == Approx(composed.item()).epsilon(1e-6));
  require_close(x1.grad().to_vector<double>(), x2.grad().to_vector<double>(), 1e-6, 1e-4);
  require_close(w1.grad().to_vector<double>(), w2.grad().to_vector<double>(), 1e-6, 1e-4);
}

TEST_CASE("linear_cross_entropy: shape and dtype errors", "[perf]") {
  Generator gen(23);
  const Tensor x = randn({2, 4}, gen, DType::F32), w = randn({5, 4}, gen, DType::F32);
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 1}, {2});
  REQUIRE_THROWS_AS(ops::linear_cross_entropy(x, randn({5, 3}, gen, DType::F32), t), lora::Error);
  REQUIRE_THROWS_AS(ops::linear_cross_entropy(x, w, Tensor::from_vector(std::vector<int64_t>{0}, {1})), lora::Error);
  REQUIRE_THROWS_AS(ops::linear_cross_entropy(x, w, Tensor::from_vector(std::vector<int64_t>{0, 5}, {2})),
                    lora::Error);  // target out of range
}

// On a combined `parallel for simd` an if clause without a modifier applies to the simd part as well
// (OpenMP 5.0): the loops below the threading threshold (a decoding step's GELU) then ran scalar code. The
// clause must say `if (parallel : ...)`. Read from the sources, since nothing in a result shows it.
TEST_CASE("CPU kernels: no parallel-for-simd loop has a bare if clause", "[perf]") {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(LORA_TEST_DATA_DIR).parent_path().parent_path();
  const std::regex combined(R"(#pragma\s+omp\s+parallel\s+for\s+simd\b(.*))");
  const std::regex bare_if(R"(\bif\s*\((?!\s*parallel\s*:))");
  int loops = 0;
  for (const char* dir : {"backends", "nn", "optim", "autograd", "models", "serve", "core"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / dir)) {
      const std::string ext = entry.path().extension().string();
      if (ext != ".cpp" && ext != ".h") continue;
      std::ifstream in(entry.path());
      std::string line;
      for (int number = 1; std::getline(in, line); ++number) {
        std::smatch m;
        if (!std::regex_search(line, m, combined)) continue;
        ++loops;
        INFO(entry.path().string() << ":" << number << ": " << line);
        CHECK_FALSE(std::regex_search(m[1].str(), bare_if));
      }
    }
  }
  CHECK(loops >= 8);  // the scan found the sources (elementwise, swiglu, dropout, optimizer, reduce)
}

TEST_CASE("exp_f32: within 2e-7 relative of exp in double, clamped outside [-87, 88]", "[perf]") {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 1.0 / 1024) {
    const float f = static_cast<float>(x);
    const double ref = std::exp(static_cast<double>(f));
    worst = std::max(worst, std::abs(cpu::exp_f32(f) - ref) / ref);
  }
  REQUIRE(worst < 2e-7);
  REQUIRE(std::isfinite(cpu::exp_f32(1000.0f)));
  REQUIRE(cpu::exp_f32(-1000.0f) < 1e-37f);
  REQUIRE(cpu::exp_f32(0.0f) == 1.0f);
}

TEST_CASE("gelu: float32 (sigmoid form, vectorised exp) matches float64 (tanh form), value and gradient", "[perf]") {
  std::vector<double> xs;
  for (double x = -12.0; x <= 12.0; x += 0.01) xs.push_back(x);
  const int64_t n = static_cast<int64_t>(xs.size());
  Tensor x64 = Tensor::from_vector(xs, {n});
  Tensor x32 = x64.to(DType::F32);
  x64.set_requires_grad(true);
  x32.set_requires_grad(true);
  // One forward and backward at a time: backward clears the whole (per-thread) tape.
  Tensor y64 = ops::gelu(x64);
  backward(ops::sum(y64));
  Tensor y32 = ops::gelu(x32);
  backward(ops::sum(y32));
  require_close(y32.to_vector<double>(), y64.to_vector<double>(), 1e-6, 1e-5);
  require_close(x32.grad().to_vector<double>(), x64.grad().to_vector<double>(), 1e-6, 1e-5);
}

TEST_CASE("adam_step: the vectorised float path matches the scalar formula, tail included", "[perf]") {
  Generator gen(24);
  const int64_t n = 1003;  // 125 vectors of 8 and a tail of 3
  Tensor p = Tensor::randn({n}, gen), g = Tensor::randn({n}, gen), m = Tensor::randn({n}, gen, 0.0, 0.1);
  Tensor v = Tensor::uniform({n}, gen, 0.0, 0.01);
  std::vector<float> pr = p.to_vector<float>(), gr = g.to_vector<float>(), mr = m.to_vector<float>(),
                     vr = v.to_vector<float>();
  AdamStep hp;
  hp.lr = 1e-3, hp.weight_decay = 0.1, hp.step = 3;
  kernels::AdamUpdate::cpu(p, g, m, v, hp);
  const double bc1 = 1.0 - std::pow(hp.beta1, 3.0), bc2 = 1.0 - std::pow(hp.beta2, 3.0);
  const float b1 = float(hp.beta1), b2 = float(hp.beta2), omb1 = float(1.0 - hp.beta1), omb2 = float(1.0 - hp.beta2);
  const float step = float(hp.lr / bc1), bc2s = float(std::sqrt(bc2)), eps = float(hp.eps);
  const float keep = float(1.0 - hp.lr * hp.weight_decay);
  for (int64_t i = 0; i < n; ++i) {
    mr[i] = b1 * mr[i] + omb1 * gr[i];
    vr[i] = b2 * vr[i] + omb2 * gr[i] * gr[i];
    pr[i] = pr[i] * keep - step * (mr[i] / (std::sqrt(vr[i]) / bc2s + eps));
  }
  std::vector<double> pd(pr.begin(), pr.end()), md(mr.begin(), mr.end()), vd(vr.begin(), vr.end());
  // Within a few float ulps of the terms (|p| ~ 1, |m| ~ 0.1, v ~ 0.01): the compiler may contract the scalar
  // formula's multiply-adds into FMAs, the vector code does not.
  require_close(p.to_vector<double>(), pd, 1e-6, 1e-6);
  require_close(m.to_vector<double>(), md, 1e-7, 1e-6);
  require_close(v.to_vector<double>(), vd, 1e-9, 1e-6);
}
