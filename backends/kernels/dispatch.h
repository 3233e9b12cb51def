// kernels::run<K>(device, args...): runs the kernel contract K on a device. A contract is a struct in
// backends/kernels/<op>.h that declares its kernel once per device with LORA_DEVICE_KERNELS(parameters):
//
//   struct LayerNormForward {
//     static constexpr const char* name = "layer_norm_forward";
//     LORA_DEVICE_KERNELS(const Tensor& x, ...);   // static void cpu(...); static void cuda(...);
//   };
//
// K::cpu is defined in backends/cpu/<op>.cpp and K::cuda in backends/cuda/<op>.cu. run names both (K::cuda
// when CUDA is built), so a device without its implementation is a link error, never a run-time lookup. On
// the meta device run does nothing: no contract needs meta code.
#pragma once

#include <utility>

#include "core/device.h"

// The kernel of a contract, declared once per device with the same parameters.
#define LORA_DEVICE_KERNELS(...) \
  static void cpu(__VA_ARGS__);  \
  static void cuda(__VA_ARGS__)

namespace lora::kernels {

// Throws lora::Error: `kernel` was asked to run on a device this build has no backend for.
[[noreturn]] void throw_device_not_built(const char* kernel, Device device);

template <typename K, typename... Args>
void run(Device device, Args&&... args) {
  switch (device.type) {
    case DeviceType::CPU:
      K::cpu(std::forward<Args>(args)...);
      return;
    case DeviceType::CUDA:
#if defined(LORA_HAVE_CUDA)
      K::cuda(std::forward<Args>(args)...);
      return;
#else
      throw_device_not_built(K::name, device);
#endif
    case DeviceType::Meta:
      return;  // shapes only: no data, nothing to compute (the outputs were allocated, and charged, by the op)
  }
  throw_device_not_built(K::name, device);
}

}  // namespace lora::kernels
