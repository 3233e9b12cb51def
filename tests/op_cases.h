// Test cases of the ops as data, keyed by the op's registered name (autograd/op_registry.h):
//   - gradcheck cases: a float64 finite-difference check of the op's backward;
//   - parity cases: the same function on float32 inputs, compared with float64 on the CPU (always) and with
//     the CPU on CUDA (where a device is present), output and every input gradient.
// Test files register them at static initialisation with LORA_OP_CASES; tests/test_op_registry.cpp runs
// every case and fails when a registered op has no case of either kind. Inputs are made when a case runs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "core/tensor.h"

namespace lora::testing {

using Inputs = std::vector<Tensor>;
using OpFn = std::function<Tensor(const Inputs&)>;
using MakeInputs = std::function<Inputs()>;

// Pass when |actual - expected| <= atol + rtol * |expected|, elementwise.
struct Tolerance {
  double atol, rtol;
};
// Tolerances of CUDA against the CPU, both in float32 (TF32 off):
constexpr Tolerance kElementwise{1e-5, 1e-4};  // one formula per element (CUDA's expf, tanhf: within 2 ulp)
constexpr Tolerance kRows{1e-5, 1e-4};         // a row summed in another order (softmax, norms, cross-entropy)
constexpr Tolerance kSums{1e-4, 1e-4};         // sums over many rows (parameter gradients, sum_to)
constexpr Tolerance kGemm{1e-4, 1e-4};         // products of inputs in [-1, 1] with k <= 300
constexpr Tolerance kAttention{1e-4, 1e-3};    // two gemms around a softmax

struct GradcheckCase {
  std::string op, what;
  OpFn f;
  MakeInputs inputs;  // float64 CPU tensors; those that require grad are checked
  autograd::GradcheckOptions options;
};

struct ParityCase {
  std::string op, what;
  OpFn f;
  MakeInputs inputs;  // float32 CPU tensors (integer tensors are passed as they are, moved to the device)
  Tolerance cuda_vs_cpu = kElementwise;
  Tolerance f32_vs_f64 = {1e-5, 1e-4};
};

void add_gradcheck_case(GradcheckCase c);
void add_parity_case(ParityCase c);
const std::vector<GradcheckCase>& gradcheck_cases();
const std::vector<ParityCase>& parity_cases();

// The shorthands the case files use.
inline void gradcheck_case(std::string op, std::string what, OpFn f, MakeInputs inputs,
                           autograd::GradcheckOptions options = {}) {
  add_gradcheck_case({std::move(op), std::move(what), std::move(f), std::move(inputs), options});
}
inline void parity_case(std::string op, std::string what, OpFn f, MakeInputs inputs,
                        Tolerance cuda_vs_cpu = kElementwise, Tolerance f32_vs_f64 = {1e-5, 1e-4}) {
  add_parity_case({std::move(op), std::move(what), std::move(f), std::move(inputs), cuda_vs_cpu, f32_vs_f64});
}

// Inputs: a leaf of `dtype` on the CPU, normal or uniform, that requires grad unless told otherwise.
Tensor randn_leaf(const Shape& shape, Generator& gen, DType dtype, bool requires_grad = true);
Tensor uniform_leaf(const Shape& shape, Generator& gen, DType dtype, double low = -1.0, double high = 1.0,
                    bool requires_grad = true);
Tensor ids(const std::vector<int64_t>& values, const Shape& shape);  // int64 ids or targets

// Runs one case; returns an empty string when it passes, otherwise what failed.
std::string run_gradcheck_case(const GradcheckCase& c);
std::string run_f32_vs_f64(const ParityCase& c);
std::string run_cuda_vs_cpu(const ParityCase& c);  // needs a CUDA device

}  // namespace lora::testing

// LORA_OP_CASES(name) { gradcheck_case(...); parity_case(...); }: a block run once at static initialisation.
#define LORA_OP_CASES(name)                                              \
  static void name();                                                    \
  [[maybe_unused]] static const bool name##_registered = (name(), true); \
  static void name()
