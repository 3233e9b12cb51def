// Per-device state of the CUDA backend (internal): the current device, the cuBLAS handle, device limits.
// Everything is created on first use, never at static-initialisation time. All work goes to the legacy
// default stream of each device, so kernels, cuBLAS calls and copies are ordered without extra syncs.
#pragma once

#include <cublas_v2.h>

namespace lora::cuda {

constexpr int kMaxCudaDevices = 16;  // matches MemoryTracker's slots

// Makes `device` current on this thread (checks the index; cheap when it already is).
void set_device(int device);

// The cuBLAS handle of `device` (created on first use, on the default stream), with the math mode that
// set_cuda_allow_tf32 chose.
cublasHandle_t cublas_handle(int device);

}  // namespace lora::cuda
