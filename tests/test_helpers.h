// Shared helpers for the tests: tensor comparison and gradcheck assertions.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "backends/elementwise_ops.h"
#include "core/tensor.h"

namespace lora::testing {

// Every element within atol + rtol * |expected|; reports the first mismatch.
inline void require_close(const Tensor& actual, const Tensor& expected, double rtol = 1e-5, double atol = 1e-6) {
  REQUIRE(actual.shape() == expected.shape());
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::abs(a[i] - e[i]) <= atol + rtol * std::abs(e[i]))) {
      FAIL("element " << i << ": got " << a[i] << ", expected " << e[i] << " (shape " << actual.shape().str() << ")");
    }
  }
}

inline void require_close(const Tensor& actual, const std::vector<double>& expected, double rtol = 1e-5,
                          double atol = 1e-6) {
  const std::vector<double> a = actual.to_vector<double>();
  REQUIRE(a.size() == expected.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::abs(a[i] - expected[i]) <= atol + rtol * std::abs(expected[i]))) {
      FAIL("element " << i << ": got " << a[i] << ", expected " << expected[i]);
    }
  }
}

// |a - e| <= rtol (|e| + 1e-2 max|e|): relative, with a floor scaled to the tensor's magnitude so that
// near-zero entries of large tensors (logits, gradients) do not dominate. For model-vs-reference checks.
inline void require_close_scaled(const Tensor& actual, const Tensor& expected, double rtol) {
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  REQUIRE(a.size() == e.size());
  double scale = 0;
  for (double v : e) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::abs(a[i] - e[i]) <= rtol * (std::abs(e[i]) + 1e-2 * scale))) {
      FAIL("element " << i << ": got " << a[i] << ", expected " << e[i]);
    }
  }
}

// A random float64 CPU leaf that requires grad (the inputs of double-precision gradchecks).
inline Tensor random_input(const Shape& shape, Generator& gen, double low = -1.0, double high = 1.0) {
  Tensor t = Tensor::uniform(shape, gen, low, high, DType::F64);
  t.set_requires_grad(true);
  return t;
}

// A CPU leaf that requires grad, drawn from an elementwise op's test domain (backends/elementwise_ops.h):
// Real: |x| in [0.1, 2] with either sign (away from kinks at 0); Positive: x in [0.2, 2].
inline Tensor domain_input(const Shape& shape, Generator& gen, TestDomain domain, DType dtype = DType::F64) {
  std::vector<double> v = Tensor::uniform(shape, gen, -1.0, 1.0, DType::F64).to_vector<double>();
  for (double& x : v) {
    x = domain == TestDomain::Positive ? 0.2 + 0.9 * (x + 1.0) : std::copysign(0.1 + 1.9 * std::abs(x), x);
  }
  Tensor t = Tensor::from_vector(v, shape).to(dtype);
  t.set_requires_grad(true);
  return t;
}

inline autograd::GradcheckResult run_gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                               const std::vector<Tensor>& inputs,
                                               const autograd::GradcheckOptions& options = {}) {
  return autograd::gradcheck(f, inputs, options);
}

// REQUIRE_GRADCHECK(f, inputs[, options]): variadic so lambdas with several captures pass through.
#define REQUIRE_GRADCHECK(...)                                          \
  do {                                                                  \
    const auto gc_result = ::lora::testing::run_gradcheck(__VA_ARGS__); \
    INFO(gc_result.report);                                             \
    REQUIRE(gc_result.ok);                                              \
  } while (0)

}  // namespace lora::testing
