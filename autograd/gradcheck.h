// gradcheck: compares the analytic gradient of a function (from the tape) with central finite differences.
//
// Run it in double precision (F64 inputs on the CPU): the backward code under test is the same template
// instantiated for double, and float32 central differences are too noisy to catch small errors.
// To check a function with a non-scalar output y, gradcheck uses L = sum(y * r) for a fixed random r,
// i.e. it checks the vector-Jacobian product r^T J that backward computes, for every input element.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lora::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   // finite-difference step
  double atol = 1e-7;  // pass when |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-5;
  uint64_t seed = 0;  // for the projection r
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0.0;
  std::string report;  // the first failing elements, or a summary
};

// f maps the inputs to an output tensor; inputs that require grad are checked (others are held constant).
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace lora::autograd
