// The skinny product (backends/cpu/skinny_matmul.h): the CPU's features, detected once; the portable code;
// the split of W's rows across threads; nf4's reordering of x.
#include "backends/cpu/skinny_matmul.h"

#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"

namespace lora::cpu {
namespace {

Isa probe_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq")) {
    return Isa::AVX512;
  }
  // clang 14 does not know "f16c" as a __builtin_cpu_supports name, so its CPUID bit (leaf 1, ECX bit 29) is read.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) return Isa::AVX2;
#endif
  return Isa::Portable;
}

Isa best_supported() {
  static const Isa best = probe_isa();
  return best;
}

Isa choose_isa() {
  Isa isa = best_supported();
  if (const char* cap = std::getenv("LORA_ISA"); cap && *cap) {
    const std::string s = cap;
    const Isa wanted = s == "portable" ? Isa::Portable : s == "avx2" ? Isa::AVX2 : s == "avx512" ? Isa::AVX512 : isa;
    LORA_CHECK(s == "portable" || s == "avx2" || s == "avx512", "LORA_ISA '{}': expected portable, avx2 or avx512", s);
    LORA_CHECK(isa_supported(wanted), "LORA_ISA '{}': this CPU does not run it (it runs {})", s, isa_name(isa));
    isa = wanted;
  }
  return isa;
}

// y[i, r] for rows [r0, r1) of W: each row dequantized once into `row` (k floats), then dotted with every
// row of x. Reads each weight byte once, like the vector code, with plain C++.
void portable_rows(const SkinnyProduct& p, int64_t r0, int64_t r1, std::vector<float>& row) {
  const int64_t k = p.w.cols;
  row.resize(static_cast<size_t>(k));
  for (int64_t r = r0; r < r1; ++r) {
    dequantize_span(p.w, r * k, (r + 1) * k, row.data());
    for (int64_t i = 0; i < p.m; ++i) {
      const float* x = p.x + i * p.ldx;
      float s = 0.0f;
      for (int64_t c = 0; c < k; ++c) s += row[static_cast<size_t>(c)] * x[c];
      float& y = p.y[i * p.ldy + r];
      y = p.beta == 0.0f ? p.alpha * s : p.alpha * s + p.beta * y;
    }
  }
}

// x with each group of 32 columns reordered as its 16 even columns then its 16 odd ones: the order of the
// nf4 codes' low and high nibbles (see DecodeNF4 in skinny_matmul_tile.h).
void reorder_for_nf4(const SkinnyProduct& p, std::vector<float>& out) {
  const int64_t k = p.w.cols;
  out.resize(static_cast<size_t>(p.m * k));
  for (int64_t i = 0; i < p.m; ++i) {
    const float* x = p.x + i * p.ldx;
    float* o = out.data() + i * k;
    for (int64_t c = 0; c < k; c += 32) {
      for (int j = 0; j < 16; ++j) o[c + j] = x[c + 2 * j], o[c + 16 + j] = x[c + 2 * j + 1];
    }
  }
}

// Below this many weight bytes one thread does it all: waking the others costs more than they save.
constexpr int64_t kParallelBytes = 1 << 17;

int64_t weight_bytes(const QuantizedView& w) {
  const int64_t n = w.rows * w.cols;
  switch (w.format) {
    case QuantFormat::F32:
      return 4 * n;
    case QuantFormat::BF16:
      return 2 * n;
    case QuantFormat::Q8_0:
      return w.rows * q8_0_row_bytes(w.cols);
    case QuantFormat::Q4_0:
      return w.rows * q4_0_row_bytes(w.cols);
    case QuantFormat::NF4:
      return n / 2;
  }
  return n;
}

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable:
      return "portable";
    case Isa::AVX2:
      return "avx2";
    case Isa::AVX512:
      return "avx512";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  return static_cast<int>(isa) <= static_cast<int>(best_supported());
}

Isa detected_isa() {
  static const Isa isa = choose_isa();
  return isa;
}

void detail::skinny_rows_portable(const SkinnyProduct& p, int64_t r0, int64_t r1) {
  thread_local std::vector<float> row;
  portable_rows(p, r0, r1, row);
}

void skinny_matmul(const SkinnyProduct& p) {
  skinny_matmul(p, detected_isa());
}

void skinny_matmul(const SkinnyProduct& p, Isa isa) {
  LORA_CHECK(p.m >= 1 && p.m <= kSkinnyMaxRows, "skinny_matmul: {} rows of x; expected 1 to {}", p.m, kSkinnyMaxRows);
  LORA_CHECK(p.ldx >= p.w.cols && p.ldy >= p.w.rows, "skinny_matmul: leading dimensions {} and {} below k {} and n {}",
             p.ldx, p.ldy, p.w.cols, p.w.rows);
  LORA_CHECK(isa_supported(isa), "skinny_matmul: this CPU does not run {}", isa_name(isa));
  if (p.w.rows == 0) return;
  SkinnyProduct q = p;
  // nf4 in vector code needs rows that start on a step of 32 columns; other shapes take the portable code.
  if (q.w.format == QuantFormat::NF4 && q.w.cols % 32 != 0) isa = Isa::Portable;
  thread_local std::vector<float> reordered;
  if (q.w.format == QuantFormat::NF4 && isa != Isa::Portable) {
    reorder_for_nf4(p, reordered);
    q.x = reordered.data(), q.ldx = q.w.cols;
  }
  auto run = [&](int64_t r0, int64_t r1) {
    switch (isa) {
      case Isa::AVX512:
        detail::skinny_rows_avx512(q, r0, r1);
        return;
      case Isa::AVX2:
        detail::skinny_rows_avx2(q, r0, r1);
        return;
      case Isa::Portable:
        detail::skinny_rows_portable(q, r0, r1);
        return;
    }
  };
  const int threads = weight_bytes(q.w) < kParallelBytes ? 1 : std::max(1, omp_get_max_threads());
  if (threads == 1) return run(0, q.w.rows);
    // Contiguous, equal ranges of rows (multiples of 8, so that tiles stay whole): each weight byte is read
    // by one thread, in order.
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t per = (q.w.rows + nt - 1) / nt, aligned = (per + 7) / 8 * 8;
    const int64_t r0 = std::min(q.w.rows, t * aligned), r1 = std::min(q.w.rows, r0 + aligned);
    if (r0 < r1) run(r0, r1);
  }
}

}  // namespace lora::cpu
