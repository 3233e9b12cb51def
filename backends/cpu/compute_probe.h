// What this machine can compute: the f32 fused multiply-add peak of every thread at once, with the widest
// vectors the CPU runs. A matrix product does 2 FLOPs per multiply-add, so no training step can run its
// products faster than this figure; bench_train prints it beside the sgemm ceiling, so that a goal stated as a
// speed can be checked against what the silicon allows.
#pragma once

#include <cstdint>

#include "backends/cpu/skinny_matmul.h"

namespace lora::cpu {

struct ComputeResult {
  int threads = 0;
  Isa isa = Isa::Portable;
  double best_gflops = 0;  // 1e9 FLOPs/s (a multiply-add counts 2), the best of the repeats
  double median_gflops = 0;
};

// Every OpenMP thread runs `iterations` rounds of independent multiply-adds on registers only (16 vectors of
// accumulators for AVX-512, 12 for AVX2, 8 floats portably: enough in flight to cover the FMA units' latency),
// `repeats` times. Each result is checked against its closed form (it throws otherwise), so that none of the
// work can be dropped by the compiler.
ComputeResult measure_fma_peak(int64_t iterations, int repeats, Isa isa = detected_isa());

}  // namespace lora::cpu
