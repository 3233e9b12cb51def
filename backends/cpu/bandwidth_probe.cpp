// The streaming-read bandwidth probe (backends/cpu/bandwidth_probe.h).
#include "backends/cpu/bandwidth_probe.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "core/error.h"

namespace lora::cpu {
namespace {

// Sums n 64-bit words in 8 independent lanes of 4 (the compiler vectorises integer sums freely: integer
// addition is associative, unlike float addition, which it may not reorder).
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t lanes[32] = {};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
#pragma GCC unroll 32
    for (int j = 0; j < 32; ++j) lanes[j] += p[i + j];
  }
  uint64_t total = 0;
  for (; i < n; ++i) total += p[i];
  for (uint64_t l : lanes) total += l;
  return total;
}

}  // namespace

size_t last_level_cache_bytes() {
  for (int name : {_SC_LEVEL4_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE, _SC_LEVEL2_CACHE_SIZE}) {
    const long v = sysconf(name);
    if (v > 0) return static_cast<size_t>(v);
  }
  return 0;
}

size_t default_probe_bytes() {
  return std::max(size_t(1) << 30, 4 * last_level_cache_bytes());
}

BandwidthResult measure_read_bandwidth(size_t bytes, int repeats) {
  bytes = bytes / 4096 * 4096;
  LORA_CHECK(bytes >= 4096 && repeats >= 1, "bandwidth probe: {} bytes, {} repeats; expected at least 4 KiB and 1",
             bytes, repeats);
  const size_t words = bytes / sizeof(uint64_t);
  // Mapped and advised onto transparent huge pages like the weights it stands for (the CPU allocator advises
  // every block of 4 MiB or more, core/allocator.cpp): on 4 KiB pages the probe paid TLB misses that
  // decoding does not, and read 5-8% below what decoding streamed.
  void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  LORA_CHECK(mapped != MAP_FAILED, "bandwidth probe: cannot map {} bytes", bytes);
  struct Unmap {
    size_t bytes;
    void operator()(void* p) const { munmap(p, bytes); }
  };
  const std::unique_ptr<void, Unmap> buffer(mapped, Unmap{bytes});
#if defined(MADV_HUGEPAGE)
  madvise(mapped, bytes, MADV_HUGEPAGE);  // advice only: without transparent huge pages it is refused, harmlessly
#endif
  uint64_t* data = static_cast<uint64_t*>(mapped);
  const int threads = std::max(1, omp_get_max_threads());
  auto part = [&](int t, size_t& begin, size_t& end) {  // thread t's words, whole cache lines
    const size_t per = (words / threads + 7) / 8 * 8;
    begin = std::min(words, static_cast<size_t>(t) * per);
    end = t == threads - 1 ? words : std::min(words, begin + per);
  };
#pragma omp parallel num_threads(threads)
  {
    size_t begin = 0, end = 0;
    part(omp_get_thread_num(), begin, end);
    for (size_t i = begin; i < end; ++i) data[i] = i;
  }
  std::vector<double> gbps;
  uint64_t sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      size_t begin = 0, end = 0;
      part(omp_get_thread_num(), begin, end);
      total += sum_words(data + begin, end - begin);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    gbps.push_back(static_cast<double>(bytes) / s / 1e9);
    sink += total;
  }
  // The sum of i over [0, words): checks that every word was read (and keeps the reads from being dropped).
  // (Halve the even factor first: the product wraps modulo 2^64 like the sums do, a division after it would not.)
  const uint64_t w = words, per_read = w % 2 == 0 ? (w / 2) * (w - 1) : w * ((w - 1) / 2);
  const uint64_t expected = per_read * static_cast<uint64_t>(repeats);
  LORA_CHECK(sink == expected, "bandwidth probe: the buffer read back wrong ({} != {})", sink, expected);
  std::sort(gbps.begin(), gbps.end());
  return {bytes, threads, gbps.back(), gbps[gbps.size() / 2]};
}

}  // namespace lora::cpu
