// The skinny product's AVX2 code (with FMA and F16C; this file alone is compiled with them, and runs only
// where skinny_matmul.cpp detected them): 8 lanes, 8 accumulators.
#include "backends/cpu/skinny_matmul.h"

// Built without this ISA (CMake gives this file its flags on x86-64 only): the portable code stands in,
// and detected_isa() never picks it there anyway.
#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
void lora::cpu::detail::skinny_rows_avx2(const SkinnyProduct& p, int64_t r0, int64_t r1) {
  skinny_rows_portable(p, r0, r1);
}
#else

#include <immintrin.h>

#include "backends/cpu/skinny_matmul_tile.h"

namespace lora::cpu {
namespace {

struct V256 {
  using reg = __m256;
  static constexpr int W = 8;
  static constexpr int kAccumulators = 8;  // of 16 registers: the rest hold decoded weights and x

  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static void prefetch(uintptr_t address) { _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0); }
  static float hsum(reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  static float half_scalar(uint16_t h) { return _cvtsh_ss(h); }
  // A block's f16 scale in every lane: a 16-bit broadcast load and one conversion.
  static reg half_broadcast(const uint16_t* h) { return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(*h))); }
  static float bf16_scalar(uint16_t b) {
    return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(int(uint32_t(b) << 16))));
  }
  static reg load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static reg load_i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static __m256i bytes8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static reg load_u4_low(const uint8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_and_si256(bytes8(p), _mm256_set1_epi32(0x0F)));
  }
  static reg load_u4_high(const uint8_t* p) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(bytes8(p), 4)); }
  // 16 codes in two registers of 8: permute both, then pick by bit 3 (moved to the sign bit for blendv).
  static reg nf4_lookup(__m256i code) {
    const reg lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kNf4Codes), code);
    const reg hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kNf4Codes + 8), code);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
  }
  static reg nf4_low(const uint8_t* p) { return nf4_lookup(_mm256_and_si256(bytes8(p), _mm256_set1_epi32(0x0F))); }
  static reg nf4_high(const uint8_t* p) { return nf4_lookup(_mm256_srli_epi32(bytes8(p), 4)); }
};

}  // namespace

void detail::skinny_rows_avx2(const SkinnyProduct& p, int64_t r0, int64_t r1) {
  skinny_rows<V256>(p, r0, r1);
}

}  // namespace lora::cpu

#endif
