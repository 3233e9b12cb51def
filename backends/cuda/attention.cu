// CUDA kernels of causal scaled-dot-product attention (backends/kernels/attention.h), on cuBLAS: per
// (batch, head), scores S = scale q k^T go to a [chunk, T, T] workspace, a row kernel applies the causal
// softmax in place (saving lse), and P v gives the output. Backward recomputes S from q, k and lse, and forms
// dP = dO v^T, dS = P * (dP - rowsum(dO * O)), dV = P^T dO, dQ = scale dS k and dK = scale dS^T q. Chunks of
// (batch, head) pairs bound the workspace.
#include <algorithm>

#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/kernels/attention.h"

namespace lora::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// attention rows (scores [rows, T], row r is query t = r % T, keys j <= t are visible)

template <bool kBlock>
__global__ void attention_softmax_kernel(float* scores, float* lse, int64_t rows, int64_t T) {
  __shared__ float smem[64];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const int64_t t = row % T;
  float* sr = scores + row * T;
  MaxSum ms = maxsum_empty();
  for (int64_t j = Map::lane(); j <= t; j += Map::width()) maxsum_add(ms, sr[j]);
  ms = Map::maxsum(ms, smem);
  const float inv = 1.f / ms.s;
  for (int64_t j = Map::lane(); j < T; j += Map::width()) sr[j] = j <= t ? expf(sr[j] - ms.m) * inv : 0.f;
  if (Map::lane() == 0) lse[row] = ms.m + logf(ms.s);
}

template <bool kBlock>
__global__ void attention_backward_ds_kernel(float* scores, float* dp, const float* grad_out, const float* out,
                                             const float* lse, int64_t rows, int64_t T, int64_t D) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const int64_t t = row % T;
  const float* go = grad_out + row * D;
  const float* o = out + row * D;
  float di = 0.f;
  for (int64_t d = Map::lane(); d < D; d += Map::width()) di += go[d] * o[d];
  di = Map::sum(di, smem);
  const float l = lse[row];
  float* sr = scores + row * T;
  float* dr = dp + row * T;
  for (int64_t j = Map::lane(); j < T; j += Map::width()) {
    if (j <= t) {
      const float p = expf(sr[j] - l);
      sr[j] = p;
      dr[j] = p * (dr[j] - di);
    } else {
      sr[j] = 0.f;
      dr[j] = 0.f;
    }
  }
}


constexpr int64_t kAttentionWorkspaceBytes = int64_t(1) << 30;  // per call, for the T x T buffers

void check_attention_shapes(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v) {
  LORA_CHECK(q.rank() == 4, "cuda {}: q has shape {}, expected [B, H, T, D]", kernel, q.shape().str());
  check_same_shape(kernel, q, "q", k, "k");
  check_same_shape(kernel, q, "q", v, "v");
}

// How many (batch, head) pairs fit the workspace when each needs `buffers` T x T float buffers.
int64_t attention_chunk(int64_t batch_heads, int64_t T, int buffers) {
  const int64_t per_pair = std::max<int64_t>(1, T * T * 4 * buffers);
  return std::clamp<int64_t>(kAttentionWorkspaceBytes / per_pair, 1, batch_heads);
}

// ---------------------------------------------------------------------------------------------------
// Launchers

void attention_softmax_f32(float* scores, float* lse, int64_t rows, int64_t T) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, T);
  if (l.block) attention_softmax_kernel<true><<<l.grid, l.threads>>>(scores, lse, rows, T);
  else attention_softmax_kernel<false><<<l.grid, l.threads>>>(scores, lse, rows, T);
  LORA_CUDA_CHECK_LAUNCH("attention_softmax");
}

void attention_backward_ds_f32(float* scores, float* dp, const float* grad_out, const float* out, const float* lse,
                               int64_t rows, int64_t T, int64_t D) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, T);
  if (l.block) attention_backward_ds_kernel<true><<<l.grid, l.threads>>>(scores, dp, grad_out, out, lse, rows, T, D);
  else attention_backward_ds_kernel<false><<<l.grid, l.threads>>>(scores, dp, grad_out, out, lse, rows, T, D);
  LORA_CUDA_CHECK_LAUNCH("attention_backward_ds");
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::AttentionForward::cuda(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                                    Tensor& lse) {
  using namespace lora::cuda;
  const int device = activate(name, {&q, &k, &v, &out, &lse});
  check_attention_shapes(name, q, k, v);
  check_same_shape(name, q, "q", out, "out");
  const int64_t BH = q.size(0) * q.size(1), T = q.size(2), D = q.size(3);
  check_numel(name, lse, "lse", BH * T);
  const float *pq = f32(name, q, "q"), *pk = f32(name, k, "k"), *pv = f32(name, v, "v");
  float* po = f32(name, out, "out");
  float* plse = f32(name, lse, "lse");
  if (BH == 0 || T == 0) return;
  const int64_t chunk = attention_chunk(BH, T, 1);
  Tensor scores = workspace({chunk * T * T}, DType::F32, device);  // [chunk, T, T]
  float* ps = scores.data<float>();
  for (int64_t bh = 0; bh < BH; bh += chunk) {
    const int64_t nb = std::min(chunk, BH - bh);
    const int64_t off = bh * T * D;
    GemmArgs qk;  // S = scale q k^T: [T, D] x [T, D]^T
    qk.batch = nb, qk.m = T, qk.n = T, qk.k = D, qk.trans_b = true;
    qk.stride_a = T * D, qk.stride_b = T * D, qk.stride_c = T * T, qk.alpha = static_cast<float>(scale);
    gemm_f32(device, pq + off, pk + off, ps, qk);
    attention_softmax_f32(ps, plse + bh * T, nb * T, T);
    GemmArgs pvg;  // out = P v: [T, T] x [T, D]
    pvg.batch = nb, pvg.m = T, pvg.n = D, pvg.k = T;
    pvg.stride_a = T * T, pvg.stride_b = T * D, pvg.stride_c = T * D;
    gemm_f32(device, ps, pv + off, po + off, pvg);
  }
}

void kernels::AttentionBackward::cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                     const Tensor& lse, const Tensor& grad_out, double scale, Tensor& grad_q,
                                     Tensor& grad_k, Tensor& grad_v) {
  using namespace lora::cuda;
  const int device = activate(name, {&q, &k, &v, &out, &lse, &grad_out, &grad_q, &grad_k, &grad_v});
  check_attention_shapes(name, q, k, v);
  check_same_shape(name, q, "q", out, "out");
  check_same_shape(name, q, "q", grad_out, "grad_out");
  check_same_shape(name, q, "q", grad_q, "grad_q");
  check_same_shape(name, q, "q", grad_k, "grad_k");
  check_same_shape(name, q, "q", grad_v, "grad_v");
  const int64_t BH = q.size(0) * q.size(1), T = q.size(2), D = q.size(3);
  check_numel(name, lse, "lse", BH * T);
  const float *pq = f32(name, q, "q"), *pk = f32(name, k, "k"), *pv = f32(name, v, "v");
  const float *po = f32(name, out, "out"), *plse = f32(name, lse, "lse"), *pgo = f32(name, grad_out, "grad_out");
  float *pgq = f32(name, grad_q, "grad_q"), *pgk = f32(name, grad_k, "grad_k"), *pgv = f32(name, grad_v, "grad_v");
  if (BH == 0 || T == 0) return;
  const int64_t chunk = attention_chunk(BH, T, 2);
  Tensor buffers = workspace({2 * chunk * T * T}, DType::F32, device);  // S then P, and dP then dS: [chunk, T, T]
  float* ps = buffers.data<float>();
  float* pdp = ps + chunk * T * T;
  const float fscale = static_cast<float>(scale);
  for (int64_t bh = 0; bh < BH; bh += chunk) {
    const int64_t nb = std::min(chunk, BH - bh);
    const int64_t off = bh * T * D;
    auto args = [&](int64_t m, int64_t n, int64_t kk, bool ta, bool tb, int64_t sa, int64_t sb, int64_t sc,
                    float alpha) {
      GemmArgs g;
      g.batch = nb, g.m = m, g.n = n, g.k = kk, g.trans_a = ta, g.trans_b = tb;
      g.stride_a = sa, g.stride_b = sb, g.stride_c = sc, g.alpha = alpha;
      return g;
    };
    const int64_t TD = T * D, TT = T * T;
    gemm_f32(device, pq + off, pk + off, ps, args(T, T, D, false, true, TD, TD, TT, fscale));   // S = scale q k^T
    gemm_f32(device, pgo + off, pv + off, pdp, args(T, T, D, false, true, TD, TD, TT, 1.f));    // dP = dO v^T
    attention_backward_ds_f32(ps, pdp, pgo + off, po + off, plse + bh * T, nb * T, T, D);      // P, dS
    gemm_f32(device, ps, pgo + off, pgv + off, args(T, D, T, true, false, TT, TD, TD, 1.f));    // dV = P^T dO
    gemm_f32(device, pdp, pk + off, pgq + off, args(T, D, T, false, false, TT, TD, TD, fscale));  // dQ = s dS k
    gemm_f32(device, pdp, pq + off, pgk + off, args(T, D, T, true, false, TT, TD, TD, fscale));   // dK = s dS^T q
  }
}

}  // namespace lora
