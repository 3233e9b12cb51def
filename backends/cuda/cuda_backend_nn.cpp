// CudaBackend, part 2: the kernels of neural-network layers (softmax family, layer norm, embedding,
// cross-entropy, dropout, causal attention) and the optimizer steps.
//
// Attention runs on cuBLAS: per (batch, head), scores S = scale q k^T go to a [chunk, T, T] workspace, a row
// kernel applies the causal softmax in place (saving lse), and P v gives the output. Backward recomputes
// S from q, k and lse, and forms dP = dO v^T, dS = P * (dP - rowsum(dO * O)), dV = P^T dO,
// dQ = scale dS k and dK = scale dS^T q. Chunks of (batch, head) pairs bound the workspace.
#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_backend.h"

namespace lora::cuda {
namespace {

constexpr int64_t kAttentionWorkspaceBytes = int64_t(1) << 30;  // per call, for the T x T buffers

struct Rows {
  int64_t rows, cols;
};
Rows rows_of(const Tensor& x) {
  const int64_t cols = x.rank() == 0 ? 1 : x.shape()[-1];
  return {cols == 0 ? 0 : x.numel() / cols, cols};
}

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

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Softmax family

void CudaBackend::softmax_forward(const Tensor& x, Tensor& y) {
  activate("softmax_forward", {&x, &y});
  check_same_shape("softmax_forward", x, "x", y, "y");
  const Rows r = rows_of(x);
  softmax_forward_f32(f32("softmax_forward", x, "x"), f32("softmax_forward", y, "y"), r.rows, r.cols, false);
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) {
  activate("softmax_backward", {&y, &grad_y, &grad_x});
  check_same_shape("softmax_backward", y, "y", grad_y, "grad_y");
  check_same_shape("softmax_backward", y, "y", grad_x, "grad_x");
  const Rows r = rows_of(y);
  softmax_backward_f32(f32("softmax_backward", y, "y"), f32("softmax_backward", grad_y, "grad_y"),
                       f32("softmax_backward", grad_x, "grad_x"), r.rows, r.cols, false);
}

void CudaBackend::log_softmax_forward(const Tensor& x, Tensor& y) {
  activate("log_softmax_forward", {&x, &y});
  check_same_shape("log_softmax_forward", x, "x", y, "y");
  const Rows r = rows_of(x);
  softmax_forward_f32(f32("log_softmax_forward", x, "x"), f32("log_softmax_forward", y, "y"), r.rows, r.cols, true);
}

void CudaBackend::log_softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) {
  activate("log_softmax_backward", {&y, &grad_y, &grad_x});
  check_same_shape("log_softmax_backward", y, "y", grad_y, "grad_y");
  check_same_shape("log_softmax_backward", y, "y", grad_x, "grad_x");
  const Rows r = rows_of(y);
  softmax_backward_f32(f32("log_softmax_backward", y, "y"), f32("log_softmax_backward", grad_y, "grad_y"),
                       f32("log_softmax_backward", grad_x, "grad_x"), r.rows, r.cols, true);
}

// ---------------------------------------------------------------------------------------------------
// Layer norm

void CudaBackend::layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, Tensor& y,
                                     Tensor& mean, Tensor& rstd) {
  const char* k = "layer_norm_forward";
  activate(k, {&x, &weight, &bias, &y, &mean, &rstd});
  check_same_shape(k, x, "x", y, "y");
  const Rows r = rows_of(x);
  if (weight.defined()) check_numel(k, weight, "weight", r.cols);
  if (bias.defined()) check_numel(k, bias, "bias", r.cols);
  if (mean.defined()) check_numel(k, mean, "mean", r.rows);
  if (rstd.defined()) check_numel(k, rstd, "rstd", r.rows);
  layer_norm_forward_f32(f32(k, x, "x"), f32_or_null(k, weight, "weight"), f32_or_null(k, bias, "bias"),
                         static_cast<float>(eps), f32(k, y, "y"), f32_or_null(k, mean, "mean"),
                         f32_or_null(k, rstd, "rstd"), r.rows, r.cols);
}

void CudaBackend::layer_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                      const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias) {
  const char* k = "layer_norm_backward";
  const int device = activate(k, {&grad_y, &x, &weight, &mean, &rstd, &grad_x, &grad_weight, &grad_bias});
  check_same_shape(k, x, "x", grad_y, "grad_y");
  const Rows r = rows_of(x);
  check_numel(k, mean, "mean", r.rows);
  check_numel(k, rstd, "rstd", r.rows);
  if (weight.defined()) check_numel(k, weight, "weight", r.cols);
  if (grad_weight.defined()) check_numel(k, grad_weight, "grad_weight", r.cols);
  if (grad_bias.defined()) check_numel(k, grad_bias, "grad_bias", r.cols);
  if (grad_x.defined()) check_same_shape(k, x, "x", grad_x, "grad_x");
  const float* gy = f32(k, grad_y, "grad_y");
  const float* px = f32(k, x, "x");
  const float* pm = f32(k, mean, "mean");
  const float* pr = f32(k, rstd, "rstd");
  // Weight and bias first: grad_x may be grad_y's own storage.
  if ((grad_weight.defined() || grad_bias.defined()) && r.rows > 0 && r.cols > 0) {
    const int splits = column_reduce_splits(r.rows, r.cols);
    Tensor partial = workspace({2 * static_cast<int64_t>(splits) * r.cols}, DType::F32, device);
    layer_norm_backward_params_f32(gy, px, pm, pr, r.rows, r.cols, partial.data<float>(), splits,
                                   f32_or_null(k, grad_weight, "grad_weight"), f32_or_null(k, grad_bias, "grad_bias"));
  }
  if (grad_x.defined()) {
    layer_norm_backward_dx_f32(gy, px, f32_or_null(k, weight, "weight"), pm, pr, f32(k, grad_x, "grad_x"), r.rows,
                               r.cols);
  }
}

// ---------------------------------------------------------------------------------------------------
// Embedding

void CudaBackend::embedding_forward(const Tensor& weight, const Tensor& ids, Tensor& out) {
  const char* k = "embedding_forward";
  const int device = activate(k, {&weight, &ids, &out});
  LORA_CHECK(weight.rank() == 2, "cuda {}: weight has shape {}, expected [V, C]", k, weight.shape().str());
  const bool ids64 = check_ids(k, ids, "ids");
  const int64_t vocab = weight.size(0), dim = weight.size(1), n = ids.numel();
  check_numel(k, out, "out", n * dim);
  const float* pw = f32(k, weight, "weight");
  float* po = f32(k, out, "out");
  if (n == 0 || dim == 0) return;
  ErrorFlag error(device);
  embedding_forward_f32(pw, ids.raw_data(), ids64, po, n, vocab, dim, error.data());
  error.check(k, "id", vocab);
}

void CudaBackend::embedding_backward(const Tensor& ids, const Tensor& grad_out, Tensor& grad_weight) {
  const char* k = "embedding_backward";
  const int device = activate(k, {&ids, &grad_out, &grad_weight});
  LORA_CHECK(grad_weight.rank() == 2, "cuda {}: grad_weight has shape {}, expected [V, C]", k,
             grad_weight.shape().str());
  const bool ids64 = check_ids(k, ids, "ids");
  const int64_t vocab = grad_weight.size(0), dim = grad_weight.size(1), n = ids.numel();
  check_numel(k, grad_out, "grad_out", n * dim);
  const float* pg = f32(k, grad_out, "grad_out");
  float* pw = f32(k, grad_weight, "grad_weight");
  if (n == 0 || dim == 0) return;
  // Ids are checked before the scatter, so that a bad id leaves grad_weight untouched (as on the CPU).
  ErrorFlag error(device);
  validate_ids(ids.raw_data(), ids64, n, vocab, error.data());
  error.check(k, "id", vocab);
  embedding_backward_f32(ids.raw_data(), ids64, pg, pw, n, vocab, dim, error.data());
}

// ---------------------------------------------------------------------------------------------------
// Cross-entropy

void CudaBackend::cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                        Tensor& losses, Tensor& lse) {
  const char* k = "cross_entropy_forward";
  const int device = activate(k, {&logits, &targets, &losses, &lse});
  const bool t64 = check_ids(k, targets, "targets");
  const Rows r = rows_of(logits);
  check_numel(k, targets, "targets", r.rows);
  check_numel(k, losses, "losses", r.rows);
  check_numel(k, lse, "lse", r.rows);
  const float* pl = f32(k, logits, "logits");
  float* ploss = f32(k, losses, "losses");
  float* plse = f32(k, lse, "lse");
  if (r.rows == 0) return;
  ErrorFlag error(device);
  cross_entropy_forward_f32(pl, targets.raw_data(), t64, ignore_index, ploss, plse, r.rows, r.cols, error.data());
  error.check(k, "target", r.cols);
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                         const Tensor& grad_loss, double scale, int64_t ignore_index,
                                         Tensor& grad_logits) {
  const char* k = "cross_entropy_backward";
  const int device = activate(k, {&logits, &targets, &lse, &grad_loss, &grad_logits});
  const bool t64 = check_ids(k, targets, "targets");
  check_same_shape(k, logits, "logits", grad_logits, "grad_logits");
  const Rows r = rows_of(logits);
  check_numel(k, targets, "targets", r.rows);
  check_numel(k, lse, "lse", r.rows);
  check_numel(k, grad_loss, "grad_loss", 1);
  const float* pl = f32(k, logits, "logits");
  const float* plse = f32(k, lse, "lse");
  const float* pgl = f32(k, grad_loss, "grad_loss");
  float* pg = f32(k, grad_logits, "grad_logits");
  if (r.rows == 0 || r.cols == 0) return;
  ErrorFlag error(device);
  cross_entropy_backward_f32(pl, targets.raw_data(), t64, plse, pgl, static_cast<float>(scale), ignore_index, pg,
                             r.rows, r.cols, error.data());
  error.check(k, "target", r.cols);
}

// ---------------------------------------------------------------------------------------------------
// Dropout

void CudaBackend::dropout_forward(const Tensor& x, Tensor& y, double p, uint64_t seed) {
  activate("dropout_forward", {&x, &y});
  check_same_shape("dropout_forward", x, "x", y, "y");
  LORA_CHECK(p >= 0.0 && p < 1.0, "cuda dropout_forward: p = {} must be in [0, 1)", p);
  dropout_f32(f32("dropout_forward", x, "x"), f32("dropout_forward", y, "y"), x.numel(), p, seed);
}

void CudaBackend::dropout_backward(const Tensor& grad_y, Tensor& grad_x, double p, uint64_t seed) {
  activate("dropout_backward", {&grad_y, &grad_x});
  check_same_shape("dropout_backward", grad_y, "grad_y", grad_x, "grad_x");
  LORA_CHECK(p >= 0.0 && p < 1.0, "cuda dropout_backward: p = {} must be in [0, 1)", p);
  dropout_f32(f32("dropout_backward", grad_y, "grad_y"), f32("dropout_backward", grad_x, "grad_x"), grad_y.numel(), p,
              seed);
}

// ---------------------------------------------------------------------------------------------------
// Causal attention

void CudaBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                                    Tensor& lse) {
  const char* name = "attention_forward";
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

void CudaBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                     const Tensor& lse, const Tensor& grad_out, double scale, Tensor& grad_q,
                                     Tensor& grad_k, Tensor& grad_v) {
  const char* name = "attention_backward";
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

// ---------------------------------------------------------------------------------------------------
// Optimizer steps

void CudaBackend::adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                            const AdamStep& hp) {
  const char* k = "adam_step";
  activate(k, {&param, &grad, &exp_avg, &exp_avg_sq});
  check_same_shape(k, param, "param", grad, "grad");
  check_same_shape(k, param, "param", exp_avg, "exp_avg");
  check_same_shape(k, param, "param", exp_avg_sq, "exp_avg_sq");
  LORA_CHECK(hp.step >= 1, "cuda adam_step: step {} must count from 1", hp.step);
  const double bc1 = 1.0 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, static_cast<double>(hp.step));
  AdamScalars s;
  s.beta1 = static_cast<float>(hp.beta1);
  s.beta2 = static_cast<float>(hp.beta2);
  s.one_minus_beta1 = static_cast<float>(1.0 - hp.beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - hp.beta2);
  s.step_size = static_cast<float>(hp.lr / bc1);
  s.inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(bc2));
  s.eps = static_cast<float>(hp.eps);
  s.decay = static_cast<float>(hp.decoupled ? 1.0 - hp.lr * hp.weight_decay : 1.0);
  s.l2 = static_cast<float>(hp.decoupled ? 0.0 : hp.weight_decay);
  adam_step_f32(f32(k, param, "param"), f32(k, grad, "grad"), f32(k, exp_avg, "exp_avg"),
                f32(k, exp_avg_sq, "exp_avg_sq"), param.numel(), s);
}

void CudaBackend::sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp) {
  const char* k = "sgd_step";
  const bool momentum = hp.momentum != 0.0;
  activate(k, {&param, &grad, momentum ? &momentum_buffer : nullptr});
  check_same_shape(k, param, "param", grad, "grad");
  if (momentum) {
    LORA_CHECK(momentum_buffer.defined(), "cuda sgd_step: momentum {} needs a momentum buffer", hp.momentum);
    check_same_shape(k, param, "param", momentum_buffer, "momentum_buffer");
  }
  SgdScalars s;
  s.lr = static_cast<float>(hp.lr);
  s.momentum = static_cast<float>(hp.momentum);
  s.one_minus_dampening = static_cast<float>(1.0 - hp.dampening);
  s.weight_decay = static_cast<float>(hp.weight_decay);
  s.nesterov = hp.nesterov;
  s.first_step = hp.first_step;
  sgd_step_f32(f32(k, param, "param"), f32(k, grad, "grad"),
               momentum ? f32(k, momentum_buffer, "momentum_buffer") : nullptr, param.numel(), s);
}

}  // namespace lora::cuda
