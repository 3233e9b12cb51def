// Skinny matrix products on the CPU: y [m, n] = alpha x [m, k] W [n, k]^T + beta y for m <= 16 rows of x
// (decoding: batch 1 to 16), W in any base format (f32, bf16, Q8_0, Q4_0, nf4). Each weight byte is read
// once from memory and dequantized in registers; the output rows are split across threads; the vector code
// is picked at run time from the CPU's features (AVX-512, AVX2, or portable C++), detected once.
//
// Why not BLAS: at m = 1 a gemm is a stream over W, and its speed is the memory bandwidth. OpenBLAS's gemv
// and small-m sgemm reach well below it, and BLAS cannot read quantized weights at all. Above a crossover
// (measured by bench_matmul --skinny, see docs/performance.md) BLAS on f32 wins again: the CPU backend's
// gemm takes this path only at or below kSkinnyMaxRows.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/quantized.h"

namespace lora::cpu {

inline constexpr int64_t kSkinnyMaxRows = 16;
// Up to this many rows of x, the CPU backend's f32 gemm (x W^T) and the quantized linear layers' forward
// take the skinny product; above it, OpenBLAS (on dequantized tiles for quantized weights). Measured by
// `bench_matmul --skinny` (docs/performance.md).
inline constexpr int64_t kSkinnyCrossover = 16;

enum class Isa : uint8_t { Portable, AVX2, AVX512 };
std::string_view isa_name(Isa isa);
// The best vector code this CPU runs (AVX-512 needs F, BW, VL, DQ; AVX2 needs FMA and F16C), detected on the
// first call; LORA_ISA=portable|avx2|avx512 caps it (for comparisons; a level the CPU lacks is refused).
Isa detected_isa();
bool isa_supported(Isa isa);

// The arguments of one product. x and y are f32, row-major, with leading dimensions ldx >= k, ldy >= n.
// w: host_view of a weight [n, k] in any format (F32: data holds floats).
struct SkinnyProduct {
  const float* x = nullptr;
  int64_t m = 0, ldx = 0;
  QuantizedView w{};
  float alpha = 1.0f, beta = 0.0f;  // beta == 0: y is written, never read (it may hold NaN)
  float* y = nullptr;
  int64_t ldy = 0;
};

// Runs p with detected_isa(), threaded over W's rows; m must be in [1, kSkinnyMaxRows].
void skinny_matmul(const SkinnyProduct& p);
// The same with a given ISA (tests compare every supported one with the portable code).
void skinny_matmul(const SkinnyProduct& p, Isa isa);

// Rows [r0, r1) of W with each ISA's code, on the calling thread (what skinny_matmul runs per thread).
namespace detail {
void skinny_rows_portable(const SkinnyProduct& p, int64_t r0, int64_t r1);
void skinny_rows_avx2(const SkinnyProduct& p, int64_t r0, int64_t r1);
void skinny_rows_avx512(const SkinnyProduct& p, int64_t r0, int64_t r1);
}  // namespace detail

}  // namespace lora::cpu
