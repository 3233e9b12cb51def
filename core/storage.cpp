// Storage: allocation and release, each reported to the MemoryTracker under the storage's category.
#include "core/storage.h"

#include "core/allocator.h"

namespace lora {

Storage::Storage(size_t bytes, Device device, MemoryCategory category)
    : nbytes_(bytes), device_(device), category_(category) {
  data_ = allocator_for(device).allocate(bytes, device);
  MemoryTracker::instance().on_allocate(device, category, bytes);
}

Storage::~Storage() {
  allocator_for(device_).deallocate(data_, nbytes_, device_);
  MemoryTracker::instance().on_free(device_, category_, nbytes_);
}

void Storage::recharge(MemoryCategory category) {
  MemoryTracker::instance().on_recharge(device_, category_, category, nbytes_);
  category_ = category;
}

}  // namespace lora
