// The CUDA caching allocator: cudaMalloc'd blocks rounded to size classes and kept per device for reuse, so
// that a training step allocates from the driver only in its first iteration. Registered for
// DeviceType::CUDA by a static initializer that makes no CUDA call (the driver is touched on first use).
//
// Size classes: up to 1 MiB, multiples of 512 bytes; above, 8 classes per power of two (waste < 12.5%).
// A freed block goes to its class's free list and is handed out again for a request of the same class.
// Reuse is safe without events because all work runs in order on the device's one (default) stream.
// When cudaMalloc fails, the device's cached blocks are released and the allocation tried once more.
#include <array>
#include <bit>
#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_context.h"
#include "backends/cuda/cuda_device.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/memory.h"

namespace lora::cuda {
namespace {

constexpr size_t kSmallLimit = size_t(1) << 20;
constexpr size_t kSmallStep = 512;

size_t round_size(size_t bytes) {
  if (bytes <= kSmallLimit) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  const int log2 = 63 - std::countl_zero(static_cast<uint64_t>(bytes));
  const size_t step = size_t(1) << (log2 - 3);
  return (bytes + step - 1) / step * step;
}

class CudaCachingAllocator final : public Allocator {
 public:
  // Every block is rounded to its class, Lasting ones too (at most 12.5% above the request).
  void* allocate(size_t bytes, Device device, BlockLifetime) override {
    if (bytes == 0) return nullptr;
    const int index = checked_index(device);
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[index];
    void* ptr = nullptr;
    auto it = pool.free.find(size);
    if (it != pool.free.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
      pool.cached -= size;
    } else {
      set_device(index);
      cudaError_t err = cudaMalloc(&ptr, size);
      if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        release_cached(index);
        err = cudaMalloc(&ptr, size);
      }
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        (void)cudaGetLastError();
        LORA_FAIL(
            "CUDA out of memory on cuda:{} allocating {} bytes (class {}): {}; the pool reserves {} bytes, "
            "{} in use; the device reports {} free of {}. The tracker holds on cuda:{}: {}",
            index, bytes, size, cudaGetErrorString(err), pool.reserved, pool.in_use, free_b, total_b, index,
            MemoryTracker::instance().live_summary(Device::cuda(index)));
      }
      pool.reserved += size;
      ++pool.mallocs;
    }
    pool.live.emplace(ptr, size);
    pool.in_use += size;
    pool.requested += bytes;
    return ptr;
  }

  // Called from Storage's destructor: never throws and makes no CUDA call (it may run at exit).
  void deallocate(void* ptr, size_t bytes, Device device, BlockLifetime) override {
    if (ptr == nullptr) return;
    const int index = device.index;
    if (index < 0 || index >= kMaxCudaDevices) return;
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[index];
    auto it = pool.live.find(ptr);
    if (it == pool.live.end()) {
      std::fprintf(stderr, "lora: CUDA allocator: free of unknown pointer %p on cuda:%d ignored\n", ptr, index);
      return;
    }
    const size_t size = it->second;
    pool.live.erase(it);
    pool.in_use -= size;
    pool.requested -= bytes;
    pool.cached += size;
    pool.free[size].push_back(ptr);
  }

  void copy_to_host(void* host_dst, const void* src, size_t bytes, Device device) override {
    if (bytes == 0) return;
    set_device(checked_index(device));
    LORA_CUDA_CHECK(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost));
  }
  void copy_from_host(void* dst, const void* host_src, size_t bytes, Device device) override {
    if (bytes == 0) return;
    set_device(checked_index(device));
    LORA_CUDA_CHECK(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
  }
  void copy_within(void* dst, const void* src, size_t bytes, Device device) override {
    if (bytes == 0 || dst == src) return;
    set_device(checked_index(device));
    LORA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, nullptr));
  }
  void set_zero(void* dst, size_t bytes, Device device) override {
    if (bytes == 0) return;
    set_device(checked_index(device));
    LORA_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, nullptr));
  }

  // What the pool holds beyond what tensors asked for: cached blocks plus size-class rounding.
  size_t reserved_bytes(Device device) const override {
    if (device.index < 0 || device.index >= kMaxCudaDevices) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    const Pool& pool = pools_[device.index];
    return pool.reserved - pool.requested;
  }

  CudaMemoryInfo info(int index) {
    CudaMemoryInfo out;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const Pool& pool = pools_[index];
      out.reserved_bytes = pool.reserved;
      out.in_use_bytes = pool.in_use;
      out.requested_bytes = pool.requested;
      out.cached_bytes = pool.cached;
      out.cuda_mallocs = pool.mallocs;
    }
    set_device(index);
    LORA_CUDA_CHECK(cudaMemGetInfo(&out.free_bytes, &out.total_bytes));
    return out;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int i = 0; i < kMaxCudaDevices; ++i) {
      if (pools_[i].cached > 0) release_cached(i);
    }
  }

  static int checked_index(Device device) {
    LORA_CHECK(device.is_cuda() && device.index >= 0 && device.index < kMaxCudaDevices,
               "CUDA allocator: device {} is not a CUDA device index in [0, {})", device.str(), kMaxCudaDevices);
    return device.index;
  }

 private:
  struct Pool {
    std::unordered_map<size_t, std::vector<void*>> free;  // size class -> cached blocks
    std::unordered_map<void*, size_t> live;               // block -> its size class
    size_t reserved = 0, in_use = 0, requested = 0, cached = 0;
    int64_t mallocs = 0;
  };

  // Frees the cached blocks of one device; the caller holds mutex_. cudaFree waits for queued work.
  void release_cached(int index) {
    Pool& pool = pools_[index];
    set_device(index);
    for (auto& [size, blocks] : pool.free) {
      for (void* p : blocks) {
        LORA_CUDA_CHECK(cudaFree(p));
        pool.reserved -= size;
        pool.cached -= size;
      }
      blocks.clear();
    }
    pool.free.clear();
  }

  mutable std::mutex mutex_;
  std::array<Pool, kMaxCudaDevices> pools_{};
};

// Never destroyed: tensors held by static objects may be freed after this file's statics are gone.
CudaCachingAllocator& caching_allocator() {
  static CudaCachingAllocator* allocator = new CudaCachingAllocator();
  return *allocator;
}

// Registration only stores a pointer: no CUDA call happens here.
[[maybe_unused]] const bool g_registered = [] {
  register_allocator(DeviceType::CUDA, &caching_allocator());
  return true;
}();

}  // namespace
}  // namespace lora::cuda

namespace lora {

CudaMemoryInfo cuda_memory_info(int device) {
  return cuda::caching_allocator().info(cuda::CudaCachingAllocator::checked_index(Device::cuda(device)));
}

void cuda_empty_cache() {
  cuda::caching_allocator().empty_cache();
}

}  // namespace lora
