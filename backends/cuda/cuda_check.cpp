// The throwing half of cuda_check.h (kept out of the .cu files so that nvcc never compiles fmt).
#include "backends/cuda/cuda_check.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace lora::cuda {

void throw_cuda_error(const char* what, const char* file, int line, const char* message) {
  LORA_FAIL("CUDA error in {} at {}:{}: {}", what, file, line, message);
}

bool debug_sync() {
  static const bool enabled = [] {
    const char* v = std::getenv("LORA_CUDA_SYNC");
    return v != nullptr && std::strcmp(v, "0") != 0 && *v != '\0';
  }();
  return enabled;
}

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess) {
    LORA_FAIL("CUDA error launching kernel {} at {}:{}: {}", kernel, file, line, cudaGetErrorString(launch));
  }
  if (debug_sync()) {
    const cudaError_t run = cudaDeviceSynchronize();
    if (run != cudaSuccess) {
      (void)cudaGetLastError();
      LORA_FAIL("CUDA error running kernel {} at {}:{}: {}", kernel, file, line, cudaGetErrorString(run));
    }
  }
}

}  // namespace lora::cuda
