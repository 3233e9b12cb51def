// Allocator: raw device memory for tensor storage, one per device type (the CPU's here; CUDA's registers
// itself when that backend is linked). Allocators move bytes; the Storage that owns them does the accounting.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace lora {

// How long a block is expected to live. A caching allocator rounds requests up to reusable size classes, which
// pays for blocks that are freed and asked for again (a step's activations) but only wastes memory on blocks held
// for the whole run: a model's weights and the optimizer's state are Lasting, and an allocator may serve them at
// their exact size instead.
enum class BlockLifetime : uint8_t { Transient, Lasting };

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes, Device device, BlockLifetime lifetime) = 0;
  // `bytes` and `lifetime` are those the block was allocated with.
  virtual void deallocate(void* ptr, size_t bytes, Device device, BlockLifetime lifetime) = 0;
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
// Reads the LORA_CPU_* settings now, as the first CPU allocation would: a bad one ends the process with its
// message and status 2. For a program that starts others before it allocates anything itself.
void check_cpu_allocator_settings();
// The allocator registered for a device type, or nullptr.
Allocator* find_allocator(DeviceType type);
void register_allocator(DeviceType type, Allocator* allocator);

// CPU allocations are aligned to 64 bytes (a cache line, and a full AVX-512 vector).
constexpr size_t kCpuAlignment = 64;

// The CPU allocator's cache (core/allocator.cpp). Freed blocks are kept by size class for the next
// allocation of that class, so that a training or decode step that frees and re-allocates the same buffers
// takes nothing from the system in steady state. The tracker (core/memory.h) counts the bytes tensors hold;
// the cache's blocks are held from the system on top of that.
namespace memory {

// The floor of the default, growing cache limit (set_growing_cache_limit).
constexpr size_t kDefaultCacheLimit = size_t(2) << 30;

// Figures of the CPU allocator since the process started (counts never reset; take differences).
struct CpuAllocatorStats {
  int64_t allocations = 0;         // framework allocations: every non-empty allocate()
  int64_t system_allocations = 0;  // of those, the ones the cache could not serve (aligned_alloc or mmap)
  int64_t system_frees = 0;        // blocks given back to the system (over the limit, one-off sizes, trims)
  int64_t cached_bytes = 0;        // held from the system, free: the cache (class sizes)
  int64_t cached_blocks = 0;
  int64_t cache_limit = 0;  // the most the cache holds now; a freed block beyond it goes back to the system
  int64_t transient_peak = 0;  // the most class bytes tensors have held in Transient blocks at once
};
CpuAllocatorStats cpu_allocator_stats();

// Gives every cached block back to the system; returns the bytes released. The allocator also trims
// itself, and tries once more, when the system refuses an allocation.
size_t trim_cache();
// Hands the pages of glibc's heap that hold no live block back to the system (malloc_trim; nothing elsewhere).
// The allocator tells glibc never to trim by itself, so that a step's small buffers stay mapped; a program calls
// this after a one-off phase that made and freed many small blocks, such as building a tokenizer.
void trim_heap();
// A fixed limit on the cache, in bytes (0: no cache, every free goes back to the system); LORA_CPU_CACHE_MIB
// (mebibytes) in the environment sets one at start.
void set_cache_limit(size_t bytes);
// The default, growing limit: the cache holds at most the larger of `floor` and 1.25 x transient_peak (the most
// the tensors have held in Transient blocks at once; the quarter is slack for blocks of one class lying free while
// another is asked for). A step that frees and re-allocates the same blocks then takes nothing from the system
// however large it is.
void set_growing_cache_limit(size_t floor = kDefaultCacheLimit);


// The size a Transient request of `bytes` is served with: multiples of 64 up to 4 KiB, then four classes per
// power of two (2^k times 1.25, 1.5, 1.75, 2; at most 25% above the request, 12.5% on average). A Lasting
// request is never cached, and served rounded to 64 bytes (below 256 KiB) or to whole pages (lasting_size).
size_t size_class(size_t bytes);
size_t lasting_size(size_t bytes);

}  // namespace memory

}  // namespace lora
