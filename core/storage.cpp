// Storage: allocation and release, each reported to the MemoryTracker under the storage's category.
#include "core/storage.h"

#include "core/allocator.h"

namespace lora {

namespace {
// Weights and the optimizer's state are held for the whole run; everything else may be freed and asked for again.
BlockLifetime lifetime_of(MemoryCategory category) {
  switch (category) {
    case MemoryCategory::TrainableParameter:
    case MemoryCategory::FrozenParameter:
    case MemoryCategory::OptimizerState:
      return BlockLifetime::Lasting;
    case MemoryCategory::Gradient:
    case MemoryCategory::Activation:
    case MemoryCategory::Workspace:
      return BlockLifetime::Transient;
  }
  return BlockLifetime::Transient;
}
}  // namespace

Storage::Storage(size_t bytes, Device device, MemoryCategory category)
    : nbytes_(bytes), device_(device), category_(category), lifetime_(lifetime_of(category)) {
  StepArena* arena =
      bytes > 0 && device.is_cpu() && lifetime_ == BlockLifetime::Transient ? StepArena::current() : nullptr;
  if (arena) data_ = arena->carve(bytes, &arena_buffer_);
  if (!data_) data_ = allocator_for(device).allocate(bytes, device, lifetime_);
  MemoryTracker::instance().on_allocate(device, category, bytes);
}

Storage::~Storage() {
  if (arena_buffer_) {
    StepArena::release(arena_buffer_);
  } else {
    allocator_for(device_).deallocate(data_, nbytes_, device_, lifetime_);
  }
  MemoryTracker::instance().on_free(device_, category_, nbytes_);
}

void Storage::recharge(MemoryCategory category) {
  MemoryTracker::instance().on_recharge(device_, category_, category, nbytes_);
  category_ = category;
}

}  // namespace lora
