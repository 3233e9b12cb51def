// CUDA kernel of decode attention over a pool of sequences (backends/kernels/decode_attention.h): a warp per
// (row, head); the lanes split the head dimension, walk the row's positions once with an online softmax
// (running max m and sum l, the output rescaled by exp(m_old - m_new) when the max grows).
#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/kernels/decode_attention.h"

namespace lora::cuda {
namespace {

constexpr int kMaxPerLane = 8;  // head dimensions up to 256
constexpr int kWarpsPerBlock = 4;

__global__ void decode_attention_kernel(const float* q, const float* k_pool, const float* v_pool, const int64_t* rows,
                                        float scale, float* out, int64_t BH, int64_t H, int64_t H_kv, int64_t capacity,
                                        int64_t D) {
  const int lane = threadIdx.x & 31;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (bh >= BH) return;
  const int64_t b = bh / H, h = bh % H, G = H / H_kv, L = rows[2 * b + 1] + 1;
  const int64_t seq = (rows[2 * b] * H_kv + h / G) * capacity * D;
  float qd[kMaxPerLane], acc[kMaxPerLane];
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    qd[i] = d < D ? q[bh * D + d] : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j < L; ++j) {
    const float* kj = k_pool + seq + j * D;
    float dot = 0.f;
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < D) dot += qd[i] * kj[d];
    }
    const float s = warp_sum(dot) * scale;
    const float m_new = fmaxf(m, s), correction = expf(m - m_new), p = expf(s - m_new);
    l = l * correction + p;
    const float* vj = v_pool + seq + j * D;
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < D) acc[i] = acc[i] * correction + p * vj[d];
    }
    m = m_new;
  }
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < D) out[bh * D + d] = acc[i] / l;
  }
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::DecodeAttention::cuda(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool, const Tensor& rows,
                                    double scale, Tensor& out) {
  using namespace lora::cuda;
  const char* k = name;
  activate(k, {&q, &k_pool, &v_pool, &rows, &out});
  LORA_CHECK(q.rank() == 3 && k_pool.rank() == 4 && v_pool.shape() == k_pool.shape() && out.shape() == q.shape() &&
                 q.size(2) == k_pool.size(3) && k_pool.size(1) > 0 && q.size(1) % k_pool.size(1) == 0,
             "{}: q {} and out {} must be [B, H, D], k_pool and v_pool {} [S, H_kv, capacity, D]", k, q.shape().str(),
             out.shape().str(), k_pool.shape().str());
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  LORA_CHECK(D <= 32 * kMaxPerLane, "{}: head dimension {} is over {}", k, D, 32 * kMaxPerLane);
  LORA_CHECK(rows.dtype() == DType::I64 && rows.shape() == (Shape{B, 2}), "{}: rows must be int64 [{}, 2]", k, B);
  const float *pq = f32(k, q, "q"), *pk = f32(k, k_pool, "k_pool"), *pv = f32(k, v_pool, "v_pool");
  float* po = f32(k, out, "out");
  if (B * H == 0) return;
  // Rows were checked against the pool on the host when they were set (nn/attention.cpp).
  const unsigned blocks = static_cast<unsigned>((B * H + kWarpsPerBlock - 1) / kWarpsPerBlock);
  decode_attention_kernel<<<blocks, 32 * kWarpsPerBlock>>>(pq, pk, pv, static_cast<const int64_t*>(rows.raw_data()),
                                                           static_cast<float>(scale), po, B * H, H, k_pool.size(1),
                                                           k_pool.size(2), D);
  LORA_CUDA_CHECK_LAUNCH(k);
}

}  // namespace lora
