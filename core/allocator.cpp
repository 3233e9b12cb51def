// The CPU allocator (64-byte aligned, with a cache of large blocks), the meta device's (no memory), and the
// per-device-type allocator registry.
#include "core/allocator.h"

#include <sys/mman.h>

#include <malloc.h>
#include <array>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <unordered_map>

#include "core/error.h"
#include "core/memory.h"

namespace lora {
namespace {

// ---------------------------------------------------------------------------------------------------
// Why a cache: a training step frees and re-allocates the same large buffers every step (the logits
// [B T, V], the token embedding's gradient [V, C], the MLP activations). glibc serves blocks above its
// mmap threshold with mmap and unmaps them on free, so every step page-faults them all in again (123 k
// faults per GPT-2 small step at 4 x 64, ~10% of the step on one thread). Blocks of kLargeBlock and above
// are mmapped here and, from the second time a block of their size is freed (a size that recurs, not a
// one-off such as the initialiser's temporaries), kept by exact (page-rounded) size for the next allocation
// of that size; smaller
// blocks come from glibc's heap, which is told never to trim and never to mmap them (so their pages stay
// mapped too). The cache never holds more than kMaxCached bytes; the tracker keeps counting tensor bytes
// only, and reserved_bytes() reports what the cache holds on top.
constexpr size_t kLargeBlock = size_t(32) << 20;  // glibc's largest mmap threshold
constexpr size_t kPage = size_t(2) << 20;         // large blocks are rounded to 2 MiB (a huge page)
constexpr size_t kMaxCached = size_t(1) << 30;

// Heap settings for the blocks below kLargeBlock; a user's own MALLOC_MMAP_THRESHOLD_ or
// MALLOC_TRIM_THRESHOLD_ (glibc's environment tunables) wins over them.
void configure_heap() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, int(kLargeBlock));
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

class CpuAllocator final : public Allocator {
 public:
  CpuAllocator() { configure_heap(); }

  void* allocate(size_t bytes, Device) override {
    if (bytes == 0) return nullptr;
    if (bytes >= kLargeBlock) return allocate_large(round_up(bytes, kPage));
    // aligned_alloc wants a size that is a multiple of the alignment.
    void* p = std::aligned_alloc(kCpuAlignment, round_up(bytes, kCpuAlignment));
    LORA_CHECK(p != nullptr, "out of CPU memory allocating {}; the tracker holds {}", format_bytes(int64_t(bytes)),
               MemoryTracker::instance().live_summary(Device::cpu()));
    return p;
  }
  void deallocate(void* ptr, size_t bytes, Device) override {
    if (ptr == nullptr) return;
    if (bytes >= kLargeBlock) return release_large(ptr, round_up(bytes, kPage));
    std::free(ptr);
  }
  size_t reserved_bytes(Device) const override {
    std::lock_guard lock(mutex_);
    return cached_bytes_;
  }
  void copy_to_host(void* dst, const void* src, size_t bytes, Device) override { copy(dst, src, bytes); }
  void copy_from_host(void* dst, const void* src, size_t bytes, Device) override { copy(dst, src, bytes); }
  void copy_within(void* dst, const void* src, size_t bytes, Device) override { copy(dst, src, bytes); }
  void set_zero(void* dst, size_t bytes, Device) override {
    if (bytes) std::memset(dst, 0, bytes);
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };

  static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
  static void copy(void* dst, const void* src, size_t bytes) {
    if (bytes) std::memmove(dst, src, bytes);
  }

  void* allocate_large(size_t bytes) {
    {
      std::lock_guard lock(mutex_);
      for (auto it = cache_.begin(); it != cache_.end(); ++it) {
        if (it->bytes == bytes) {
          void* p = it->ptr;
          cached_bytes_ -= bytes;
          cache_.erase(it);
          return p;
        }
      }
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    LORA_CHECK(p != MAP_FAILED, "out of CPU memory allocating {}; the tracker holds {}", format_bytes(int64_t(bytes)),
               MemoryTracker::instance().live_summary(Device::cpu()));
    return p;
  }

  // Keeps the block for reuse if its size recurs; the oldest cached blocks go back to the OS beyond kMaxCached.
  void release_large(void* ptr, size_t bytes) {
    std::lock_guard lock(mutex_);
    if (++frees_[bytes] < 2) {
      munmap(ptr, bytes);
      return;
    }
    cache_.push_back({ptr, bytes});
    cached_bytes_ += bytes;
    while (cached_bytes_ > kMaxCached) {
      munmap(cache_.front().ptr, cache_.front().bytes);
      cached_bytes_ -= cache_.front().bytes;
      cache_.pop_front();
    }
  }

  mutable std::mutex mutex_;
  std::deque<Block> cache_;  // freed large blocks, oldest first
  size_t cached_bytes_ = 0;
  std::unordered_map<size_t, int64_t> frees_;  // large blocks freed, per size (a few distinct sizes)
};

// The meta device: no memory at all. Storages get a null pointer (and are still charged to the tracker by
// Storage); Tensor checks the device before it copies or reads, so the copies below never see a meta tensor
// from a code path that expects data.
class MetaAllocator final : public Allocator {
 public:
  void* allocate(size_t, Device) override { return nullptr; }
  void deallocate(void*, size_t, Device) override {}
  void copy_to_host(void*, const void*, size_t, Device) override {
    LORA_FAIL("the meta device has no data to copy to the host");
  }
  void copy_from_host(void*, const void*, size_t, Device) override {}
  void copy_within(void*, const void*, size_t, Device) override {}
  void set_zero(void*, size_t, Device) override {}
};

std::array<Allocator*, kNumDeviceTypes>& registry() {
  static CpuAllocator cpu;
  static MetaAllocator meta;
  static std::array<Allocator*, kNumDeviceTypes> allocators{&cpu, nullptr, &meta};
  return allocators;
}

}  // namespace

Allocator& allocator_for(Device device) {
  Allocator* a = registry()[static_cast<int>(device.type)];
  LORA_CHECK(a != nullptr, "device {} is not available: this build has no backend for it", device.str());
  return *a;
}

void register_allocator(DeviceType type, Allocator* allocator) {
  registry()[static_cast<int>(type)] = allocator;
}

}  // namespace lora
