// The f32 multiply-add peak probe (backends/cpu/compute_probe.h).
#include "backends/cpu/compute_probe.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace lora::cpu {
namespace {

// Each accumulator runs a <- a * 0.5 + 0.5 from 0, so after n rounds it holds 1 - 2^-n (exactly, in float, for
// n <= 24; 1 after that): bounded, never subnormal, and known in advance. Returns the sum over all lanes.
constexpr float kHalf = 0.5f;

__attribute__((target("avx512f"))) double rounds_avx512(int64_t n) {
  constexpr int kAcc = 16;  // 2 FMA units x 4 cycles of latency = 8 in flight; 16 leaves headroom
  __m512 acc[kAcc];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  const __m512 h = _mm512_set1_ps(kHalf);
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < kAcc; ++j) acc[j] = _mm512_fmadd_ps(acc[j], h, h);
  }
  double total = 0;
  for (const __m512& a : acc) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, a);
    for (float l : lanes) total += l;
  }
  return total;
}

__attribute__((target("avx2,fma"))) double rounds_avx2(int64_t n) {
  constexpr int kAcc = 12;  // of 16 registers, with the constant
  __m256 acc[kAcc];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  const __m256 h = _mm256_set1_ps(kHalf);
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kAcc; ++j) acc[j] = _mm256_fmadd_ps(acc[j], h, h);
  }
  double total = 0;
  for (const __m256& a : acc) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, a);
    for (float l : lanes) total += l;
  }
  return total;
}

double rounds_portable(int64_t n) {
  constexpr int kAcc = 8;
  float acc[kAcc] = {};
  for (int64_t i = 0; i < n; ++i) {
    for (float& a : acc) a = std::fma(a, kHalf, kHalf);
  }
  double total = 0;
  for (float a : acc) total += a;
  return total;
}

// Floats per round of each ISA's code: accumulators x lanes.
int64_t floats_per_round(Isa isa) {
  switch (isa) {
    case Isa::AVX512:
      return 16 * 16;
    case Isa::AVX2:
      return 12 * 8;
    case Isa::Portable:
      return 8;
  }
  return 0;
}

double rounds(Isa isa, int64_t n) {
  switch (isa) {
    case Isa::AVX512:
      return rounds_avx512(n);
    case Isa::AVX2:
      return rounds_avx2(n);
    case Isa::Portable:
      return rounds_portable(n);
  }
  return 0;
}

}  // namespace

ComputeResult measure_fma_peak(int64_t iterations, int repeats, Isa isa) {
  LORA_CHECK(iterations >= 1 && repeats >= 1, "FMA peak probe: {} iterations, {} repeats; expected at least 1 each",
             iterations, repeats);
  LORA_CHECK(isa_supported(isa), "FMA peak probe: this CPU does not run {}", isa_name(isa));
  const int threads = std::max(1, omp_get_max_threads());
  const int64_t floats = floats_per_round(isa);
  // 1 - 2^-n per float, summed over every float of every thread (the sum of a few thousand ones is exact in double).
  const double one = iterations >= 24 ? 1.0 : 1.0 - std::ldexp(1.0, -static_cast<int>(iterations));
  const double expected = one * static_cast<double>(floats) * threads;
  std::vector<double> gflops;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total += rounds(isa, iterations);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    LORA_CHECK(total == expected, "FMA peak probe ({}): the accumulators hold {} where {} was expected", isa_name(isa),
               total, expected);
    gflops.push_back(2.0 * static_cast<double>(floats) * static_cast<double>(iterations) * threads / s / 1e9);
  }
  std::sort(gflops.begin(), gflops.end());
  return {threads, isa, gflops.back(), gflops[gflops.size() / 2]};
}

}  // namespace lora::cpu
