// The CPU allocator (64-byte aligned, with a cache of freed blocks by size class), the meta device's (no memory), and
// the per-device-type allocator registry.
#include "core/allocator.h"

#include <sys/mman.h>

#include <malloc.h>
#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/memory.h"

namespace lora {
namespace {

// ---------------------------------------------------------------------------------------------------
// Why a cache: a training step frees and re-allocates the same buffers every step (the logits [B T, V],
// the token embedding's gradient [V, C], the MLP activations), and a decode step the same small ones.
// Given back to the system, every large block is page-faulted in again on its next use (123 k faults per
// GPT-2 small step at 4 x 64, ~10% of the step on one thread). Here every freed block is kept in the free
// list of its size class (memory::size_class) and handed out again for the next request of that class;
// the system is asked only when the class's list is empty. Blocks of kMmapBlock and above come from mmap
// (so that a trim really gives them back), smaller ones from glibc's heap, which is told never to trim and
// never to mmap below kLargeBlock (so the process's other buffers, std::vector's included, stay mapped too).
//
// What the cache may add to the process's memory: by default, at most the larger of 2 GiB and 1.25 times the
// most the tensors have held in transient blocks at once (the step's peak), so that a step of any size that
// frees and re-allocates the same blocks takes nothing from the system (a fixed 2 GiB gave SmolLM2-135M's full
// 4 x 256 step, 2.10 GiB of transient blocks at its peak, 33,000 page faults per step). The quarter is slack for
// blocks of one class lying free while another class is asked for: the blocks that step cycles through come to
// 2.11 GiB. A fixed limit instead with memory::set_cache_limit or LORA_CPU_CACHE_MIB. A free beyond the limit goes
// back to the system. A block of kLargeBlock or more is cached
// only from the second free in its class, so that one-off temporaries (the initialiser's [V, C]) do not sit
// in the cache for the whole run. The tracker counts the bytes tensors ask for, exactly as before;
// reserved_bytes() is what the allocator holds on top (the cache and the rounding up to classes).
//
// Lasting blocks (weights, optimizer state: BlockLifetime) skip the classes and the cache: rounded only to 64
// bytes (from glibc's heap) or, from kMmapBlock on, to whole pages (a mapping of their own), and given back
// when freed. Rounded up to a class, a 4-bit model's weights held 13% more than the file (a 1280 x 5120 q4_0
// matrix of 3.5 MiB in a 4 MiB block).
constexpr size_t kLargeBlock = size_t(32) << 20;  // glibc's largest mmap threshold
constexpr size_t kMmapBlock = size_t(256) << 10;  // class sizes from here on are whole pages
constexpr size_t kSmallClassLimit = 4096;         // multiples of 64 up to here
constexpr int kSmallClasses = int(kSmallClassLimit / kCpuAlignment);
constexpr int kSmallLog2 = 12;  // log2(kSmallClassLimit)
constexpr int kNumClasses = kSmallClasses + 4 * (64 - kSmallLog2);

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}
int floor_log2(size_t n) {
  return 63 - std::countl_zero(static_cast<uint64_t>(n));
}

// The class of a request of `bytes` (> 0): its index and the size it is served with.
struct SizeClass {
  int index;
  size_t bytes;
};
SizeClass size_class_of(size_t bytes) {
  if (bytes <= kSmallClassLimit) {
    const size_t rounded = round_up(bytes, kCpuAlignment);
    return {int(rounded / kCpuAlignment) - 1, rounded};
  }
  // 2^k < bytes <= 2^(k+1): four classes of 2^(k-2) each.
  const int k = floor_log2(bytes - 1);
  LORA_CHECK(k < 62, "CPU allocation of {} bytes is beyond any machine's memory", bytes);
  const size_t step = size_t(1) << (k - 2), rounded = round_up(bytes, step);
  return {kSmallClasses + 4 * (k - kSmallLog2) + int((rounded - (size_t(1) << k)) / step) - 1, rounded};
}

// Heap settings for the blocks below kLargeBlock; a user's own MALLOC_MMAP_THRESHOLD_ or
// MALLOC_TRIM_THRESHOLD_ (glibc's environment tunables) wins over them.
void configure_heap() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, int(kLargeBlock));
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

// LORA_CPU_CACHE_MIB (a fixed limit), or nothing (the default, growing limit).
std::optional<size_t> cache_limit_from_environment() {
  const char* text = std::getenv("LORA_CPU_CACHE_MIB");
  if (text == nullptr || *text == '\0') return std::nullopt;
  uint64_t mib = 0;
  const char* end = text + std::strlen(text);
  const auto [at, ec] = std::from_chars(text, end, mib);
  LORA_CHECK(ec == std::errc() && at == end && mib <= (uint64_t(1) << 40),
             "LORA_CPU_CACHE_MIB='{}' is not a whole number of mebibytes (0 turns the CPU allocator's cache off)",
             text);
  return size_t(mib) << 20;
}

// LORA_CPU_HUGEPAGES=0 turns the huge-page advice off (to measure what it does); anything else but 1 is refused.
bool hugepages_from_environment() {
  const char* text = std::getenv("LORA_CPU_HUGEPAGES");
  if (text == nullptr || *text == '\0') return true;
  const std::string_view s = text;
  LORA_CHECK(s == "0" || s == "1", "LORA_CPU_HUGEPAGES='{}': expected 0 (off) or 1 (on, the default)", s);
  return s == "1";
}

// Blocks of this size and more are advised onto transparent huge pages (when the kernel's setting is
// "madvise" or "always"): a weight matrix streamed once per decoded token then takes one TLB entry per 2 MiB
// instead of 512, and a fresh block faults in 2 MiB at a time instead of 4 KiB.
constexpr size_t kHugePageBlock = size_t(4) << 20;

class CpuAllocator final : public Allocator {
 public:
  CpuAllocator() : hugepages_(hugepages_from_environment()) {
    if (const std::optional<size_t> fixed = cache_limit_from_environment()) {
      limit_ = *fixed;
      growing_ = false;
    }
    configure_heap();
  }

  void* allocate(size_t bytes, Device, BlockLifetime lifetime) override {
    if (bytes == 0) return nullptr;
    if (lifetime == BlockLifetime::Lasting) return allocate_lasting(bytes);
    const SizeClass c = size_class_of(bytes);
    {
      std::lock_guard lock(mutex_);
      ++stats_.allocations;
      held_ += c.bytes;
      requested_ += bytes;
      transient_held_ += c.bytes;
      stats_.transient_peak = std::max(stats_.transient_peak, int64_t(transient_held_));
      std::vector<void*>& list = free_[size_t(c.index)];
      if (!list.empty()) {
        void* p = list.back();
        list.pop_back();
        stats_.cached_bytes -= int64_t(c.bytes);
        --stats_.cached_blocks;
        return p;
      }
      ++stats_.system_allocations;
    }
    void* p = system_allocate(c.bytes);
    if (p == nullptr) {  // the system refused: give the cache back and try once more
      trim();
      p = system_allocate(c.bytes);
    }
    if (p == nullptr) {
      {
        std::lock_guard lock(mutex_);
        held_ -= c.bytes;
        requested_ -= bytes;
        transient_held_ -= c.bytes;
      }
      LORA_FAIL("out of CPU memory allocating {}; the tracker holds {}", format_bytes(int64_t(bytes)),
                MemoryTracker::instance().live_summary(Device::cpu()));
    }
    return p;
  }

  void deallocate(void* ptr, size_t bytes, Device, BlockLifetime lifetime) override {
    if (ptr == nullptr) return;
    if (lifetime == BlockLifetime::Lasting) {
      const size_t size = memory::lasting_size(bytes);
      {
        std::lock_guard lock(mutex_);
        held_ -= size;
        requested_ -= bytes;
        ++stats_.system_frees;
      }
      system_free(ptr, size);
      return;
    }
    const SizeClass c = size_class_of(bytes);
    {
      std::lock_guard lock(mutex_);
      held_ -= c.bytes;
      requested_ -= bytes;
      transient_held_ -= c.bytes;
      const bool one_off = c.bytes >= kLargeBlock && ++large_frees_[size_t(c.index)] < 2;
      if (!one_off && size_t(stats_.cached_bytes) + c.bytes <= limit()) {
        free_[size_t(c.index)].push_back(ptr);
        stats_.cached_bytes += int64_t(c.bytes);
        ++stats_.cached_blocks;
        return;
      }
      ++stats_.system_frees;
    }
    system_free(ptr, c.bytes);
  }

  // The cache and the rounding of live blocks up to their classes.
  size_t reserved_bytes(Device) const override {
    std::lock_guard lock(mutex_);
    return size_t(stats_.cached_bytes) + held_ - requested_;
  }

  memory::CpuAllocatorStats stats() const {
    std::lock_guard lock(mutex_);
    memory::CpuAllocatorStats s = stats_;
    s.cache_limit = int64_t(limit());
    return s;
  }

  size_t trim() {
    std::vector<std::pair<void*, size_t>> blocks;
    {
      std::lock_guard lock(mutex_);
      for (int i = 0; i < kNumClasses; ++i) {
        for (void* p : free_[size_t(i)]) blocks.emplace_back(p, class_bytes(i));
        free_[size_t(i)].clear();
      }
      stats_.system_frees += int64_t(blocks.size());
      stats_.cached_bytes = 0;
      stats_.cached_blocks = 0;
    }
    size_t released = 0;
    for (const auto& [p, bytes] : blocks) {
      system_free(p, bytes);
      released += bytes;
    }
    return released;
  }

  // A fixed limit (`growing` false), or the growing one: `bytes` or 1.25 times the transient peak, the larger.
  void set_limit(size_t bytes, bool growing) {
    {
      std::lock_guard lock(mutex_);
      limit_ = bytes;
      growing_ = growing;
      if (size_t(stats_.cached_bytes) <= limit()) return;
    }
    trim();
  }

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
  // A Lasting block: from the system, at lasting_size.
  void* allocate_lasting(size_t bytes) {
    const size_t size = memory::lasting_size(bytes);
    void* p = system_allocate(size);
    if (p == nullptr) {
      trim();
      p = system_allocate(size);
    }
    LORA_CHECK(p != nullptr, "out of CPU memory allocating {}; the tracker holds {}", format_bytes(int64_t(bytes)),
               MemoryTracker::instance().live_summary(Device::cpu()));
    std::lock_guard lock(mutex_);
    ++stats_.allocations;
    ++stats_.system_allocations;
    held_ += size;
    requested_ += bytes;
    return p;
  }
  // The most the cache may hold now (the mutex held).
  size_t limit() const {
    const size_t peak = size_t(stats_.transient_peak);
    return growing_ ? std::max(limit_, peak + peak / 4) : limit_;
  }
  // The size of class `index` (the inverse of size_class_of).
  static size_t class_bytes(int index) {
    if (index < kSmallClasses) return size_t(index + 1) * kCpuAlignment;
    const int k = kSmallLog2 + (index - kSmallClasses) / 4, sub = (index - kSmallClasses) % 4 + 1;
    return (size_t(1) << k) + size_t(sub) * (size_t(1) << (k - 2));
  }
  // nullptr when the system refuses.
  void* system_allocate(size_t class_bytes) const {
    if (class_bytes >= kMmapBlock) {
      void* p = mmap(nullptr, class_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return nullptr;
#if defined(MADV_HUGEPAGE)
      // Advice only: a kernel without transparent huge pages says EINVAL, and the block works as it is.
      if (hugepages_ && class_bytes >= kHugePageBlock) madvise(p, class_bytes, MADV_HUGEPAGE);
#endif
      return p;
    }
    return std::aligned_alloc(kCpuAlignment, class_bytes);  // class sizes are multiples of the alignment
  }
  static void system_free(void* p, size_t class_bytes) {
    if (class_bytes >= kMmapBlock)
      munmap(p, class_bytes);
    else
      std::free(p);
  }

  mutable std::mutex mutex_;
  std::array<std::vector<void*>, kNumClasses> free_;  // cached blocks by class, the last freed at the back
  std::array<int64_t, kNumClasses> large_frees_{};    // frees so far of classes of kLargeBlock and above
  memory::CpuAllocatorStats stats_;
  size_t limit_ = memory::kDefaultCacheLimit;  // the fixed limit, or the growing limit's floor
  bool growing_ = true;                         // the limit grows to the transient peak (stats_.transient_peak)
  const bool hugepages_;  // advise blocks of kHugePageBlock and more onto huge pages
  size_t held_ = 0;       // class bytes of the blocks tensors hold
  size_t requested_ = 0;  // bytes those blocks were asked for
  size_t transient_held_ = 0;  // class bytes of the Transient blocks tensors hold (the cache not counted)
};

CpuAllocator& cpu_allocator();

// The meta device: no memory at all. Storages get a null pointer (and are still charged to the tracker by
// Storage); Tensor checks the device before it copies or reads, so the copies below never see a meta tensor
// from a code path that expects data.
class MetaAllocator final : public Allocator {
 public:
  void* allocate(size_t, Device, BlockLifetime) override { return nullptr; }
  void deallocate(void*, size_t, Device, BlockLifetime) override {}
  void copy_to_host(void*, const void*, size_t, Device) override {
    LORA_FAIL("the meta device has no data to copy to the host");
  }
  void copy_from_host(void*, const void*, size_t, Device) override {}
  void copy_within(void*, const void*, size_t, Device) override {}
  void set_zero(void*, size_t, Device) override {}
};

// Never destroyed: tensors held by other static objects are freed during the program's exit, after any
// function-local static made later than them would be gone.
// A bad LORA_CPU_* setting ends the process with its message and status 2: the first allocation can come
// before main (a static tensor), where an exception could only abort.
CpuAllocator& cpu_allocator() {
  static CpuAllocator* cpu = [] {
    try {
      return new CpuAllocator();
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      std::exit(2);
    }
  }();
  return *cpu;
}

std::array<Allocator*, kNumDeviceTypes>& registry() {
  static MetaAllocator meta;
  static std::array<Allocator*, kNumDeviceTypes> allocators{&cpu_allocator(), nullptr, &meta};
  return allocators;
}

}  // namespace

void check_cpu_allocator_settings() {
  (void)cpu_allocator();
}

Allocator& allocator_for(Device device) {
  Allocator* a = registry()[static_cast<int>(device.type)];
  LORA_CHECK(a != nullptr, "device {} is not available: this build has no backend for it", device.str());
  return *a;
}

Allocator* find_allocator(DeviceType type) {
  return registry()[static_cast<int>(type)];
}

void register_allocator(DeviceType type, Allocator* allocator) {
  registry()[static_cast<int>(type)] = allocator;
}

namespace memory {

CpuAllocatorStats cpu_allocator_stats() {
  return cpu_allocator().stats();
}
size_t trim_cache() {
  return cpu_allocator().trim();
}
void trim_heap() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}
void set_cache_limit(size_t bytes) {
  cpu_allocator().set_limit(bytes, /*growing=*/false);
}
void set_growing_cache_limit(size_t floor) {
  cpu_allocator().set_limit(floor, /*growing=*/true);
}
size_t size_class(size_t bytes) {
  return bytes == 0 ? 0 : size_class_of(bytes).bytes;
}
size_t lasting_size(size_t bytes) {
  return round_up(bytes, bytes < kMmapBlock ? kCpuAlignment : 4096);
}

}  // namespace memory

}  // namespace lora
