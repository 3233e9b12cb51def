// Allocator: raw device memory for tensor storage, one per device type (the CPU's here; CUDA's registers
// itself when that backend is linked). Allocators move bytes; the Storage that owns them does the accounting.
#pragma once

#include <cstddef>

#include "core/device.h"

namespace lora {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes, Device device) = 0;
  virtual void deallocate(void* ptr, size_t bytes, Device device) = 0;
  // Copies between this allocator's device memory and the host (or within the device); count in bytes.
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes, Device device) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes, Device device) = 0;
  virtual void copy_within(void* dst, const void* src, size_t bytes, Device device) = 0;
  virtual void set_zero(void* dst, size_t bytes, Device device) = 0;
  // Bytes the allocator holds from the system beyond what tensors hold (caches, pools); 0 if none.
  virtual size_t reserved_bytes(Device device) const { return 0; }
};

// The allocator for a device; throws lora::Error when that device type was not built in.
Allocator& allocator_for(Device device);
void register_allocator(DeviceType type, Allocator* allocator);

// CPU allocations are aligned to 64 bytes (a cache line, and a full AVX-512 vector).
constexpr size_t kCpuAlignment = 64;

}  // namespace lora
