// Public helpers of the CUDA backend: device presence, memory figures of the caching allocator, the TF32
// switch for cuBLAS, synchronisation. Plain C++ (no CUDA headers), so tests and programs can include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lora {

// True when the CUDA runtime finds at least one device (false, without throwing, on machines without a
// GPU or driver). The first call touches the driver; nothing does at static-initialisation time.
bool cuda_device_available();
int cuda_device_count();  // 0 when no device is available
std::string cuda_device_name(int device = 0);

// Memory of one device as the caching allocator sees it, with the driver's own figures beside it.
struct CudaMemoryInfo {
  size_t reserved_bytes = 0;   // held from cudaMalloc by the pool (in use + cached)
  size_t in_use_bytes = 0;     // blocks handed to tensors (size-class rounded)
  size_t requested_bytes = 0;  // bytes tensors asked for (what the MemoryTracker counts)
  size_t cached_bytes = 0;     // reserved but free, ready for reuse
  int64_t cuda_mallocs = 0;    // cudaMalloc calls so far (a pool that works makes few)
  size_t free_bytes = 0;       // cudaMemGetInfo: free on the device (all processes)
  size_t total_bytes = 0;      // cudaMemGetInfo: the device's capacity
};
CudaMemoryInfo cuda_memory_info(int device = 0);

// Returns every cached (free) block of every device to the driver.
void cuda_empty_cache();

// TF32 tensor-core math for cuBLAS sgemm (off by default: full FP32, so results match the CPU).
void set_cuda_allow_tf32(bool allow);
bool cuda_allow_tf32();

// Waits until every kernel queued on the device has finished (for timing; errors surface as lora::Error).
void cuda_synchronize(int device = 0);

}  // namespace lora
