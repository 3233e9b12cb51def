// The backend registry (the CPU and meta backends are always there; CUDA registers itself), the thread
// setting, and the errors of the dispatch helpers.
#include "backends/backend.h"

#include <cblas.h>
#include <omp.h>

#include <array>
#include <cstdlib>
#include <string>

#include "backends/cpu/cpu_backend.h"
#include "backends/kernels/dispatch.h"
#include "backends/meta_backend.h"

namespace lora {
namespace {

std::array<Backend*, kNumDeviceTypes>& registry() {
  static CpuBackend cpu;
  static std::array<Backend*, kNumDeviceTypes> backends{&cpu, nullptr, &meta_backend()};
  return backends;
}

int g_num_threads = 0;

// One pool for everything: OpenMP kernels and OpenBLAS share the same count, so they never oversubscribe.
void apply_threads(int n) {
  g_num_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int threads_from_environment() {
  if (const char* env = std::getenv("LORA_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    LORA_CHECK(end && *end == '\0' && n >= 1 && n <= 4096, "LORA_NUM_THREADS='{}': expected a positive integer", env);
    return static_cast<int>(n);
  }
  return omp_get_num_procs();
}

}  // namespace

int num_threads() {
  if (g_num_threads == 0) apply_threads(threads_from_environment());
  return g_num_threads;
}

void set_num_threads(int n) {
  LORA_CHECK(n >= 1, "set_num_threads: {} threads requested, expected at least 1", n);
  apply_threads(n);
}

Backend& backend_for(Device device) {
  static const bool threads_initialised = (num_threads(), true);
  (void)threads_initialised;
  Backend* b = registry()[static_cast<int>(device.type)];
  LORA_CHECK(b != nullptr, "device {} is not available: this build has no backend for it", device.str());
  return *b;
}

void register_backend(DeviceType type, Backend* backend) {
  registry()[static_cast<int>(type)] = backend;
}

void kernels::throw_device_not_built(const char* kernel, Device device) {
  LORA_FAIL("{}: device {} is not available: this build has no backend for it", kernel, device.str());
}

void throw_invalid_op(const char* kind, int value) {
  LORA_FAIL("{} {} is not an entry of the elementwise table (backends/elementwise_ops.h)", kind, value);
}

void check_unary_backward_args(UnaryOp op, const Tensor& saved, const Tensor& grad_y, const Tensor& grad_x) {
  const UnaryInfo& info = unary_info(op);
  const char* what = info.saves == Saves::Input ? "its input x" : "its output y";
  LORA_CHECK(grad_y.defined() && grad_x.defined(), "unary_backward {}: grad_y and grad_x must be defined", info.name);
  LORA_CHECK(grad_y.numel() == grad_x.numel(), "unary_backward {}: grad_y {} and grad_x {} differ in size", info.name,
             grad_y.shape().str(), grad_x.shape().str());
  if (info.saves == Saves::Nothing) {
    LORA_CHECK(!saved.defined(), "unary_backward {}: the derivative reads nothing, but a saved tensor was given",
               info.name);
    return;
  }
  LORA_CHECK(saved.defined(), "unary_backward {}: the derivative reads {}, which was not given", info.name, what);
  LORA_CHECK(saved.numel() == grad_x.numel(), "unary_backward {}: {} has shape {}, grad_x {}", info.name, what,
             saved.shape().str(), grad_x.shape().str());
}

}  // namespace lora
