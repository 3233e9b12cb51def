// CPU kernel of the grouped LoRA branch (backends/kernels/lora_gather.h): one token row per iteration,
// each row reading its own adapter's A and B. The piece table is checked against the packed buffers before
// any row runs, so the loop itself reads no memory it was not given.
#include <omp.h>

#include <array>

#include "backends/cpu/dispatch.h"
#include "backends/kernels/lora_gather.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelWork = 1 << 15;  // multiply-adds below which one thread runs the loop

struct Piece {
  int64_t a_row, rank, b_offset, out_offset, out_size;
};

// Reads the piece table and checks every piece against the packed buffers and the output's width.
std::vector<Piece> checked_pieces(const char* k, const Tensor& pieces, const Tensor& a_pack, const Tensor& b_pack,
                                  int64_t out) {
  LORA_CHECK(pieces.dtype() == DType::I64 && pieces.rank() == 2 && pieces.size(1) == 5,
             "{}: pieces must be int64 [P, 5], got {} {}", k, dtype_name(pieces.dtype()), pieces.shape().str());
  const int64_t* t = pieces.data<int64_t>();
  std::vector<Piece> out_pieces(static_cast<size_t>(pieces.size(0)));
  for (size_t p = 0; p < out_pieces.size(); ++p) {
    const Piece q{t[5 * p], t[5 * p + 1], t[5 * p + 2], t[5 * p + 3], t[5 * p + 4]};
    LORA_CHECK(
        q.rank > 0 && q.rank <= kernels::kLoraGatherMaxRank && q.a_row >= 0 && q.a_row <= a_pack.size(0) - q.rank,
        "{}: piece {} (A rows {} + {}) does not fit a_pack {} (rank at most {})", k, p, q.a_row, q.rank,
        a_pack.shape().str(), kernels::kLoraGatherMaxRank);
    LORA_CHECK(q.out_size > 0 && q.out_offset >= 0 && q.out_offset <= out - q.out_size,
               "{}: piece {} (outputs {} + {}) does not fit the layer's {} outputs", k, p, q.out_offset, q.out_size,
               out);
    LORA_CHECK(q.b_offset >= 0 && q.b_offset <= b_pack.numel() - q.out_size * q.rank,
               "{}: piece {} (B at {} of {} x {}) does not fit b_pack of {} elements", k, p, q.b_offset, q.out_size,
               q.rank, b_pack.numel());
    out_pieces[p] = q;
  }
  return out_pieces;
}

}  // namespace

void kernels::LoraGather::cpu(const Tensor& x, const Tensor& token_slot, const Tensor& slot_pieces,
                              const Tensor& pieces, const Tensor& scales, const Tensor& a_pack, const Tensor& b_pack,
                              Tensor& y) {
  LORA_CHECK(x.rank() == 2 && y.rank() == 2 && x.size(0) == y.size(0), "{}: x {} and y {} must be [N, in] and [N, out]",
             name, x.shape().str(), y.shape().str());
  const int64_t N = x.size(0), in = x.size(1), out = y.size(1);
  LORA_CHECK(x.dtype() == y.dtype() && a_pack.dtype() == x.dtype() && b_pack.dtype() == x.dtype(),
             "{}: x, y, a_pack and b_pack must share one dtype", name);
  LORA_CHECK(a_pack.rank() == 2 && a_pack.size(1) == in, "{}: a_pack {} must be [rows, {}]", name, a_pack.shape().str(),
             in);
  LORA_CHECK(token_slot.dtype() == DType::I32 && token_slot.numel() == N,
             "{}: token_slot must be int32 [{}], got {} {}", name, N, dtype_name(token_slot.dtype()),
             token_slot.shape().str());
  LORA_CHECK(slot_pieces.dtype() == DType::I64 && slot_pieces.rank() == 1 && slot_pieces.numel() >= 1,
             "{}: slot_pieces must be int64 [slots + 1]", name);
  const std::vector<Piece> table = checked_pieces(name, pieces, a_pack, b_pack, out);
  const int64_t P = static_cast<int64_t>(table.size()), slots = slot_pieces.numel() - 1;
  LORA_CHECK(scales.dtype() == DType::F64 && scales.numel() == P, "{}: scales must be float64 [{}]", name, P);
  const int64_t* first = slot_pieces.data<int64_t>();  // [slots + 1]
  for (int64_t s = 0; s < slots; ++s) {
    LORA_CHECK(first[s] >= 0 && first[s] <= first[s + 1] && first[s + 1] <= P,
               "{}: slot_pieces is not a non-decreasing list of offsets into {} pieces", name, P);
  }
  const int32_t* slot = token_slot.data<int32_t>();  // [N]
  int64_t work = 0;
  for (int64_t i = 0; i < N; ++i) {
    LORA_CHECK(slot[i] >= -1 && slot[i] < slots, "{}: row {} names adapter slot {}, outside [-1, {})", name, i, slot[i],
               slots);
    if (slot[i] >= 0) {
      for (int64_t p = first[slot[i]]; p < first[slot[i] + 1]; ++p) work += table[p].rank * (in + table[p].out_size);
    }
  }
  if (work == 0) return;
  const double* scale = scales.data<double>();

  dispatch_floating(x.dtype(), name, [&]<typename T>() {
    const T* xp = x.data<T>();       // [N, in]
    const T* ap = a_pack.data<T>();  // [sum r, in]
    const T* bp = b_pack.data<T>();  // [sum out_size r]
    T* yp = y.data<T>();             // [N, out]
#pragma omp parallel for schedule(dynamic) if (work >= kMinParallelWork)
    for (int64_t i = 0; i < N; ++i) {
      if (slot[i] < 0) continue;
      const T* xi = xp + i * in;
      T* yi = yp + i * out;
      std::array<T, kernels::kLoraGatherMaxRank> z;  // A_p x_i
      for (int64_t p = first[slot[i]]; p < first[slot[i] + 1]; ++p) {
        const Piece& q = table[static_cast<size_t>(p)];
        // shrink: z = A_p x_i   [r]
        for (int64_t j = 0; j < q.rank; ++j) {
          const T* a = ap + (q.a_row + j) * in;
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t c = 0; c < in; ++c) acc += a[c] * xi[c];
          z[static_cast<size_t>(j)] = acc * static_cast<T>(scale[p]);
        }
        // expand: y_i[slice] += B_p z   (B_p [out_size, r], the scale already in z)
        const T* b = bp + q.b_offset;
        for (int64_t o = 0; o < q.out_size; ++o) {
          const T* bo = b + o * q.rank;
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < q.rank; ++j) acc += bo[j] * z[static_cast<size_t>(j)];
          yi[q.out_offset + o] += acc;
        }
      }
    }
  });
}

}  // namespace lora
