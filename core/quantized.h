// Quantized frozen weights: the formats of a base model's frozen linear layers under LoRA, and their
// reference quantizer (on the host). The matmul that reads them is backends/kernels/quantized_linear.h.
//
//   bf16  storage only: each weight rounded to bfloat16 (2 bytes), math in f32;
//   q8_0  ("int8") ggml's Q8_0, byte for byte (core/quant_blocks.h): each row in blocks of 32 weights with
//         an fp16 scale, w ~ q d, d = absmax_block / 127; 8.5 bits a weight; what llama.cpp's Q8_0 reads;
//   q4_0  ggml's Q4_0: blocks of 32 with an fp16 scale, w ~ (q - 8) d, d = -max_block / 8; 4.5 bits a weight;
//         (both need rows of whole blocks: the number of columns a multiple of 32)
//   nf4   QLoRA's 4-bit NormalFloat (Dettmers et al., 2023): the weight, flattened row-major, in blocks of
//         64; w ~ kNf4Codes[q] absmax_block, q the nearest of the 16 codes to w / absmax_block.
//         Double quantization stores the block absmaxes (positive) as 8-bit codes, per block of 256:
//         c ~ mean + q2 scale2, q2 = round((c - mean) / scale2), scale2 = max |c - mean| / 127.
//         (QLoRA uses 8-bit floats for q2; linear int8 codes are used here: the same 8 bits, a simpler
//         decode, and a bound that is easy to state.)
//
// Packed codes live in int32 tensors read as bytes (the framework has no byte dtype); every tensor here
// is charged to the FrozenParameter memory category.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/half.h"
#include "core/quant_blocks.h"
#include "core/tensor.h"

namespace lora {

enum class QuantFormat : uint8_t { F32, BF16, Q8_0, Q4_0, NF4 };

// "f32", "bf16", "q8_0" (or "int8"), "q4_0", "nf4"; anything else is a lora::Error naming `flag` and the
// choices.
QuantFormat parse_quant_format(const std::string& name, const std::string& flag = "--base-dtype");
std::string_view quant_format_name(QuantFormat format);

inline constexpr int64_t kNf4Block = 64;         // weights per absmax
inline constexpr int64_t kNf4AbsmaxBlock = 256;  // absmaxes per second-level scale (double quantization)

// The 16 NF4 values of QLoRA's Appendix E (bitsandbytes' table), ascending; code 7 is exactly 0.
inline constexpr float kNf4Codes[16] = {-1.0f,
                                        -0.6961928009986877f,
                                        -0.5250730514526367f,
                                        -0.39491748809814453f,
                                        -0.28444138169288635f,
                                        -0.18477343022823334f,
                                        -0.09105003625154495f,
                                        0.0f,
                                        0.07958029955625534f,
                                        0.16093020141124725f,
                                        0.24611230194568634f,
                                        0.33791524171829224f,
                                        0.44070982933044434f,
                                        0.5626170039176941f,
                                        0.7229568362236023f,
                                        1.0f};

// A frozen weight [rows, cols] = [out, in] in one of the compact formats (never F32).
struct QuantizedWeight {
  QuantFormat format = QuantFormat::BF16;
  int64_t rows = 0, cols = 0;
  bool double_quant = false;  // nf4 only
  // bf16: data BF16 [rows, cols]
  // q8_0: data: rows * cols / 32 BlockQ8_0 (34 bytes each), row after row
  // q4_0: data: rows * cols / 32 BlockQ4_0 (18 bytes each), row after row
  // nf4:  data: rows*cols/2 bytes, two 4-bit codes a byte, element i in byte i/2 (low nibble when i is even);
  //       plain:            scale F32 [blocks] = absmax per block of 64
  //       double-quantized: absmax_codes: blocks int8 codes; absmax_scale F32 [ceil(blocks/256)]; absmax_mean
  Tensor data, scale, absmax_codes, absmax_scale;
  float absmax_mean = 0.0f;

  int64_t blocks() const { return (rows * cols + kNf4Block - 1) / kNf4Block; }
  Device device() const { return data.device(); }
  size_t nbytes() const;  // every tensor above
};

// Quantizes a 2-D float weight (f32, f64, bf16 or f16, on any device; read through the host) into `format`
// on the weight's device. double_quant applies to nf4 only.
QuantizedWeight quantize_weight(const Tensor& weight, QuantFormat format, bool double_quant = false);

// An uninitialised q8_0 or q4_0 weight [rows, cols] on the host (cols a multiple of 32), for a loader that
// writes the blocks itself (a GGUF file's own, models/gguf/base_blocks.h).
QuantizedWeight empty_block_weight(QuantFormat format, int64_t rows, int64_t cols);
// An uninitialised weight [rows, cols] of any compact format on the host, every tensor of its encoding
// allocated (nf4: the plain or the double-quantized absmaxes), for a loader that reads them from a file.
QuantizedWeight empty_quantized_weight(QuantFormat format, int64_t rows, int64_t cols, bool double_quant);
// The bytes of `data` that encode a weight of this format and shape (the int32 tensor holding them is
// rounded up to whole elements; its last bytes past these are zero).
int64_t quantized_data_bytes(QuantFormat format, int64_t rows, int64_t cols);

// Reference dequantization on the host: rows [row0, row0 + count) as f32 [count, cols] (tests and the
// round-trip bounds; the matmul uses the kernels of backends/kernels/quantized_linear.h).
Tensor dequantize_weight(const QuantizedWeight& w, int64_t row0, int64_t count);
inline Tensor dequantize_weight(const QuantizedWeight& w) {
  return dequantize_weight(w, 0, w.rows);
}

// The same weight with every tensor on `device`.
QuantizedWeight quantized_to(const QuantizedWeight& w, Device device);

// ---- Decoding on the host (the reference dequantizer and the CPU kernel share it) ------------------

// The host pointers of a weight's tensors (the weight must be on the CPU).
struct QuantizedView {
  QuantFormat format;
  int64_t rows, cols;
  const uint8_t* data;         // codes (f32, bf16: the values, read as bytes; q8_0, q4_0: the blocks)
  const float* scale;          // nf4 plain: per block
  const int8_t* absmax_codes;  // nf4 double-quantized
  const float* absmax_scale;
  float absmax_mean;
};
QuantizedView host_view(const QuantizedWeight& w);

// The absmax of nf4 block b.
inline float nf4_absmax(const QuantizedView& v, int64_t b) {
  if (!v.absmax_codes) return v.scale[b];
  return v.absmax_mean + static_cast<float>(v.absmax_codes[b]) * v.absmax_scale[b / kNf4AbsmaxBlock];
}

// out[i - begin] = W_flat[i] for i in [begin, end): the elements of the weight flattened row-major.
template <typename T>
void dequantize_span(const QuantizedView& v, int64_t begin, int64_t end, T* out) {
  switch (v.format) {
    case QuantFormat::BF16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(v.data);
      for (int64_t i = begin; i < end; ++i) out[i - begin] = static_cast<T>(bfloat16_to_float(p[i]));
      return;
    }
    // Q8_0 and Q4_0 a block at a time: its scale converted once, then a fixed loop over the block's
    // elements that the compiler vectorises. [j0, j1) is the part of block k inside [begin, end).
    case QuantFormat::Q8_0: {  // w = d * q, q an int8
      const BlockQ8_0* blocks = reinterpret_cast<const BlockQ8_0*>(v.data);
      for (int64_t k = begin / kQuantBlock; k * kQuantBlock < end; ++k) {
        const int64_t base = k * kQuantBlock, j0 = std::max(begin, base) - base,
                      j1 = std::min(end, base + kQuantBlock) - base;
        const float d = half_to_float(blocks[k].d);
        const int8_t* q = blocks[k].qs;
        T* o = out + (base - begin);
        for (int64_t j = j0; j < j1; ++j) o[j] = static_cast<T>(static_cast<float>(q[j]) * d);
      }
      return;
    }
    case QuantFormat::Q4_0: {  // w = d * (q - 8): elements 0-15 in the low nibbles, 16-31 in the high ones
      const BlockQ4_0* blocks = reinterpret_cast<const BlockQ4_0*>(v.data);
      constexpr int64_t half = kQuantBlock / 2;
      for (int64_t k = begin / kQuantBlock; k * kQuantBlock < end; ++k) {
        const int64_t base = k * kQuantBlock, j0 = std::max(begin, base) - base,
                      j1 = std::min(end, base + kQuantBlock) - base;
        const float d = half_to_float(blocks[k].d);
        const uint8_t* q = blocks[k].qs;
        T* o = out + (base - begin);
        for (int64_t j = j0; j < std::min(j1, half); ++j)
          o[j] = static_cast<T>(static_cast<float>((q[j] & 0x0F) - 8) * d);
        for (int64_t j = std::max(j0, half); j < j1; ++j)
          o[j] = static_cast<T>(static_cast<float>((q[j - half] >> 4) - 8) * d);
      }
      return;
    }
    case QuantFormat::NF4: {
      for (int64_t i = begin; i < end;) {  // one block segment at a time: w = code[q] * absmax_block
        const int64_t block = i / kNf4Block, stop = std::min(end, (block + 1) * kNf4Block);
        const float absmax = nf4_absmax(v, block);
        if (i & 1) {  // an odd start: the high nibble of a byte whose low one is outside the span
          out[i - begin] = static_cast<T>(kNf4Codes[v.data[i >> 1] >> 4] * absmax);
          ++i;
        }
        for (; i + 1 < stop; i += 2) {  // a whole byte: two elements
          const uint8_t byte = v.data[i >> 1];
          out[i - begin] = static_cast<T>(kNf4Codes[byte & 0x0F] * absmax);
          out[i + 1 - begin] = static_cast<T>(kNf4Codes[byte >> 4] * absmax);
        }
        if (i < stop) {  // an even last element: the low nibble
          out[i - begin] = static_cast<T>(kNf4Codes[v.data[i >> 1] & 0x0F] * absmax);
          ++i;
        }
      }
      return;
    }
    case QuantFormat::F32: {
      const float* p = reinterpret_cast<const float*>(v.data);
      for (int64_t i = begin; i < end; ++i) out[i - begin] = static_cast<T>(p[i]);
      return;
    }
  }
  LORA_FAIL("dequantize: unknown format");
}

}  // namespace lora
