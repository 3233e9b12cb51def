// MemoryTracker and MemoryCategoryGuard.
#include "core/memory.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/allocator.h"
#include "core/error.h"

namespace lora {

std::string format_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (b < 1024.0 * 1024) return fmt::format("{:.1f} KiB", b / 1024);
  if (b < 1024.0 * 1024 * 1024) return fmt::format("{:.1f} MiB", b / (1024 * 1024));
  return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
}

std::string MemoryTracker::live_summary(Device device) const {
  const DeviceMemoryStats s = stats(device);
  // What the allocator holds on top, free (its cache): not a tensor's, so not in any category.
  const Allocator* allocator = find_allocator(device.type);
  const int64_t held_free = allocator ? static_cast<int64_t>(allocator->reserved_bytes(device)) : 0;
  std::string out;
  for (int c = 0; c < kNumMemoryCategories; ++c) {
    out += fmt::format("{}{} {}", c ? ", " : "", category_name(static_cast<MemoryCategory>(c)),
                       format_bytes(s.live.bytes[c]));
  }
  return out + fmt::format(" (total {}; the allocator holds {} more, free)", format_bytes(s.live.total()),
                           format_bytes(held_free));
}

std::string_view category_name(MemoryCategory category) {
  switch (category) {
    case MemoryCategory::TrainableParameter:
      return "trainable_params";
    case MemoryCategory::FrozenParameter:
      return "frozen_params";
    case MemoryCategory::Gradient:
      return "gradients";
    case MemoryCategory::OptimizerState:
      return "optimizer_state";
    case MemoryCategory::Activation:
      return "activations";
    case MemoryCategory::Workspace:
      return "workspace";
  }
  return "?";
}

int64_t MemoryFigures::total() const {
  int64_t t = 0;
  for (int64_t b : bytes) t += b;
  return t;
}

MemoryTracker& MemoryTracker::instance() {
  static MemoryTracker tracker;
  return tracker;
}

int MemoryTracker::slot(Device device) {
  const int s = device.is_cpu() ? 0 : device.is_meta() ? kMaxDevices - 1 : 1 + device.index;
  LORA_CHECK(s >= 0 && s < kMaxDevices, "memory tracker: device {} is out of range", device.str());
  return s;
}

void MemoryTracker::update_peaks(DeviceMemoryStats& s) {
  for (int c = 0; c < kNumMemoryCategories; ++c) s.peak.bytes[c] = std::max(s.peak.bytes[c], s.live.bytes[c]);
  const int64_t total = s.live.total();
  if (total > s.global_peak) {
    s.global_peak = total;
    s.live_at_peak = s.live;
  }
}

void MemoryTracker::on_allocate(Device device, MemoryCategory category, size_t bytes) {
  std::lock_guard lock(mutex_);
  DeviceMemoryStats& s = devices_[slot(device)];
  s.live.bytes[static_cast<int>(category)] += static_cast<int64_t>(bytes);
  s.allocations += 1;
  update_peaks(s);
}

void MemoryTracker::on_free(Device device, MemoryCategory category, size_t bytes) {
  std::lock_guard lock(mutex_);
  DeviceMemoryStats& s = devices_[slot(device)];
  s.live.bytes[static_cast<int>(category)] -= static_cast<int64_t>(bytes);
}

void MemoryTracker::on_recharge(Device device, MemoryCategory from, MemoryCategory to, size_t bytes) {
  if (from == to) return;
  std::lock_guard lock(mutex_);
  DeviceMemoryStats& s = devices_[slot(device)];
  s.live.bytes[static_cast<int>(from)] -= static_cast<int64_t>(bytes);
  s.live.bytes[static_cast<int>(to)] += static_cast<int64_t>(bytes);
  update_peaks(s);
}

DeviceMemoryStats MemoryTracker::stats(Device device) const {
  std::lock_guard lock(mutex_);
  return devices_[slot(device)];
}

int64_t MemoryTracker::live(MemoryCategory category, Device device) const {
  std::lock_guard lock(mutex_);
  return devices_[slot(device)].live[category];
}
int64_t MemoryTracker::peak(MemoryCategory category, Device device) const {
  std::lock_guard lock(mutex_);
  return devices_[slot(device)].peak[category];
}

void MemoryTracker::reset_peaks() {
  std::lock_guard lock(mutex_);
  for (DeviceMemoryStats& s : devices_) {
    s.peak = s.live;
    s.live_at_peak = s.live;
    s.global_peak = s.live.total();
    s.allocations = 0;
  }
}

void MemoryTracker::reset_peaks(Device device) {
  std::lock_guard lock(mutex_);
  DeviceMemoryStats& s = devices_[slot(device)];
  s.peak = s.live;
  s.live_at_peak = s.live;
  s.global_peak = s.live.total();
  s.allocations = 0;
}

namespace {
thread_local MemoryCategory t_current_category = MemoryCategory::Workspace;
}

MemoryCategoryGuard::MemoryCategoryGuard(MemoryCategory category) : previous_(t_current_category) {
  t_current_category = category;
}
MemoryCategoryGuard::~MemoryCategoryGuard() {
  t_current_category = previous_;
}
MemoryCategory MemoryCategoryGuard::current() {
  return t_current_category;
}

}  // namespace lora
