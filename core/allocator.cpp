// The CPU allocator (64-byte aligned) and the per-device-type allocator registry.
#include "core/allocator.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"

namespace lora {
namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, Device) override {
    if (bytes == 0) return nullptr;
    // aligned_alloc wants a size that is a multiple of the alignment.
    const size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    void* p = std::aligned_alloc(kCpuAlignment, rounded);
    LORA_CHECK(p != nullptr, "out of CPU memory allocating {} bytes", bytes);
    return p;
  }
  void deallocate(void* ptr, size_t, Device) override { std::free(ptr); }
  void copy_to_host(void* dst, const void* src, size_t bytes, Device) override { copy(dst, src, bytes); }
  void copy_from_host(void* dst, const void* src, size_t bytes, Device) override { copy(dst, src, bytes); }
  void copy_within(void* dst, const void* src, size_t bytes, Device) override { copy(dst, src, bytes); }
  void set_zero(void* dst, size_t bytes, Device) override {
    if (bytes) std::memset(dst, 0, bytes);
  }

 private:
  static void copy(void* dst, const void* src, size_t bytes) {
    if (bytes) std::memmove(dst, src, bytes);
  }
};

std::array<Allocator*, kNumDeviceTypes>& registry() {
  static CpuAllocator cpu;
  static std::array<Allocator*, kNumDeviceTypes> allocators{&cpu, nullptr};
  return allocators;
}

}  // namespace

Allocator& allocator_for(Device device) {
  Allocator* a = registry()[static_cast<int>(device.type)];
  LORA_CHECK(a != nullptr, "device {} is not available: this build has no backend for it", device.str());
  return *a;
}

void register_allocator(DeviceType type, Allocator* allocator) { registry()[static_cast<int>(type)] = allocator; }

}  // namespace lora
