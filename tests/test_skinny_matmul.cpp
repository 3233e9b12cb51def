// The skinny product (backends/cpu/skinny_matmul.h): every ISA this CPU runs, every base format, 1 to 16
// rows of x, against float64 products with the dequantized weight; alpha and beta; the threaded split; the
// gemm that routes decode-sized products to it.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/ops.h"
#include "backends/cpu/bandwidth_probe.h"
#include "backends/cpu/compute_probe.h"
#include "backends/cpu/skinny_matmul.h"
#include "core/quantized.h"
#include "core/random.h"

using namespace lora;
using namespace lora::cpu;

namespace {

struct Case {
  QuantFormat format;
  bool double_quant;
  const char* name;
};

const Case kCases[] = {{QuantFormat::F32, false, "f32"},   {QuantFormat::BF16, false, "bf16"},
                       {QuantFormat::Q8_0, false, "q8_0"}, {QuantFormat::Q4_0, false, "q4_0"},
                       {QuantFormat::NF4, false, "nf4"},   {QuantFormat::NF4, true, "nf4, double-quantized"}};

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Portable, Isa::AVX2, Isa::AVX512}) {
    if (isa_supported(isa)) out.push_back(isa);
  }
  return out;
}

// A weight and its view in `format` (F32: the tensor itself); `dense` is what the view holds, as f32.
struct Weight {
  Tensor f32;
  QuantizedWeight q;
  QuantizedView view{};
  std::vector<float> dense;
};

Weight make_weight(int64_t n, int64_t k, const Case& c, uint64_t seed) {
  Generator gen(seed);
  Weight w;
  w.f32 = Tensor::randn({n, k}, gen, 0.0, 0.05, DType::F32);
  if (c.format == QuantFormat::F32) {
    w.view = QuantizedView{QuantFormat::F32, n,       k,       static_cast<const uint8_t*>(w.f32.raw_data()),
                           nullptr,          nullptr, nullptr, 0.0f};
  } else {
    w.q = quantize_weight(w.f32, c.format, c.double_quant);
    w.view = host_view(w.q);
  }
  w.dense.resize(static_cast<size_t>(n * k));
  dequantize_span(w.view, 0, n * k, w.dense.data());
  return w;
}

// Checks skinny_matmul(isa) against y = alpha x dense^T + beta y0 in float64, within 1e-5 of sum |x w|
// (f32 accumulation over k terms in a different order).
void check_product(const Weight& w, int64_t m, Isa isa, float alpha, float beta, uint64_t seed) {
  const int64_t n = w.view.rows, k = w.view.cols, ldx = k + 3, ldy = n + 2;
  Generator gen(seed);
  const std::vector<float> x = Tensor::randn({m * ldx}, gen, 0.0, 1.0, DType::F32).to_vector<float>();
  std::vector<float> y0 = Tensor::randn({m * ldy}, gen, 0.0, 1.0, DType::F32).to_vector<float>();
  if (beta == 0.0f) std::fill(y0.begin(), y0.end(), std::numeric_limits<float>::quiet_NaN());  // never read
  std::vector<float> y = y0;
  SkinnyProduct p;
  p.x = x.data(), p.m = m, p.ldx = ldx, p.w = w.view, p.alpha = alpha, p.beta = beta, p.y = y.data(), p.ldy = ldy;
  skinny_matmul(p, isa);
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double s = 0, mag = 0;
      for (int64_t c = 0; c < k; ++c) {
        const double t = static_cast<double>(x[i * ldx + c]) * w.dense[r * k + c];
        s += t, mag += std::abs(t);
      }
      const size_t at = static_cast<size_t>(i * ldy + r);
      const double old = beta == 0.0f ? 0.0 : beta * static_cast<double>(y0[at]);
      const double ref = alpha * s + old;
      const double err = std::abs(y[at] - ref), tol = 1e-5 * (std::abs(alpha) * mag + std::abs(old)) + 1e-30;
      worst = std::max(worst, err / tol);
      bad += !(err <= tol);
    }
    for (int64_t r = n; r < ldy; ++r) {  // the padding past n is untouched
      const size_t at = static_cast<size_t>(i * ldy + r);
      bad += !(std::isnan(y0[at]) ? std::isnan(y[at]) : y[at] == y0[at]);
    }
  }
  INFO(isa_name(isa) << ", m " << m << ", n " << n << ", k " << k << ", alpha " << alpha << ", beta " << beta
                     << ": worst error " << worst << " of the tolerance");
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("skinny products match float64 for every ISA and format", "[skinny]") {
  for (const Case& c : kCases) {
    // k = 96: three steps of 32; n = 37: whole tiles and a remainder.
    const Weight w = make_weight(37, 96, c, 1);
    for (Isa isa : supported_isas()) {
      for (int64_t m : {1, 2, 3, 4, 5, 8, 13, 16}) {
        INFO(c.name);
        check_product(w, m, isa, 1.0f, 0.0f, 10 + m);
      }
    }
  }
}

TEST_CASE("skinny products apply alpha and beta, and never read y when beta is 0", "[skinny]") {
  for (const Case& c : kCases) {
    const Weight w = make_weight(19, 64, c, 2);
    for (Isa isa : supported_isas()) {
      INFO(c.name);
      check_product(w, 3, isa, 0.5f, 1.0f, 3);
      check_product(w, 1, isa, -2.0f, 0.25f, 4);
      check_product(w, 2, isa, 1.0f, 0.0f, 5);
    }
  }
}

TEST_CASE("skinny products take columns that are not whole steps", "[skinny]") {
  // f32 and bf16 finish the row in scalar code; nf4 with blocks that straddle rows takes the portable code.
  for (const Case& c : kCases) {
    if (c.format == QuantFormat::Q8_0 || c.format == QuantFormat::Q4_0) continue;  // rows are whole blocks
    const Weight w = make_weight(11, 70, c, 6);
    for (Isa isa : supported_isas()) {
      INFO(c.name);
      check_product(w, 1, isa, 1.0f, 0.0f, 7);
      check_product(w, 6, isa, 1.0f, 1.0f, 8);
    }
  }
}

TEST_CASE("skinny products split large weights across threads", "[skinny]") {
  // 301 rows of 768: above the single-thread threshold in every format; 301 is not a multiple of the split.
  for (const Case& c : kCases) {
    const Weight w = make_weight(301, 768, c, 9);
    for (Isa isa : supported_isas()) {
      INFO(c.name);
      check_product(w, 1, isa, 1.0f, 0.0f, 11);
      check_product(w, 16, isa, 1.0f, 1.0f, 12);
    }
  }
}

TEST_CASE("skinny products refuse what they cannot do", "[skinny]") {
  const Weight w = make_weight(4, 32, kCases[0], 1);
  std::vector<float> x(17 * 32), y(17 * 4);
  SkinnyProduct p;
  p.x = x.data(), p.ldx = 32, p.w = w.view, p.y = y.data(), p.ldy = 4;
  p.m = 0;
  CHECK_THROWS_WITH(skinny_matmul(p), Catch::Contains("0 rows of x; expected 1 to 16"));
  p.m = 17;
  CHECK_THROWS_WITH(skinny_matmul(p), Catch::Contains("17 rows"));
  p.m = 1, p.ldx = 31;
  CHECK_THROWS_WITH(skinny_matmul(p), Catch::Contains("leading dimensions"));
}

TEST_CASE("matmul with few rows takes the skinny product and agrees with BLAS", "[skinny]") {
  // x [m, k] W^T through the backend's gemm (skinny up to the crossover) against the same in float64.
  Generator gen(21);
  const Tensor w = Tensor::randn({50, 200}, gen, 0.0, 0.1, DType::F32);
  for (int64_t m : {1, 4, 16, 17, 40}) {
    const Tensor x = Tensor::randn({2, m, 200}, gen, 0.0, 1.0, DType::F32);
    const Tensor y = ops::matmul(x, w, false, true);
    const Tensor ref = ops::matmul(x.to(DType::F64), w.to(DType::F64), false, true);
    const auto a = y.to_vector<double>(), b = ref.to_vector<double>();
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / (1 + std::abs(b[i])));
    INFO("m " << m);
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("the bandwidth probe reads the whole buffer with every thread", "[skinny]") {
  // The probe checks the sum of what it read itself (it throws otherwise); here: sizes, threads, figures.
  const BandwidthResult r = measure_read_bandwidth((size_t(8) << 20) + 100, 2);
  CHECK(r.bytes == size_t(8) << 20);  // rounded down to 4 KiB
  CHECK(r.threads >= 1);
  CHECK(r.best_gbps >= r.median_gbps);
  CHECK(r.median_gbps > 0);
  CHECK(default_probe_bytes() >= size_t(1) << 30);
  CHECK_THROWS_WITH(measure_read_bandwidth(100, 1), Catch::Contains("at least 4 KiB"));
}

TEST_CASE("the FMA peak probe runs every supported ISA's code and checks its result", "[skinny]") {
  // The probe compares the accumulators with their closed form itself (it throws otherwise): few and many
  // rounds (1 - 2^-n is exact below 24 rounds and 1 from there on).
  for (const Isa isa : {Isa::Portable, Isa::AVX2, Isa::AVX512}) {
    if (!isa_supported(isa)) continue;
    for (const int64_t iterations : {int64_t(1), int64_t(5), int64_t(20000)}) {
      const ComputeResult r = measure_fma_peak(iterations, 2, isa);
      INFO(isa_name(isa) << ", " << iterations << " rounds");
      CHECK(r.isa == isa);
      CHECK(r.threads >= 1);
      CHECK(r.best_gflops >= r.median_gflops);
      CHECK(r.median_gflops > 0);
    }
  }
  CHECK_THROWS_WITH(measure_fma_peak(0, 1), Catch::Contains("at least 1"));
}
