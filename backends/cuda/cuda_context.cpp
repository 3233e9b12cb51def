// Per-device state: current device, cuBLAS handles (created lazily, never destroyed: the driver may be gone
// by the time static destructors run), the TF32 switch, and the public helpers of cuda_device.h.
#include "backends/cuda/cuda_context.h"

#include <array>
#include <atomic>
#include <mutex>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_device.h"
#include "core/error.h"

namespace lora::cuda {
namespace {

std::atomic<bool> g_allow_tf32{false};

struct HandleSlot {
  cublasHandle_t handle = nullptr;
  int tf32 = -1;  // the math mode last set on the handle: -1 unset, 0 FP32, 1 TF32
};
std::mutex g_handle_mutex;
std::array<HandleSlot, kMaxCudaDevices> g_handles{};

}  // namespace

void set_device(int device) {
  LORA_CHECK(device >= 0 && device < kMaxCudaDevices, "cuda:{}: device index out of range [0, {})", device,
             kMaxCudaDevices);
  int current = -1;
  LORA_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device) LORA_CUDA_CHECK(cudaSetDevice(device));
}

cublasHandle_t cublas_handle(int device) {
  set_device(device);
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  HandleSlot& slot = g_handles[device];
  if (slot.handle == nullptr) {
    LORA_CUBLAS_CHECK(cublasCreate(&slot.handle));
    LORA_CUBLAS_CHECK(cublasSetStream(slot.handle, nullptr));  // the legacy default stream
    LORA_CUBLAS_CHECK(cublasSetPointerMode(slot.handle, CUBLAS_POINTER_MODE_HOST));
  }
  const int want = g_allow_tf32.load() ? 1 : 0;
  if (slot.tf32 != want) {
    // CUBLAS_DEFAULT_MATH keeps sgemm in full FP32 (unless NVIDIA_TF32_OVERRIDE says otherwise).
    LORA_CUBLAS_CHECK(cublasSetMathMode(slot.handle, want ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    slot.tf32 = want;
  }
  return slot.handle;
}

}  // namespace lora::cuda

namespace lora {

int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // no driver or no device: not an error for the caller
      return 0;
    }
    return n;
  }();
  return count;
}

bool cuda_device_available() {
  return cuda_device_count() > 0;
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop{};
  LORA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

void set_cuda_allow_tf32(bool allow) {
  cuda::g_allow_tf32.store(allow);
}
bool cuda_allow_tf32() {
  return cuda::g_allow_tf32.load();
}

void cuda_synchronize(int device) {
  cuda::set_device(device);
  LORA_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace lora
