// Storage: a refcounted block of device memory, charged to one memory category for its whole life.
#pragma once

#include <cstddef>
#include <memory>

#include "core/device.h"
#include "core/memory.h"

namespace lora {

class Storage {
 public:
  // Allocates `bytes` on `device` and charges them to `category`.
  Storage(size_t bytes, Device device, MemoryCategory category);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  MemoryCategory category() const { return category_; }
  // Moves this storage's bytes to another category (for instance a parameter that is frozen).
  void recharge(MemoryCategory category);

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  MemoryCategory category_;
};

}  // namespace lora
