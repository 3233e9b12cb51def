// IEEE fp16 and bfloat16 <-> float conversion on raw 16-bit patterns (round to nearest even).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace lora {

// fp16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Every fp16 value is exact as a float.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));         // rebias 15 -> 127
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf stays inf; NaN stays a (quiet) NaN with its top payload bits
    return sign | (abs == 0x7F800000u ? 0x7C00u : 0x7E00u | ((abs >> 13) & 0x3FFu));
  }
  if (abs >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to inf (65520 is the tie above 65504)
  if (abs >= 0x38800000u) {                       // >= 2^-14: a normal fp16
    // Rebias the exponent, then round the 13 dropped bits to nearest even; a carry into the exponent is
    // the correct result.
    const uint32_t odd = (abs >> 13) & 1u;
    return sign | static_cast<uint16_t>((abs - (112u << 23) + 0xFFFu + odd) >> 13);
  }
  if (abs <= 0x33000000u) return sign;  // <= 2^-25: rounds to (signed) zero; 2^-25 itself ties to even 0
  // Subnormal: the result is round(value / 2^-24). value = m * 2^(e - 150) with the implicit bit in m.
  const uint32_t e = abs >> 23;  // in [102, 112]
  const uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - e;  // in [14, 24]
  uint32_t r = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (r & 1u))) ++r;  // may carry into 0x400, the smallest normal: correct
  return sign | static_cast<uint16_t>(r);
}

// bfloat16: the top 16 bits of a float.
inline float bfloat16_to_float(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

inline uint16_t float_to_bfloat16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // keep NaN a NaN
  // Round to nearest even; a carry into the exponent is correct, including the overflow to inf.
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace lora
