// CUDA kernel of the grouped LoRA branch (backends/kernels/lora_gather.h): a block per token row; for each
// piece of the row's adapter, the warps compute z = scale * A_p x_i (a warp per rank row, into shared
// memory), then the threads compute y_i[slice] += B_p z (a thread per output). Rows of one block never
// share an output, so there are no atomics. The piece table and the row slots are checked on the host when
// they are built (serve/multi_lora.cpp); here only shapes and dtypes are checked.
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/kernels/lora_gather.h"

namespace lora::cuda {
namespace {

__global__ void lora_gather_kernel(const float* x, const int32_t* token_slot, const int64_t* slot_pieces,
                                   const int64_t* pieces, const double* scales, const float* a_pack,
                                   const float* b_pack, float* y, int64_t rows, int64_t in, int64_t out) {
  __shared__ float z[kernels::kLoraGatherMaxRank];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int32_t s = token_slot[i];  // the same for the whole block
    if (s < 0) continue;
    const float* xi = x + i * in;
    float* yi = y + i * out;
    for (int64_t p = slot_pieces[s]; p < slot_pieces[s + 1]; ++p) {
      const int64_t* q = pieces + 5 * p;  // (a_row, rank, b_offset, out_offset, out_size)
      const int64_t a_row = q[0], r = q[1], out_offset = q[3], out_size = q[4];
      const float* b = b_pack + q[2];  // [out_size, r]
      const float scale = static_cast<float>(scales[p]);
      // shrink: z[j] = scale * A_p[j] . x_i
      for (int64_t j = warp; j < r; j += warps) {
        const float* aj = a_pack + (a_row + j) * in;
        float acc = 0.f;
        for (int64_t c = lane; c < in; c += 32) acc += aj[c] * xi[c];
        acc = warp_sum(acc);
        if (lane == 0) z[j] = acc * scale;
      }
      __syncthreads();
      // expand: y_i[out_offset + o] += B_p[o] . z
      for (int64_t o = threadIdx.x; o < out_size; o += blockDim.x) {
        const float* bo = b + o * r;
        float acc = 0.f;
        for (int64_t j = 0; j < r; ++j) acc += bo[j] * z[j];
        yi[out_offset + o] += acc;
      }
      __syncthreads();  // z is rewritten by the next piece
    }
  }
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::LoraGather::cuda(const Tensor& x, const Tensor& token_slot, const Tensor& slot_pieces,
                               const Tensor& pieces, const Tensor& scales, const Tensor& a_pack, const Tensor& b_pack,
                               Tensor& y) {
  using namespace lora::cuda;
  const char* k = name;
  activate(k, {&x, &token_slot, &slot_pieces, &pieces, &scales, &a_pack, &b_pack, &y});
  LORA_CHECK(x.rank() == 2 && y.rank() == 2 && x.size(0) == y.size(0), "{}: x {} and y {} must be [N, in] and [N, out]",
             k, x.shape().str(), y.shape().str());
  const int64_t N = x.size(0), in = x.size(1), out = y.size(1);
  LORA_CHECK(a_pack.rank() == 2 && a_pack.size(1) == in, "{}: a_pack {} must be [rows, {}]", k, a_pack.shape().str(),
             in);
  LORA_CHECK(token_slot.dtype() == DType::I32 && token_slot.numel() == N, "{}: token_slot must be int32 [{}]", k, N);
  LORA_CHECK(slot_pieces.dtype() == DType::I64 && pieces.dtype() == DType::I64 && pieces.rank() == 2 &&
                 pieces.size(1) == 5 && scales.dtype() == DType::F64 && scales.numel() == pieces.size(0),
             "{}: slot_pieces, pieces [P, 5] must be int64 and scales [P] float64", k);
  const float *px = f32(k, x, "x"), *pa = f32(k, a_pack, "a_pack"), *pb = f32(k, b_pack, "b_pack");
  float* py = f32(k, y, "y");
  if (N == 0 || pieces.size(0) == 0) return;
  lora_gather_kernel<<<grid_for(N, 1), kThreads>>>(
      px, static_cast<const int32_t*>(token_slot.raw_data()), static_cast<const int64_t*>(slot_pieces.raw_data()),
      static_cast<const int64_t*>(pieces.raw_data()), static_cast<const double*>(scales.raw_data()), pa, pb, py, N, in,
      out);
  LORA_CUDA_CHECK_LAUNCH(k);
}

}  // namespace lora
