// What this machine can stream from memory: a read of a buffer far larger than the last-level cache by
// every thread at once, with vector loads. Decoding at batch 1 reads every weight once per token, so
// tokens/s <= this bandwidth / the bytes of the weights: the bound that bench_serve and bench_llama judge
// decoding against.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lora::cpu {

struct BandwidthResult {
  size_t bytes = 0;  // the buffer read
  int threads = 0;
  double best_gbps = 0;  // 1e9 bytes/s, the best of the repeats
  double median_gbps = 0;
};

// The last-level cache's size in bytes as the system reports it (0 when it does not).
size_t last_level_cache_bytes();

// A buffer size for the probe: 4x the last-level cache, at least 1 GiB.
size_t default_probe_bytes();

// Reads `bytes` (rounded down to 4 KiB) `repeats` times with all OpenMP threads: each thread first writes
// and then reads its own contiguous part (so its pages are local to it), with 8 independent 256-bit (or
// wider) integer accumulators, so neither a dependency chain nor scalar loads limit it.
BandwidthResult measure_read_bandwidth(size_t bytes, int repeats);

}  // namespace lora::cpu
