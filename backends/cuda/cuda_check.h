// Error checks for CUDA runtime calls, cuBLAS calls and kernel launches: each failure throws lora::Error
// naming the call (or kernel), file:line and the CUDA error string. Safe to include from .cu files (no fmt).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace lora::cuda {

// Throws lora::Error("CUDA error in <what> at <file>:<line>: <message>"). Defined in cuda_check.cpp.
[[noreturn]] void throw_cuda_error(const char* what, const char* file, int line, const char* message);

// After a launch: throws when the launch failed (cudaGetLastError). With LORA_CUDA_SYNC=1 in the
// environment it also synchronises, so that a kernel's own fault is reported at the kernel that caused it.
void check_launch(const char* kernel, const char* file, int line);

// True when LORA_CUDA_SYNC=1 (read once).
bool debug_sync();

}  // namespace lora::cuda

#define LORA_CUDA_CHECK(call)                                                                        \
  do {                                                                                               \
    const cudaError_t lora_cuda_err_ = (call);                                                       \
    if (lora_cuda_err_ != cudaSuccess) {                                                             \
      (void)cudaGetLastError(); /* clear a non-sticky error so the next check is not blamed */       \
      ::lora::cuda::throw_cuda_error(#call, __FILE__, __LINE__, cudaGetErrorString(lora_cuda_err_)); \
    }                                                                                                \
  } while (0)

#define LORA_CUBLAS_CHECK(call)                                                                              \
  do {                                                                                                       \
    const cublasStatus_t lora_cublas_status_ = (call);                                                       \
    if (lora_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                        \
      ::lora::cuda::throw_cuda_error(#call, __FILE__, __LINE__, cublasGetStatusString(lora_cublas_status_)); \
  } while (0)

// Call right after kernel<<<...>>>(...): LORA_CUDA_CHECK_LAUNCH("softmax_forward").
#define LORA_CUDA_CHECK_LAUNCH(kernel) ::lora::cuda::check_launch(kernel, __FILE__, __LINE__)
