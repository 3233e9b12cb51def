// Memory accounting: every byte a tensor holds is charged to a MemoryCategory on its device, and the
// MemoryTracker keeps live and peak bytes per category, a global peak, and the breakdown at that peak.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "core/device.h"

namespace lora {

enum class MemoryCategory : uint8_t {
  TrainableParameter,  // weights the optimizer updates
  FrozenParameter,     // weights that only take part in the forward pass
  Gradient,            // .grad of trainable parameters
  OptimizerState,      // Adam moments, SGD momentum
  Activation,          // tensors the tape keeps alive for backward
  Workspace,           // everything else: op outputs not (yet) saved, temporaries, gradients of activations
};
constexpr int kNumMemoryCategories = 6;

std::string_view category_name(MemoryCategory category);  // "trainable_params", ...

// Bytes for people: "512 B", "1.5 KiB", "474.7 MiB", "2.38 GiB".
std::string format_bytes(int64_t bytes);

// Bytes per category for one device.
struct MemoryFigures {
  std::array<int64_t, kNumMemoryCategories> bytes{};
  int64_t operator[](MemoryCategory c) const { return bytes[static_cast<int>(c)]; }
  int64_t total() const;
};

// Live and peak figures of one device.
struct DeviceMemoryStats {
  MemoryFigures live;          // bytes held now, per category
  MemoryFigures peak;          // per category: the most that category ever held (since the last reset)
  MemoryFigures live_at_peak;  // per category: what each held at the moment of the global peak
  int64_t global_peak = 0;     // the most held in total at any one time
  int64_t allocations = 0;     // number of allocations since the last reset
};

class MemoryTracker {
 public:
  static MemoryTracker& instance();

  void on_allocate(Device device, MemoryCategory category, size_t bytes);
  void on_free(Device device, MemoryCategory category, size_t bytes);
  // Moves bytes from one category to another (a parameter frozen after creation, an output saved for
  // backward). Live totals do not change; the peak of the destination category may rise.
  void on_recharge(Device device, MemoryCategory from, MemoryCategory to, size_t bytes);

  DeviceMemoryStats stats(Device device = Device::cpu()) const;
  int64_t live(MemoryCategory category, Device device = Device::cpu()) const;
  int64_t peak(MemoryCategory category, Device device = Device::cpu()) const;
  // Restarts peak tracking from the current live figures (all devices, or one).
  void reset_peaks();
  void reset_peaks(Device device);
  // "trainable_params 474.7 MiB, frozen_params 0 B, ... (total 2.38 GiB)": what is held now, for errors
  // such as running out of memory.
  std::string live_summary(Device device = Device::cpu()) const;

 private:
  static constexpr int kMaxDevices = 1 + 16 + 1;  // the CPU, up to 16 CUDA devices, the meta device
  static int slot(Device device);
  void update_peaks(DeviceMemoryStats& s);

  mutable std::mutex mutex_;
  std::array<DeviceMemoryStats, kMaxDevices> devices_{};
};

// Chooses the category that allocations on this thread are charged to, for the guard's lifetime.
// Without a guard, allocations are Workspace.
class MemoryCategoryGuard {
 public:
  explicit MemoryCategoryGuard(MemoryCategory category);
  ~MemoryCategoryGuard();
  MemoryCategoryGuard(const MemoryCategoryGuard&) = delete;
  MemoryCategoryGuard& operator=(const MemoryCategoryGuard&) = delete;

  static MemoryCategory current();

 private:
  MemoryCategory previous_;
};

}  // namespace lora
