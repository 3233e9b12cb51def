// ggml's Q8_0 and Q4_0 blocks, byte for byte, and their reference quantizers and dequantizers: the 8-bit
// and 4-bit formats that read like llama.cpp's (GGUF files, the base formats q8_0 and q4_0).
//
// A row of k weights (k a multiple of 32) is k / 32 blocks of 32, each with one fp16 scale d:
//   Q8_0 {f16 d; int8 qs[32]}   34 bytes: w_j = qs[j] d,        d = absmax / 127,  qs[j] = round(w_j / d)
//   Q4_0 {f16 d; uint8 qs[16]}  18 bytes: w_j = (q_j - 8) d,    d = max / -8 (max: the signed value of
//        largest magnitude), q_j = min(15, trunc(w_j / d + 8.5)); byte j holds q_j in its low nibble and
//        q_{j+16} in its high nibble.
// The quantizers are ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref (the deterministic ones that
// write model files): the scale is computed in f32, the codes from the unrounded scale, then d is rounded
// to fp16 (nearest even). Bit-exact agreement with the `gguf` Python package is tested
// (tests/fixtures/quant_blocks.safetensors).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lora {

inline constexpr int64_t kQuantBlock = 32;  // weights per block, both formats

struct BlockQ8_0 {
  uint16_t d;     // fp16 scale
  int8_t qs[32];  // codes
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 blocks are 34 bytes, as in GGUF files");

struct BlockQ4_0 {
  uint16_t d;      // fp16 scale
  uint8_t qs[16];  // byte j: element j (low nibble), element j + 16 (high nibble)
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 blocks are 18 bytes, as in GGUF files");

// Bytes of one row of `k` weights (k a multiple of 32).
constexpr int64_t q8_0_row_bytes(int64_t k) {
  return k / kQuantBlock * static_cast<int64_t>(sizeof(BlockQ8_0));
}
constexpr int64_t q4_0_row_bytes(int64_t k) {
  return k / kQuantBlock * static_cast<int64_t>(sizeof(BlockQ4_0));
}

// x[k] -> y[k / 32]; k must be a multiple of 32 (else lora::Error). Non-finite input gives what ggml gives
// (undefined codes); callers that load weights check finiteness first.
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t k);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t k);

// x[k / 32] -> y[k]: w = qs d, w = (q - 8) d.
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t k);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t k);

}  // namespace lora
