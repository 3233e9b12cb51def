// The registries of op test cases and the three ways a case runs (gradcheck, float32 vs float64, CUDA vs CPU).
#include "tests/op_cases.h"

#include <fmt/format.h>

#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/tape.h"

namespace lora::testing {
namespace {

std::vector<GradcheckCase>& gradchecks() {
  static std::vector<GradcheckCase> cases;
  return cases;
}
std::vector<ParityCase>& parities() {
  static std::vector<ParityCase> cases;
  return cases;
}

// A new leaf with t's values on `device` in `dtype` (floating tensors only change dtype), requiring a
// gradient when t does.
Tensor leaf_like(const Tensor& t, DType dtype, Device device) {
  Tensor c = t.detach();
  if (is_floating(c.dtype()) && c.dtype() != dtype) c = c.to(dtype);
  c = c.to(device).clone();
  if (t.requires_grad()) c.set_requires_grad(true);
  return c;
}

// Runs f on `inputs`, seeds backward with `seed` (converted to the output's dtype and device) and returns the
// output followed by the gradient of every input that requires one, all on the CPU in float64.
std::vector<Tensor> run(const OpFn& f, const Inputs& inputs, const Tensor& seed) {
  Tensor y = f(inputs);
  std::vector<Tensor> out{y.detach().to(Device::cpu()).to(DType::F64)};
  if (y.requires_grad()) backward(y, seed.to(y.dtype()).to(y.device()));
  for (const Tensor& t : inputs) {
    if (!t.requires_grad()) continue;
    out.push_back(t.grad().defined() ? t.grad().to(Device::cpu()).to(DType::F64)
                                     : Tensor::zeros(t.shape(), DType::F64));
  }
  return out;
}

// The first element outside atol + rtol * |expected| of each result, or "".
std::string compare(const std::vector<Tensor>& actual, const std::vector<Tensor>& expected, Tolerance tol) {
  if (actual.size() != expected.size()) return fmt::format("{} results, expected {}", actual.size(), expected.size());
  std::string report;
  for (size_t r = 0; r < actual.size(); ++r) {
    const std::string what = r == 0 ? "output" : fmt::format("gradient {}", r - 1);
    if (actual[r].shape() != expected[r].shape()) {
      report += fmt::format("{}: shape {}, expected {}\n", what, actual[r].shape().str(), expected[r].shape().str());
      continue;
    }
    const std::vector<double> a = actual[r].to_vector<double>(), e = expected[r].to_vector<double>();
    int64_t bad = 0, first = -1;
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::isnan(a[i]) && std::isnan(e[i])) continue;
      if (!(std::abs(a[i] - e[i]) <= tol.atol + tol.rtol * std::abs(e[i]))) {
        if (first < 0) first = static_cast<int64_t>(i);
        ++bad;
      }
    }
    if (bad > 0) {
      report += fmt::format("{} {}: {} of {} elements outside atol {} + rtol {}; first at {}: {} vs {}\n", what,
                            actual[r].shape().str(), bad, a.size(), tol.atol, tol.rtol, first, a[first], e[first]);
    }
  }
  return report;
}

Tensor seed_for(const OpFn& f, const Inputs& inputs) {
  NoGradGuard no_grad;
  const Shape shape = f(inputs).shape();
  Generator gen(99);
  return Tensor::uniform(shape, gen, -1.0, 1.0, DType::F64);
}

}  // namespace

void add_gradcheck_case(GradcheckCase c) {
  gradchecks().push_back(std::move(c));
}
void add_parity_case(ParityCase c) {
  parities().push_back(std::move(c));
}
const std::vector<GradcheckCase>& gradcheck_cases() {
  return gradchecks();
}
const std::vector<ParityCase>& parity_cases() {
  return parities();
}

Tensor randn_leaf(const Shape& shape, Generator& gen, DType dtype, bool requires_grad) {
  Tensor t = Tensor::randn(shape, gen, 0.0, 1.0, dtype);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor uniform_leaf(const Shape& shape, Generator& gen, DType dtype, double low, double high, bool requires_grad) {
  Tensor t = Tensor::uniform(shape, gen, low, high, dtype);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor ids(const std::vector<int64_t>& values, const Shape& shape) {
  return Tensor::from_vector(values, shape);
}

std::string run_gradcheck_case(const GradcheckCase& c) {
  const Inputs inputs = c.inputs();
  for (const Tensor& t : inputs) {
    if (is_floating(t.dtype()) && t.dtype() != DType::F64) return "gradcheck inputs must be float64";
  }
  const autograd::GradcheckResult result = autograd::gradcheck(c.f, inputs, c.options);
  return result.ok ? "" : result.report;
}

std::string run_f32_vs_f64(const ParityCase& c) {
  const Inputs inputs32 = c.inputs();
  Inputs inputs64;
  for (const Tensor& t : inputs32) inputs64.push_back(leaf_like(t, DType::F64, Device::cpu()));
  const Tensor seed = seed_for(c.f, inputs64);
  const std::vector<Tensor> expected = run(c.f, inputs64, seed);
  const std::vector<Tensor> actual = run(c.f, inputs32, seed);
  return compare(actual, expected, c.f32_vs_f64);
}

std::string run_cuda_vs_cpu(const ParityCase& c) {
  const Inputs cpu_inputs = c.inputs();
  Inputs gpu_inputs;
  for (const Tensor& t : cpu_inputs) gpu_inputs.push_back(leaf_like(t, t.dtype(), Device::cuda(0)));
  const Tensor seed = seed_for(c.f, cpu_inputs);
  const std::vector<Tensor> expected = run(c.f, cpu_inputs, seed);
  const std::vector<Tensor> actual = run(c.f, gpu_inputs, seed);
  return compare(actual, expected, c.cuda_vs_cpu);
}

}  // namespace lora::testing
