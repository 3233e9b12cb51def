// GGUF tensor data to floats and back: F32, F16, BF16, the 32-element blocks Q8_0 and Q4_0
// (core/quant_blocks.h), Q4_1, Q5_0, Q5_1, and the 256-element K-quant super-blocks Q4_K, Q5_K, Q6_K that
// llama.cpp's Q4_K_M / Q5_K_M / Q6_K files hold, decoded exactly as ggml's dequantize_row_* do.
//
// K-quant layouts (ggml-common.h), a super-block of 256 weights:
//   Q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}            144 bytes: 8 sub-blocks of 32, each with a
//        6-bit scale sc and min m (packed in scales[12]); w = d sc q - dmin m, q the 4-bit code.
//   Q5_K {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} 176 bytes: as Q4_K with a fifth bit from qh.
//   Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}           210 bytes: 16 sub-blocks of 16 with an
//        8-bit signed scale; w = d scale (q - 32), q the 6-bit code (4 low bits in ql, 2 high in qh).
#pragma once

#include <cstdint>
#include <string>

#include "core/gguf.h"

namespace lora::gguf {

// y[k] = the k values of one row of `type` starting at `src` (k a multiple of the type's block size).
// Throws lora::Error for a type lora.cpp does not decode (TypeTraits::dequantizable is false).
void dequantize_row(TensorType type, const uint8_t* src, float* y, int64_t k);

// The bytes of `k` floats (one row, k a multiple of the block size) in `type`, appended to `out`:
// F32, F16 and BF16 (rounded to nearest even), Q8_0 and Q4_0 (ggml's reference quantizers).
void quantize_row(TensorType type, const float* x, int64_t k, std::string& out);

// Whether quantize_row writes `type`.
bool can_quantize(TensorType type);

}  // namespace lora::gguf
