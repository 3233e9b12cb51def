// GGUF block formats: decoding every type lora.cpp reads (ggml's dequantize_row_*), encoding the ones it writes.
#include "core/gguf_quants.h"

#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/quant_blocks.h"

namespace lora::gguf {
namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// ---- Q4_1, Q5_0, Q5_1: 32 weights, low nibbles are elements 0..15, high nibbles 16..31 -----------------

// Q4_1 {f16 d; f16 m; u8 qs[16]}: w = q d + m.
void q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: the fifth bit of element j is bit j of qh; w = (q - 16) d.
void q5_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int x0 = ((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - 16;
    const int x1 = ((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
    y[j] = static_cast<float>(x0) * d;
    y[j + 16] = static_cast<float>(x1) * d;
  }
}

// Q5_1 {f16 d; f16 m; u8 qh[4]; u8 qs[16]}: w = q d + m.
void q5_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int x0 = (qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10);
    const int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(x0) * d + m;
    y[j + 16] = static_cast<float>(x1) * d + m;
  }
}

// ---- K-quants: super-blocks of 256 ---------------------------------------------------------------

// The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes (ggml's get_scale_min_k4).
void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void q4_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
    uint8_t sc, m;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

void q5_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
    uint8_t sc, m;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
  }
}

void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

template <typename Block>
void each_block(const uint8_t* src, float* y, int64_t k, int64_t block, int64_t bytes, Block decode) {
  for (int64_t i = 0; i < k / block; ++i) decode(src + i * bytes, y + i * block);
}

}  // namespace

void dequantize_row(TensorType type, const uint8_t* src, float* y, int64_t k) {
  const TypeTraits& t = type_traits(type);
  LORA_CHECK(k % t.block_size == 0, "GGUF {}: a row of {} values is not a multiple of its block of {}", t.name, k,
             t.block_size);
  switch (type) {
    case TensorType::F32:
      std::memcpy(y, src, static_cast<size_t>(k) * 4);
      return;
    case TensorType::F16:
      for (int64_t i = 0; i < k; ++i) y[i] = f16_at(src + 2 * i);
      return;
    case TensorType::BF16:
      for (int64_t i = 0; i < k; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        y[i] = bfloat16_to_float(b);
      }
      return;
    case TensorType::Q8_0:
      dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(src), y, k);
      return;
    case TensorType::Q4_0:
      dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(src), y, k);
      return;
    case TensorType::Q4_1:
      each_block(src, y, k, 32, 20, q4_1);
      return;
    case TensorType::Q5_0:
      each_block(src, y, k, 32, 22, q5_0);
      return;
    case TensorType::Q5_1:
      each_block(src, y, k, 32, 24, q5_1);
      return;
    case TensorType::Q4_K:
      each_block(src, y, k, 256, 144, q4_k);
      return;
    case TensorType::Q5_K:
      each_block(src, y, k, 256, 176, q5_k);
      return;
    case TensorType::Q6_K:
      each_block(src, y, k, 256, 210, q6_k);
      return;
    default:
      break;
  }
  LORA_FAIL(
      "GGUF: tensors of type {} cannot be read (lora.cpp reads f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, "
      "q4_K, q5_K, q6_K)",
      t.name);
}

bool can_quantize(TensorType type) {
  return type == TensorType::F32 || type == TensorType::F16 || type == TensorType::BF16 || type == TensorType::Q8_0 ||
         type == TensorType::Q4_0;
}

void quantize_row(TensorType type, const float* x, int64_t k, std::string& out) {
  const size_t at = out.size();
  switch (type) {
    case TensorType::F32:
      out.append(reinterpret_cast<const char*>(x), static_cast<size_t>(k) * 4);
      return;
    case TensorType::F16:
    case TensorType::BF16: {
      out.resize(at + static_cast<size_t>(k) * 2);
      for (int64_t i = 0; i < k; ++i) {
        const uint16_t h = type == TensorType::F16 ? float_to_half(x[i]) : float_to_bfloat16(x[i]);
        std::memcpy(out.data() + at + 2 * i, &h, 2);
      }
      return;
    }
    case TensorType::Q8_0: {
      std::vector<BlockQ8_0> blocks(static_cast<size_t>(k / kQuantBlock));
      quantize_row_q8_0(x, blocks.data(), k);
      out.append(reinterpret_cast<const char*>(blocks.data()), blocks.size() * sizeof(BlockQ8_0));
      return;
    }
    case TensorType::Q4_0: {
      std::vector<BlockQ4_0> blocks(static_cast<size_t>(k / kQuantBlock));
      quantize_row_q4_0(x, blocks.data(), k);
      out.append(reinterpret_cast<const char*>(blocks.data()), blocks.size() * sizeof(BlockQ4_0));
      return;
    }
    default:
      break;
  }
  LORA_FAIL("GGUF: lora.cpp does not write tensors of type {} (it writes f32, f16, bf16, q8_0, q4_0)", type_name(type));
}

}  // namespace lora::gguf
