// The skinny product's AVX-512 code (F, BW, VL, DQ; this file alone is compiled with them, and runs only
// where skinny_matmul.cpp detected them): 16 lanes, 16 accumulators.
#include "backends/cpu/skinny_matmul.h"

// Built without this ISA (CMake gives this file its flags on x86-64 only): the portable code stands in,
// and detected_isa() never picks it there anyway.
#if !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
      defined(__F16C__))
void lora::cpu::detail::skinny_rows_avx512(const SkinnyProduct& p, int64_t r0, int64_t r1) {
  skinny_rows_portable(p, r0, r1);
}
#else

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*, which its own warnings flag.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "backends/cpu/skinny_matmul_tile.h"

namespace lora::cpu {
namespace {

struct V512 {
  using reg = __m512;
  static constexpr int W = 16;
  static constexpr int kAccumulators = 16;  // of 32 registers: the rest hold decoded weights and x

  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static void prefetch(uintptr_t address) { _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0); }
  static float hsum(reg a) { return _mm512_reduce_add_ps(a); }

  static float half_scalar(uint16_t h) { return _cvtsh_ss(h); }
  // A block's f16 scale in every lane: a 16-bit broadcast load and one conversion (a scalar conversion, then
  // a broadcast, took more instructions per block and row).
  static reg half_broadcast(const uint16_t* h) {
    return _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(*h)));
  }
  static float bf16_scalar(uint16_t b) {
    return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(int(uint32_t(b) << 16))));
  }
  // 16 bf16 -> f32: the 16 bits become the top half of each float.
  static reg load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static reg load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static __m512i bytes16(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static reg load_u4_low(const uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_and_si512(bytes16(p), _mm512_set1_epi32(0x0F)));
  }
  static reg load_u4_high(const uint8_t* p) { return _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes16(p), 4)); }
  // The 16 nf4 codes fill one register: the lookup is one permute.
  static reg nf4_low(const uint8_t* p) {
    return _mm512_permutexvar_ps(_mm512_and_si512(bytes16(p), _mm512_set1_epi32(0x0F)), _mm512_loadu_ps(kNf4Codes));
  }
  static reg nf4_high(const uint8_t* p) {
    return _mm512_permutexvar_ps(_mm512_srli_epi32(bytes16(p), 4), _mm512_loadu_ps(kNf4Codes));
  }
};

}  // namespace

void detail::skinny_rows_avx512(const SkinnyProduct& p, int64_t r0, int64_t r1) {
  skinny_rows<V512>(p, r0, r1);
}

}  // namespace lora::cpu

#endif
