// Vectorisable exp for the CPU kernels: the float path uses arithmetic and bit operations only, so a loop
// under `#pragma omp simd` becomes AVX2 code (glibc's expf is a scalar call, and its vector variants need
// -ffast-math); the double path stays std::exp (the gradient checks run in double).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace lora::cpu {

// e^x in float: x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite, two-part ln2), e^r by Cephes' degree-7
// polynomial, 2^n from the exponent bits. Relative error below 2e-7 (a few ulp) on [-87, 88]; inputs are
// clamped to that range, so e^x never overflows and very negative x give ~1e-38 instead of 0.
[[gnu::always_inline]] inline float exp_f32(float x) {
  // Clamp to [-87, 88] with bit selects: a float ternary is a branch GCC will not vectorise under the
  // default -ftrapping-math. (A NaN input stays NaN.)
  const int32_t below = -static_cast<int32_t>(x < -87.0f), above = -static_cast<int32_t>(x > 88.0f);
  int32_t bits = std::bit_cast<int32_t>(x);
  bits = (bits & ~below) | (std::bit_cast<int32_t>(-87.0f) & below);
  bits = (bits & ~above) | (std::bit_cast<int32_t>(88.0f) & above);
  x = std::bit_cast<float>(bits);
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float shifted = x * 1.44269504088896341f + kMagic;
  const float n = shifted - kMagic;
  const int32_t ni = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kMagic);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((ni + 127) << 23);
}

template <typename T>
inline T fast_exp(T x) {
  if constexpr (std::is_same_v<T, float>)
    return exp_f32(x);
  else
    return std::exp(x);
}

}  // namespace lora::cpu
