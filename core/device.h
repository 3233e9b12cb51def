// Device: where a tensor's storage lives: the CPU, CUDA device n, or the meta device (shapes only: storages
// hold no memory but are charged to the MemoryTracker, and every kernel is skipped; for predicting memory and
// checking sizes before anything is allocated).
#pragma once

#include <cstdint>
#include <string>

namespace lora {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1, Meta = 2 };
constexpr int kNumDeviceTypes = 3;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::CPU, 0}; }
  static constexpr Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  static constexpr Device meta() { return {DeviceType::Meta, 0}; }

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool is_meta() const { return type == DeviceType::Meta; }
  bool operator==(const Device&) const = default;
  std::string str() const {
    if (is_cpu()) return "cpu";
    if (is_meta()) return "meta";
    return "cuda:" + std::to_string(index);
  }

  // Parses "cpu", "cuda", "cuda:1", "meta"; throws lora::Error otherwise.
  static Device parse(const std::string& text);
};

// The device that tensor factories (Tensor::empty, zeros, randn, ...) use when none is named: the CPU,
// unless a DefaultDeviceGuard on this thread chose another. Building a model under
// DefaultDeviceGuard(Device::meta()) builds it with shapes only: nothing is allocated, so a model can be
// checked against a checkpoint, or its training step's memory predicted, before it exists.
Device default_device();

class DefaultDeviceGuard {
 public:
  explicit DefaultDeviceGuard(Device device);
  ~DefaultDeviceGuard();
  DefaultDeviceGuard(const DefaultDeviceGuard&) = delete;
  DefaultDeviceGuard& operator=(const DefaultDeviceGuard&) = delete;

 private:
  Device previous_;
};

}  // namespace lora
