// CUDA kernels of causal scaled-dot-product attention (backends/kernels/attention.h), grouped-query attention
// included, on cuBLAS: per (batch, head), scores S = scale q k^T go to a workspace, a row kernel applies the
// causal softmax in place (saving lse), and P v gives the output. Backward recomputes S from q, k and lse,
// and forms dP = dO v^T, dS = P * (dP - rowsum(dO * O)), dV = P^T dO, dQ = scale dS k and dK = scale dS^T q.
// Chunks of kv heads bound the workspace. With packed segments (key_start), the row kernels also mask the
// keys before the row's segment (the products still cover the whole T x T).
#include <algorithm>

#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/kernels/attention.h"

namespace lora::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// attention rows (scores [rows, T], row r is query t = r % T, keys lo <= j <= t are visible)

// Which batch row a score row belongs to, and the first key it sees: rows of one launch are (kv head,
// group member, t) for kv heads kv0, kv0 + 1, ... (GT rows each), and kv head m is batch row m / Hkv.
struct KeyStarts {
  const int32_t* key_start;  // [B, T], or null: every row from key 0
  int64_t kv0, GT, Hkv;
  __device__ int64_t first(int64_t row, int64_t t, int64_t T) const {
    return key_start ? key_start[((kv0 + row / GT) / Hkv) * T + t] : 0;
  }
};

template <bool kBlock>
__global__ void attention_softmax_kernel(float* scores, float* lse, int64_t rows, int64_t T, KeyStarts ks) {
  __shared__ float smem[64];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const int64_t t = row % T, lo = ks.first(row, t, T);
  float* sr = scores + row * T;
  MaxSum ms = maxsum_empty();
  for (int64_t j = lo + Map::lane(); j <= t; j += Map::width()) maxsum_add(ms, sr[j]);
  ms = Map::maxsum(ms, smem);
  const float inv = 1.f / ms.s;
  for (int64_t j = Map::lane(); j < T; j += Map::width()) sr[j] = j >= lo && j <= t ? expf(sr[j] - ms.m) * inv : 0.f;
  if (Map::lane() == 0) lse[row] = ms.m + logf(ms.s);
}

template <bool kBlock>
__global__ void attention_backward_ds_kernel(float* scores, float* dp, const float* grad_out, const float* out,
                                             const float* lse, int64_t rows, int64_t T, int64_t D, KeyStarts ks) {
  __shared__ float smem[32];
  using Map = RowMap<kBlock>;
  const int64_t row = Map::row();
  if (row >= rows) return;
  const int64_t t = row % T, lo = ks.first(row, t, T);
  const float* go = grad_out + row * D;
  const float* o = out + row * D;
  float di = 0.f;
  for (int64_t d = Map::lane(); d < D; d += Map::width()) di += go[d] * o[d];
  di = Map::sum(di, smem);
  const float l = lse[row];
  float* sr = scores + row * T;
  float* dr = dp + row * T;
  for (int64_t j = Map::lane(); j < T; j += Map::width()) {
    if (j >= lo && j <= t) {
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

// q [B, H, T, D], k and v [B, Hkv, T, D] with H % Hkv == 0.
struct AttentionShape {
  int64_t kv_heads;  // B * Hkv: the batch of every gemm below
  int64_t group;     // G = H / Hkv query heads per kv head
  int64_t T, D;
};
AttentionShape check_attention_shapes(const char* kernel, const Tensor& q, const Tensor& k, const Tensor& v) {
  LORA_CHECK(q.rank() == 4 && k.rank() == 4, "cuda {}: q {} and k {} must be [B, H, T, D] and [B, Hkv, T, D]", kernel,
             q.shape().str(), k.shape().str());
  check_same_shape(kernel, k, "k", v, "v");
  const int64_t H = q.size(1), Hkv = k.size(1);
  LORA_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3) && Hkv > 0 && H % Hkv == 0,
             "cuda {}: k {} does not fit q {} (expected [B, Hkv, T, D] with H % Hkv == 0)", kernel, k.shape().str(),
             q.shape().str());
  return {q.size(0) * Hkv, H / Hkv, q.size(2), q.size(3)};
}

// key_start's device pointer (checked to be int32 [B, T] on q's device), or null when it is undefined.
const int32_t* key_start_ptr(const char* kernel, const Tensor& key_start, const Tensor& q) {
  if (!key_start.defined()) return nullptr;
  LORA_CHECK(key_start.dtype() == DType::I32 && key_start.shape() == (Shape{q.size(0), q.size(2)}) &&
                 key_start.device() == q.device(),
             "cuda {}: key_start must be int32 [B, T] for q {} on its device, got {} {}", kernel, q.shape().str(),
             dtype_name(key_start.dtype()), key_start.shape().str());
  return key_start.data<int32_t>();
}

// How many kv heads fit the workspace when each needs `buffers` T x T float buffers.
int64_t attention_chunk(int64_t kv_heads, int64_t T, int64_t buffers) {
  const int64_t per_head = std::max<int64_t>(1, T * T * 4 * buffers);
  return std::clamp<int64_t>(kAttentionWorkspaceBytes / per_head, 1, kv_heads);
}

// Batched gemm arguments: `batch` products of [m, k] x [k, n] with the given strides and alpha.
GemmArgs gemm_args(int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b, int64_t stride_a,
                   int64_t stride_b, int64_t stride_c, float alpha) {
  GemmArgs g;
  g.batch = batch, g.m = m, g.n = n, g.k = k, g.trans_a = trans_a, g.trans_b = trans_b;
  g.stride_a = stride_a, g.stride_b = stride_b, g.stride_c = stride_c, g.alpha = alpha;
  return g;
}

// ---------------------------------------------------------------------------------------------------
// Launchers

void attention_softmax_f32(float* scores, float* lse, int64_t rows, int64_t T, KeyStarts ks) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, T);
  if (l.block)
    attention_softmax_kernel<true><<<l.grid, l.threads>>>(scores, lse, rows, T, ks);
  else
    attention_softmax_kernel<false><<<l.grid, l.threads>>>(scores, lse, rows, T, ks);
  LORA_CUDA_CHECK_LAUNCH("attention_softmax");
}

void attention_backward_ds_f32(float* scores, float* dp, const float* grad_out, const float* out, const float* lse,
                               int64_t rows, int64_t T, int64_t D, KeyStarts ks) {
  if (rows <= 0) return;
  const RowLaunch l = row_launch(rows, T);
  if (l.block)
    attention_backward_ds_kernel<true><<<l.grid, l.threads>>>(scores, dp, grad_out, out, lse, rows, T, D, ks);
  else
    attention_backward_ds_kernel<false><<<l.grid, l.threads>>>(scores, dp, grad_out, out, lse, rows, T, D, ks);
  LORA_CUDA_CHECK_LAUNCH("attention_backward_ds");
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

// The G query heads that share a kv head are neighbours in q, so their rows form one [G T, D] matrix: every
// product below runs per kv head, batched over the B Hkv kv heads, with G T query rows. Sums over the group
// (grad_k, grad_v) are then the inner dimension of one gemm. With G = 1 this is plain multi-head attention.

void kernels::AttentionForward::cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start,
                                     double scale, Tensor& out, Tensor& lse) {
  using namespace lora::cuda;
  const int device = activate(name, {&q, &k, &v, &out, &lse});
  const auto [KV, G, T, D] = check_attention_shapes(name, q, k, v);
  check_same_shape(name, q, "q", out, "out");
  check_numel(name, lse, "lse", KV * G * T);
  const float *pq = f32(name, q, "q"), *pk = f32(name, k, "k"), *pv = f32(name, v, "v");
  float* po = f32(name, out, "out");
  float* plse = f32(name, lse, "lse");
  const int32_t* pks = key_start_ptr(name, key_start, q);
  const int64_t Hkv = k.size(1);
  if (KV == 0 || T == 0) return;
  const int64_t chunk = attention_chunk(KV, T, G);
  Tensor scores = workspace({chunk * G * T * T}, DType::F32, device);  // [chunk, G T, T]
  float* ps = scores.data<float>();
  const int64_t GT = G * T, TD = T * D;
  for (int64_t kv = 0; kv < KV; kv += chunk) {
    const int64_t nb = std::min(chunk, KV - kv);
    const int64_t q_off = kv * GT * D, kv_off = kv * TD;
    // S = scale q k^T: [G T, D] x [T, D]^T
    gemm_f32(device, pq + q_off, pk + kv_off, ps,
             gemm_args(nb, GT, T, D, false, true, GT * D, TD, GT * T, static_cast<float>(scale)));
    attention_softmax_f32(ps, plse + kv * GT, nb * GT, T, {pks, kv, GT, Hkv});  // row r is query t = r % T
    // out = P v: [G T, T] x [T, D]
    gemm_f32(device, ps, pv + kv_off, po + q_off, gemm_args(nb, GT, D, T, false, false, GT * T, TD, GT * D, 1.f));
  }
}

void kernels::AttentionBackward::cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start,
                                      const Tensor& out, const Tensor& lse, const Tensor& grad_out, double scale,
                                      Tensor& grad_q, Tensor& grad_k, Tensor& grad_v) {
  using namespace lora::cuda;
  const int device = activate(name, {&q, &k, &v, &out, &lse, &grad_out, &grad_q, &grad_k, &grad_v});
  const auto [KV, G, T, D] = check_attention_shapes(name, q, k, v);
  check_same_shape(name, q, "q", out, "out");
  check_same_shape(name, q, "q", grad_out, "grad_out");
  check_same_shape(name, q, "q", grad_q, "grad_q");
  check_same_shape(name, k, "k", grad_k, "grad_k");
  check_same_shape(name, k, "k", grad_v, "grad_v");
  check_numel(name, lse, "lse", KV * G * T);
  const float *pq = f32(name, q, "q"), *pk = f32(name, k, "k"), *pv = f32(name, v, "v");
  const float *po = f32(name, out, "out"), *plse = f32(name, lse, "lse"), *pgo = f32(name, grad_out, "grad_out");
  float *pgq = f32(name, grad_q, "grad_q"), *pgk = f32(name, grad_k, "grad_k"), *pgv = f32(name, grad_v, "grad_v");
  const int32_t* pks = key_start_ptr(name, key_start, q);
  const int64_t Hkv = k.size(1);
  if (KV == 0 || T == 0) return;
  const int64_t chunk = attention_chunk(KV, T, 2 * G);
  Tensor buffers = workspace({2 * chunk * G * T * T}, DType::F32, device);  // S then P, dP then dS: [chunk, G T, T]
  float* ps = buffers.data<float>();
  float* pdp = ps + chunk * G * T * T;
  const float fscale = static_cast<float>(scale);
  const int64_t GT = G * T, TD = T * D, GTT = G * T * T, GTD = G * T * D;
  for (int64_t kv = 0; kv < KV; kv += chunk) {
    const int64_t nb = std::min(chunk, KV - kv);
    const int64_t q_off = kv * GTD, kv_off = kv * TD;
    // S = scale q k^T [G T, T];  dP = dO v^T [G T, T]
    gemm_f32(device, pq + q_off, pk + kv_off, ps, gemm_args(nb, GT, T, D, false, true, GTD, TD, GTT, fscale));
    gemm_f32(device, pgo + q_off, pv + kv_off, pdp, gemm_args(nb, GT, T, D, false, true, GTD, TD, GTT, 1.f));
    attention_backward_ds_f32(ps, pdp, pgo + q_off, po + q_off, plse + kv * GT, nb * GT, T, D,
                              {pks, kv, GT, Hkv});  // P, dS
    // dV = P^T dO [T, D] and dK = scale dS^T q [T, D]: sums over the G T rows of the group
    gemm_f32(device, ps, pgo + q_off, pgv + kv_off, gemm_args(nb, T, D, GT, true, false, GTT, GTD, TD, 1.f));
    gemm_f32(device, pdp, pq + q_off, pgk + kv_off, gemm_args(nb, T, D, GT, true, false, GTT, GTD, TD, fscale));
    // dQ = scale dS k [G T, D]
    gemm_f32(device, pdp, pk + kv_off, pgq + q_off, gemm_args(nb, GT, D, T, false, false, GTT, TD, GTD, fscale));
  }
}

}  // namespace lora
