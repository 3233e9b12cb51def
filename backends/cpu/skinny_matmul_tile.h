// The register tile of the skinny product (backends/cpu/skinny_matmul.h), written once over a vector type
// V and instantiated by each ISA's file (skinny_matmul_avx2.cpp, skinny_matmul_avx512.cpp), which are the
// only files that include it. V supplies W lanes of f32 and: zero, load, set1, fma, mul, hsum, the decoders
// from int8, bf16 and 4-bit codes, and half_broadcast (a block's f16 scale in every lane).
//
// Per step of 32 columns, each of R weight rows is decoded once into 32 / W registers (in registers only:
// the weight is never written anywhere), then multiplied into M rows of x:
//   acc[i][r] += w_r[c : c + 32] * x_i[c : c + 32]          y[i, row + r] = alpha sum(acc[i][r]) + beta y
//
// Nothing here may be an inline function shared with other files (they would be compiled with this ISA's
// instructions and might be the copy the linker keeps): everything is in an anonymous namespace, and only
// intrinsics are called.
#pragma once

#include <cstdint>

#include "backends/cpu/skinny_matmul.h"

namespace lora::cpu {
namespace {

constexpr int kStep = 32;  // columns per step: one Q8_0 / Q4_0 block, half an nf4 block

// ---- Decoders: the 32 weights of a row at columns [c, c + 32) into w[32 / W], in the order the x operand
// is laid out in (natural order, except nf4: see skinny_matmul.cpp, which reorders x for it). `row` points
// at the row's first byte (row_bytes() apart), `e0` is the index of its first element in W flattened; c is
// a multiple of 32, so block indices are shifts (no division in the inner loop).

template <class V>
struct DecodeF32 {
  static int64_t row_bytes(int64_t cols) { return 4 * cols; }
  static void step(const QuantizedView&, const uint8_t* row, int64_t, int64_t c, typename V::reg* w) {
    const float* p = reinterpret_cast<const float*>(row) + c;
    for (int j = 0; j < kStep / V::W; ++j) w[j] = V::load(p + j * V::W);
  }
  static float at(const uint8_t* row, int64_t c) { return reinterpret_cast<const float*>(row)[c]; }
};

template <class V>
struct DecodeBF16 {
  static int64_t row_bytes(int64_t cols) { return 2 * cols; }
  static void step(const QuantizedView&, const uint8_t* row, int64_t, int64_t c, typename V::reg* w) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + c;
    for (int j = 0; j < kStep / V::W; ++j) w[j] = V::load_bf16(p + j * V::W);
  }
  static float at(const uint8_t* row, int64_t c) { return V::bf16_scalar(reinterpret_cast<const uint16_t*>(row)[c]); }
};

// w = q d
template <class V>
struct DecodeQ8_0 {
  static int64_t row_bytes(int64_t cols) { return (cols >> 5) * int64_t(sizeof(BlockQ8_0)); }
  static void step(const QuantizedView&, const uint8_t* row, int64_t, int64_t c, typename V::reg* w) {
    const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[uint64_t(c) >> 5];
    const typename V::reg d = V::half_broadcast(&b.d);
    for (int j = 0; j < kStep / V::W; ++j) w[j] = V::mul(V::load_i8(b.qs + j * V::W), d);
  }
  static float at(const uint8_t*, int64_t) { return 0.0f; }  // rows are whole blocks
};

// w = (q - 8) d = q d - 8 d; the low nibbles are columns 0-15, the high ones 16-31.
template <class V>
struct DecodeQ4_0 {
  static int64_t row_bytes(int64_t cols) { return (cols >> 5) * int64_t(sizeof(BlockQ4_0)); }
  static void step(const QuantizedView&, const uint8_t* row, int64_t, int64_t c, typename V::reg* w) {
    const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(row)[uint64_t(c) >> 5];
    const typename V::reg vd = V::half_broadcast(&b.d), offset = V::mul(vd, V::set1(-8.0f));  // -8 d is exact
    constexpr int half = kStep / V::W / 2;  // registers per 16 columns
    for (int j = 0; j < half; ++j) {
      w[j] = V::fma(V::load_u4_low(b.qs + j * V::W), vd, offset);
      w[j + half] = V::fma(V::load_u4_high(b.qs + j * V::W), vd, offset);
    }
  }
  static float at(const uint8_t*, int64_t) { return 0.0f; }
};

// w = code[q] absmax_block. Element e of the row is in byte e / 2 (low nibble when e is even), so the low
// nibbles of the step's 16 bytes are its even columns and the high ones its odd columns: x is reordered to
// match (evens, then odds, per 32 columns) before the tile runs. Needs cols % 32 == 0 (a step never
// straddles a block of 64 and rows start on a byte).
template <class V>
struct DecodeNF4 {
  static int64_t row_bytes(int64_t cols) { return cols >> 1; }
  static void step(const QuantizedView& v, const uint8_t* row, int64_t e0, int64_t c, typename V::reg* w) {
    static_assert(kNf4Block == 64, "the shift below divides by 64");
    const uint64_t block = uint64_t(e0 + c) >> 6;
    const float absmax = v.absmax_codes ? v.absmax_mean + static_cast<float>(v.absmax_codes[block]) *
                                                              v.absmax_scale[block / kNf4AbsmaxBlock]
                                        : v.scale[block];
    const uint8_t* bytes = row + (uint64_t(c) >> 1);
    const typename V::reg a = V::set1(absmax);
    constexpr int half = kStep / V::W / 2;
    for (int j = 0; j < half; ++j) {
      w[j] = V::mul(V::nf4_low(bytes + j * V::W), a);
      w[j + half] = V::mul(V::nf4_high(bytes + j * V::W), a);
    }
  }
  static float at(const uint8_t*, int64_t) { return 0.0f; }
};

// ---- The tile: M rows of x against R rows of W.
template <class V, class D, int M, int R>
void tile(const SkinnyProduct& p, int64_t i0, int64_t row0) {
  using reg = typename V::reg;
  reg acc[M][R];
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < R; ++r) acc[i][r] = V::zero();
  }
  const int64_t k = p.w.cols, full = k / kStep * kStep, row_bytes = D::row_bytes(k);
  const float* x = p.x + i0 * p.ldx;
  const uint8_t* rows = p.w.data + row0 * row_bytes;
  const int64_t e0 = row0 * k;
  // The tile reads R rows at once. Short rows (a q8_0 row of GPT-2 is 816 bytes) make more streams than the
  // hardware prefetchers follow well, so each step also prefetches its share of the next tile's bytes, which
  // lie right after this tile's (a prefetch past the weight's end is harmless: it never faults). Long rows
  // the hardware follows by itself, and the prefetches only cost: measured on GPT-2 small's and SmolLM2's
  // shapes (2 cores, AVX-512, tg64), f32 rows of 3 KiB / 2.3 KiB decoded 10-12% faster without them, while
  // q8_0, q4_0, nf4 and bf16 rows (up to 1.5 KiB) lost 10-30% without them.
  constexpr int64_t kPrefetchBelowRowBytes = 2048;
  const uintptr_t next = reinterpret_cast<uintptr_t>(rows) + uintptr_t(R * row_bytes);  // an address, not a pointer
  const int64_t share = full > 0 && row_bytes < kPrefetchBelowRowBytes ? (R * row_bytes * kStep + k - 1) / k : 0;
  for (int64_t c = 0; c < full; c += kStep) {
    for (int64_t off = 0; off < share; off += 64) V::prefetch(next + uintptr_t((c / kStep) * share + off));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      reg w[kStep / V::W];
      D::step(p.w, rows + r * row_bytes, e0 + r * k, c, w);
#pragma GCC unroll 4
      for (int j = 0; j < kStep / V::W; ++j) {
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[i][r] = V::fma(w[j], V::load(x + i * p.ldx + c + j * V::W), acc[i][r]);
      }
    }
  }
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < R; ++r) {
      float s = V::hsum(acc[i][r]);
      for (int64_t c = full; c < k; ++c) s += D::at(rows + r * row_bytes, c) * x[i * p.ldx + c];  // f32, bf16 only
      float& y = p.y[(i0 + i) * p.ldy + row0 + r];
      y = p.beta == 0.0f ? p.alpha * s : p.alpha * s + p.beta * y;
    }
  }
}

// Rows of x in groups of up to 4; R(M) weight rows per tile keep M R accumulators within V::kAccumulators.
template <class V, int M>
constexpr int rows_per_tile() {
  constexpr int r = V::kAccumulators / M;
  return r > 8 ? 8 : (r < 1 ? 1 : r);
}

template <class V, class D, int M>
void rows_for_group(const SkinnyProduct& p, int64_t i0, int64_t r0, int64_t r1) {
  constexpr int R = rows_per_tile<V, M>();
  int64_t r = r0;
  for (; r + R <= r1; r += R) tile<V, D, M, R>(p, i0, r);
  for (; r < r1; ++r) tile<V, D, M, 1>(p, i0, r);
}

template <class V, class D>
void rows_with(const SkinnyProduct& p, int64_t r0, int64_t r1) {
  // Weight rows in chunks small enough to stay in L1/L2 while every group of x rows passes over them.
  constexpr int64_t kChunk = 16;
  for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < r1 ? c0 + kChunk : r1;
    for (int64_t i0 = 0; i0 < p.m; i0 += 4) {
      switch (p.m - i0 >= 4 ? 4 : p.m - i0) {
        case 1:
          rows_for_group<V, D, 1>(p, i0, c0, c1);
          break;
        case 2:
          rows_for_group<V, D, 2>(p, i0, c0, c1);
          break;
        case 3:
          rows_for_group<V, D, 3>(p, i0, c0, c1);
          break;
        default:
          rows_for_group<V, D, 4>(p, i0, c0, c1);
          break;
      }
    }
  }
}

// Dispatches on the weight's format. nf4 arrives here only with cols % 32 == 0 and x reordered.
template <class V>
void skinny_rows(const SkinnyProduct& p, int64_t r0, int64_t r1) {
  switch (p.w.format) {
    case QuantFormat::F32:
      rows_with<V, DecodeF32<V>>(p, r0, r1);
      return;
    case QuantFormat::BF16:
      rows_with<V, DecodeBF16<V>>(p, r0, r1);
      return;
    case QuantFormat::Q8_0:
      rows_with<V, DecodeQ8_0<V>>(p, r0, r1);
      return;
    case QuantFormat::Q4_0:
      rows_with<V, DecodeQ4_0<V>>(p, r0, r1);
      return;
    case QuantFormat::NF4:
      rows_with<V, DecodeNF4<V>>(p, r0, r1);
      return;
  }
}

}  // namespace
}  // namespace lora::cpu
