// Every elementwise op's forward against its independent long double reference (tests/elementwise_reference.h),
// generated from the op table like the gradchecks: float64 to within a few units in the last place, float32 to
// its own rounding (plus the fast exp's error), over a wide range of inputs (not only the gradchecks' domain).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "tests/elementwise_reference.h"
#include "tests/test_helpers.h"

using namespace lora;
using namespace lora::testing;

namespace {

// Inputs spread over a wide range of the op's domain: Real: -12 .. 12 (both signs, zero excluded so that
// relu's kink is not sampled); Positive: 1e-4 .. 1e3, log-spaced.
std::vector<double> wide_inputs(TestDomain domain) {
  std::vector<double> v;
  const int n = 401;
  for (int i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / (n - 1);
    if (domain == TestDomain::Positive)
      v.push_back(std::pow(10.0, -4.0 + 7.0 * t));
    else if (i != n / 2)
      v.push_back(-12.0 + 24.0 * t);
  }
  return v;
}

// The largest |y - ref| / ((|ref| + floor) max(1, cond)) over the elements: relative where the reference is
// not tiny, and scaled by the function's condition number cond = |x f'(x) / f(x)| where it exceeds 1 (gelu at
// x = -12 has cond ~ 360: rounding u to the working precision alone moves the result that much).
struct Worst {
  double error = 0;
  double at = 0;
};

void expect_close(const char* name, DType dtype, const std::vector<double>& got, const std::vector<long double>& ref,
                  const std::vector<double>& x, const std::vector<long double>& cond, double tolerance, double floor) {
  Worst worst;
  for (size_t i = 0; i < got.size(); ++i) {
    const long double diff = std::abs(static_cast<long double>(got[i]) - ref[i]);
    const double error = static_cast<double>(diff / ((std::abs(ref[i]) + floor) * std::max(1.0L, cond[i])));
    if (!(error <= worst.error)) worst = {error, x[i]};  // a NaN becomes the worst
  }
  INFO(name << " in " << dtype_name(dtype) << ": worst relative error " << worst.error << " at x = " << worst.at
            << " (tolerance " << tolerance << ")");
  CHECK(worst.error <= tolerance);
}

// float64: the formulas are the definitions, within a few ulps. float32: rounding of the float result and
// the vectorised exp (fast_math.h), observed within 1.3e-7; the floor keeps values near 0 from dividing by ~0.
constexpr double kTolF64 = 1e-14, kFloorF64 = 1e-300;
constexpr double kTolF32 = 1e-6, kFloorF32 = 1e-30;

}  // namespace

TEST_CASE("every unary op's forward matches its independent long double reference", "[ops][reference]") {
  const double alpha = 0.7;
  for (const UnaryInfo& info : kUnaryOps) {
    visit_unary(info.op, [&]<UnaryOp Op>() {
      const std::vector<double> x = wide_inputs(info.domain);
      const Shape shape{static_cast<int64_t>(x.size())};
      for (DType dtype : {DType::F64, DType::F32}) {
        const Tensor input = Tensor::from_vector(x, shape).to(dtype);
        const std::vector<double> exact_x = input.to(DType::F64).to_vector<double>();  // what the op read
        const std::vector<double> y = ops::unary(info.op, input, alpha).to(DType::F64).to_vector<double>();
        const long double alpha_read =
            dtype == DType::F32 ? static_cast<long double>(static_cast<float>(alpha)) : alpha;
        std::vector<long double> ref, cond;
        for (double v : exact_x) {
          const long double f = UnaryReference<Op>::value(v, alpha_read), h = 1e-7L * std::abs(v);
          const long double slope =
              (UnaryReference<Op>::value(v + h, alpha_read) - UnaryReference<Op>::value(v - h, alpha_read)) / (2 * h);
          ref.push_back(f);
          cond.push_back(f == 0 ? 1.0L : std::abs(v * slope / f));
        }
        const bool f64 = dtype == DType::F64;
        expect_close(info.name, dtype, y, ref, exact_x, cond, f64 ? kTolF64 : kTolF32, f64 ? kFloorF64 : kFloorF32);
      }
    });
  }
}

TEST_CASE("every binary op's forward matches its independent long double reference", "[ops][reference]") {
  Generator gen(31);
  for (const BinaryInfo& info : kBinaryOps) {
    visit_binary(info.op, [&]<BinaryOp Op>() {
      // a over both signs and several magnitudes, b away from 0 (div).
      const Shape shape{257};
      std::vector<double> a = Tensor::uniform(shape, gen, -50.0, 50.0, DType::F64).to_vector<double>();
      std::vector<double> b = Tensor::uniform(shape, gen, 0.05, 20.0, DType::F64).to_vector<double>();
      for (size_t i = 0; i < b.size(); i += 2) b[i] = -b[i];
      for (DType dtype : {DType::F64, DType::F32}) {
        const Tensor ta = Tensor::from_vector(a, shape).to(dtype), tb = Tensor::from_vector(b, shape).to(dtype);
        const std::vector<double> ea = ta.to(DType::F64).to_vector<double>(),
                                  eb = tb.to(DType::F64).to_vector<double>();
        const std::vector<double> y = ops::binary(info.op, ta, tb).to(DType::F64).to_vector<double>();
        std::vector<long double> ref;
        for (size_t i = 0; i < ea.size(); ++i) ref.push_back(BinaryReference<Op>::value(ea[i], eb[i]));
        const std::vector<long double> cond(ref.size(), 1.0L);
        const bool f64 = dtype == DType::F64;
        // add and sub of near-opposite values cancel: relative to the operands' size (up to 50 + 20), not the result's.
        const double floor = (Op == BinaryOp::Add || Op == BinaryOp::Sub) ? 100.0 : (f64 ? kFloorF64 : kFloorF32);
        expect_close(info.name, dtype, y, ref, ea, cond, f64 ? kTolF64 : kTolF32, floor);
      }
    });
  }
}
