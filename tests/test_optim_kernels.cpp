// Tests of the CPU optimizer kernels (adam_step, sgd_step) against PyTorch's formulas written out by hand in
// double, over several steps (so bias correction and momentum state are exercised past step 1).
//
// Tolerances: float64 tensors must agree with the hand computation to 1e-12 + 1e-12 * |ref| (the same
// arithmetic in a different order); float32 tensors to 1e-6 + 1e-5 * |ref|.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "backends/kernels/optimizer.h"
#include "core/tensor.h"

using namespace lora;

namespace {

struct Tolerance {
  double atol, rtol;
};
Tolerance tolerance_for(DType dtype) {
  return dtype == DType::F64 ? Tolerance{1e-12, 1e-12} : Tolerance{1e-6, 1e-5};
}

void require_close(const Tensor& actual, const std::vector<double>& expected, DType dtype) {
  const Tolerance tol = tolerance_for(dtype);
  const std::vector<double> a = actual.to_vector<double>();
  REQUIRE(a.size() == expected.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i << ": " << a[i] << " vs " << expected[i]);
    REQUIRE(std::abs(a[i] - expected[i]) <= tol.atol + tol.rtol * std::abs(expected[i]));
  }
}

Tensor tensor_of(const std::vector<double>& values, DType dtype) {
  return Tensor::from_vector(values, {static_cast<int64_t>(values.size())}).to(dtype);
}

const std::vector<double> kParam0{0.5, -1.25, 2.0, 0.0, -0.03, 3.5};
// A different gradient at each step, with a zero and sign changes.
const std::vector<std::vector<double>> kGrads{
    {0.1, -0.2, 0.3, 0.0, 1.5, -2.0}, {-0.05, 0.4, 0.25, 0.01, -1.0, -1.5}, {0.2, 0.2, -0.6, -0.02, 0.5, 0.75}};

// PyTorch's Adam / AdamW for one element (torch.optim.Adam with weight_decay = L2, AdamW = decoupled).
void adam_reference(double& p, double& m, double& v, double grad, const AdamStep& hp) {
  double g = grad;
  if (hp.decoupled) {
    p *= 1.0 - hp.lr * hp.weight_decay;
  } else {
    g += hp.weight_decay * p;
  }
  m = hp.beta1 * m + (1.0 - hp.beta1) * g;
  v = hp.beta2 * v + (1.0 - hp.beta2) * g * g;
  const double bias_correction1 = 1.0 - std::pow(hp.beta1, hp.step);
  const double bias_correction2 = 1.0 - std::pow(hp.beta2, hp.step);
  const double denom = std::sqrt(v) / std::sqrt(bias_correction2) + hp.eps;
  p -= hp.lr / bias_correction1 * m / denom;
}

// PyTorch's SGD for one element.
void sgd_reference(double& p, double& buf, double grad, const SgdStep& hp) {
  double g = grad + hp.weight_decay * p;
  if (hp.momentum != 0.0) {
    buf = hp.first_step ? g : hp.momentum * buf + (1.0 - hp.dampening) * g;
    g = hp.nesterov ? g + hp.momentum * buf : buf;
  }
  p -= hp.lr * g;
}

void check_adam(AdamStep hp, DType dtype) {
  Tensor param = tensor_of(kParam0, dtype);
  Tensor m = Tensor::zeros(param.shape(), dtype), v = Tensor::zeros(param.shape(), dtype);
  std::vector<double> p_ref = kParam0, m_ref(kParam0.size(), 0.0), v_ref(kParam0.size(), 0.0);
  for (int64_t step = 1; step <= static_cast<int64_t>(kGrads.size()); ++step) {
    INFO("step " << step);
    hp.step = step;
    kernels::AdamUpdate::cpu(param, tensor_of(kGrads[step - 1], dtype), m, v, hp);
    for (size_t i = 0; i < p_ref.size(); ++i) adam_reference(p_ref[i], m_ref[i], v_ref[i], kGrads[step - 1][i], hp);
    require_close(param, p_ref, dtype);
    require_close(m, m_ref, dtype);
    require_close(v, v_ref, dtype);
  }
}

void check_sgd(SgdStep hp, DType dtype) {
  Tensor param = tensor_of(kParam0, dtype);
  // Filled with NaN: the first step must overwrite the buffer without reading it.
  Tensor buf = hp.momentum != 0.0 ? Tensor::full(param.shape(), NAN, dtype) : Tensor();
  std::vector<double> p_ref = kParam0, buf_ref(kParam0.size(), 0.0);
  for (size_t step = 0; step < kGrads.size(); ++step) {
    INFO("step " << step + 1);
    hp.first_step = step == 0;
    kernels::SgdUpdate::cpu(param, tensor_of(kGrads[step], dtype), buf, hp);
    for (size_t i = 0; i < p_ref.size(); ++i) sgd_reference(p_ref[i], buf_ref[i], kGrads[step][i], hp);
    require_close(param, p_ref, dtype);
    if (buf.defined()) require_close(buf, buf_ref, dtype);
  }
}

}  // namespace

TEST_CASE("adam_step matches PyTorch's Adam and AdamW over three steps", "[optim]") {
  for (DType dtype : {DType::F64, DType::F32}) {
    INFO("dtype " << dtype_name(dtype));
    SECTION("Adam, no weight decay") {
      check_adam({.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0, .decoupled = false},
                 dtype);
    }
    SECTION("AdamW: decoupled weight decay") {
      check_adam({.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1, .decoupled = true},
                 dtype);
    }
    SECTION("Adam with L2 weight decay added to the gradient") {
      check_adam({.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1, .decoupled = false},
                 dtype);
    }
    SECTION("unusual betas and a large eps") {
      check_adam({.lr = 0.5, .beta1 = 0.5, .beta2 = 0.75, .eps = 1e-3, .weight_decay = 0.01, .decoupled = true}, dtype);
    }
  }
}

TEST_CASE("adam_step: the first step moves each weight by about lr", "[optim]") {
  // With bias correction, step 1 is p -= lr * g / (|g| + eps): a fixed-size step whatever the gradient's scale.
  Tensor p = tensor_of({1.0, 1.0}, DType::F64), g = tensor_of({1e-3, -50.0}, DType::F64);
  Tensor m = Tensor::zeros({2}, DType::F64), v = Tensor::zeros({2}, DType::F64);
  kernels::AdamUpdate::cpu(p, g, m, v, {.lr = 0.1, .eps = 0.0, .step = 1});
  REQUIRE(p.at({0}) == Approx(0.9).epsilon(1e-12));
  REQUIRE(p.at({1}) == Approx(1.1).epsilon(1e-12));
}

TEST_CASE("sgd_step matches PyTorch's SGD over three steps", "[optim]") {
  for (DType dtype : {DType::F64, DType::F32}) {
    INFO("dtype " << dtype_name(dtype));
    SECTION("plain") {
      check_sgd({.lr = 0.1}, dtype);
    }
    SECTION("weight decay") {
      check_sgd({.lr = 0.1, .weight_decay = 0.01}, dtype);
    }
    SECTION("momentum with dampening, no Nesterov") {
      check_sgd({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01, .nesterov = false}, dtype);
    }
    SECTION("Nesterov momentum") {
      check_sgd({.lr = 0.1, .momentum = 0.9, .dampening = 0.0, .weight_decay = 0.01, .nesterov = true}, dtype);
    }
  }
}

TEST_CASE("optimizer kernels reject bad state", "[optim]") {
  Tensor p = Tensor::zeros({3}), g = Tensor::zeros({3}), m = Tensor::zeros({3}), v = Tensor::zeros({3});
  REQUIRE_THROWS_AS(kernels::AdamUpdate::cpu(p, g, m, v, {.step = 0}), lora::Error);
  REQUIRE_THROWS_AS(kernels::AdamUpdate::cpu(p, Tensor::zeros({4}), m, v, {}), lora::Error);
  Tensor none;
  REQUIRE_THROWS_AS(kernels::SgdUpdate::cpu(p, g, none, {.momentum = 0.9}), lora::Error);
  REQUIRE_NOTHROW(kernels::SgdUpdate::cpu(p, g, none, {.momentum = 0.0}));
}
