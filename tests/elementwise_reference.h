// Independent references for the elementwise ops of backends/elementwise_ops.h: each op's value written from
// its mathematical definition in long double with the standard library, sharing nothing with the backends'
// formulas (no fast exp, no rewritten identities). tests/test_elementwise_reference.cpp checks every table
// entry's forward against these; the gradchecks then tie each backward to its forward. Together they catch
// a wrong forward whose derivative was written to match it, which a gradcheck alone cannot.
//
// The primary templates are declared and never defined: a table entry without its reference here fails to
// compile the test ("incomplete type UnaryReference<...>"), so a new op cannot skip the check.
#pragma once

#include <cmath>
#include <numbers>

#include "backends/elementwise_ops.h"

namespace lora::testing {

template <UnaryOp Op>
struct UnaryReference;  // static long double value(long double x, long double alpha)

template <>
struct UnaryReference<UnaryOp::Neg> {
  static long double value(long double x, long double) { return -x; }
};
template <>
struct UnaryReference<UnaryOp::AddScalar> {
  static long double value(long double x, long double alpha) { return x + alpha; }
};
template <>
struct UnaryReference<UnaryOp::MulScalar> {
  static long double value(long double x, long double alpha) { return x * alpha; }
};
template <>
struct UnaryReference<UnaryOp::Exp> {
  static long double value(long double x, long double) { return std::exp(x); }
};
template <>
struct UnaryReference<UnaryOp::Log> {
  static long double value(long double x, long double) { return std::log(x); }
};
template <>
struct UnaryReference<UnaryOp::Tanh> {
  static long double value(long double x, long double) { return std::tanh(x); }
};
template <>
struct UnaryReference<UnaryOp::Relu> {
  static long double value(long double x, long double) { return x > 0 ? x : 0.0L; }
};
// GPT-2's GELU, the tanh approximation (Hendrycks & Gimpel): 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// 1 + tanh u is written 2 e^u / (e^u + e^-u): for u below about -22, 1 + tanh u cancels to 0 even in long
// double, while the true value (about 2 e^{2u}) is still a normal number.
template <>
struct UnaryReference<UnaryOp::Gelu> {
  static long double value(long double x, long double) {
    const long double k = std::sqrt(2.0L / std::numbers::pi_v<long double>);
    const long double u = k * (x + 0.044715L * x * x * x);
    return 0.5L * x * (2.0L * std::exp(u) / (std::exp(u) + std::exp(-u)));
  }
};
// SiLU (swish): x sigmoid(x) = x / (1 + e^-x).
template <>
struct UnaryReference<UnaryOp::Silu> {
  static long double value(long double x, long double) { return x / (1.0L + std::exp(-x)); }
};
template <>
struct UnaryReference<UnaryOp::Square> {
  static long double value(long double x, long double) { return x * x; }
};
template <>
struct UnaryReference<UnaryOp::Sqrt> {
  static long double value(long double x, long double) { return std::sqrt(x); }
};

template <BinaryOp Op>
struct BinaryReference;  // static long double value(long double a, long double b)

template <>
struct BinaryReference<BinaryOp::Add> {
  static long double value(long double a, long double b) { return a + b; }
};
template <>
struct BinaryReference<BinaryOp::Sub> {
  static long double value(long double a, long double b) { return a - b; }
};
template <>
struct BinaryReference<BinaryOp::Mul> {
  static long double value(long double a, long double b) { return a * b; }
};
template <>
struct BinaryReference<BinaryOp::Div> {
  static long double value(long double a, long double b) { return a / b; }
};

}  // namespace lora::testing
