// ggml's Q8_0 and Q4_0 reference quantizers and dequantizers (see core/quant_blocks.h).
#include "core/quant_blocks.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/half.h"

// Bit-exact agreement with ggml needs every product rounded on its own: no fused multiply-add.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace lora {
namespace {

void check_row_length(int64_t k, const char* what) {
  LORA_CHECK(k >= 0 && k % kQuantBlock == 0, "{}: a row of {} weights is not a whole number of blocks of {}", what, k,
             kQuantBlock);
}

}  // namespace

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t k) {
  check_row_length(k, "Q8_0 quantize");
  for (int64_t b = 0; b < k / kQuantBlock; ++b, x += kQuantBlock) {
    float amax = 0.0f;
    for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = float_to_half(d);
    for (int64_t j = 0; j < kQuantBlock; ++j) {
      // roundf: halves away from zero. The clamp changes no finite input (|x id| <= 127) and keeps a NaN
      // from reaching an undefined float-to-int conversion.
      const float q = std::round(std::min(127.0f, std::max(-127.0f, x[j] * id)));
      y[b].qs[j] = static_cast<int8_t>(q);
    }
  }
}

void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t k) {
  check_row_length(k, "Q4_0 quantize");
  constexpr int64_t half = kQuantBlock / 2;
  for (int64_t b = 0; b < k / kQuantBlock; ++b, x += kQuantBlock) {
    float amax = 0.0f, max = 0.0f;  // the first element of the largest magnitude, with its sign
    for (int64_t j = 0; j < kQuantBlock; ++j) {
      if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = float_to_half(d);
    // x id lies in [-8, 8], so x id + 8.5 in [0.5, 16.5]: truncation rounds to the nearest code, 16 is
    // clipped to 15. The lower clamp changes no finite input and keeps a NaN defined.
    auto code = [&](float v) {
      const float shifted = std::max(0.0f, v * id + 8.5f);
      return static_cast<uint8_t>(std::min(15, static_cast<int>(std::min(shifted, 16.0f))));
    };
    for (int64_t j = 0; j < half; ++j) {
      y[b].qs[j] = static_cast<uint8_t>(code(x[j]) | (code(x[j + half]) << 4));
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t k) {
  check_row_length(k, "Q8_0 dequantize");
  for (int64_t b = 0; b < k / kQuantBlock; ++b, y += kQuantBlock) {
    const float d = half_to_float(x[b].d);
    for (int64_t j = 0; j < kQuantBlock; ++j) y[j] = static_cast<float>(x[b].qs[j]) * d;
  }
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t k) {
  check_row_length(k, "Q4_0 dequantize");
  constexpr int64_t half = kQuantBlock / 2;
  for (int64_t b = 0; b < k / kQuantBlock; ++b, y += kQuantBlock) {
    const float d = half_to_float(x[b].d);
    for (int64_t j = 0; j < half; ++j) {
      y[j] = static_cast<float>((x[b].qs[j] & 0x0F) - 8) * d;
      y[j + half] = static_cast<float>((x[b].qs[j] >> 4) - 8) * d;
    }
  }
}

}  // namespace lora
