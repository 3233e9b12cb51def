// causal_attention: fused causal scaled-dot-product attention, grouped-query attention included, forward and
// backward.
#include <cmath>

#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"
#include "backends/kernels/attention.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(causal_attention_op, "causal_attention");
}  // namespace

// out = softmax(q k^T * scale + mask) v, scale = 1 / sqrt(D) when 0 is passed. q [B, H, T, D]; k and v
// [B, Hkv, T, D] with H % Hkv == 0: query head h reads kv head h / (H / Hkv), and in backward grad_k and grad_v
// gather over the H / Hkv query heads of each group. The mask lets query t see keys j <= t, and with
// key_start (I32 [B, T], packed segments) only keys j >= key_start[b, t] of those: a constant, no gradient.
//
// Saved for backward: q, k, v, out and the row logsumexp lse [B, H, T]. The T x T attention probabilities are
// not kept: backward recomputes them block by block from q, k and lse. Every gradient needs q, k and lse (to
// rebuild P); grad_q and grad_k also need v and out. The kernel writes all three gradients at once, so all
// five tensors are kept whenever any input needs a gradient.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& key_start) {
  constexpr const char* op = "causal_attention";
  detail::check_floating(q, op, "q");
  detail::check_floating(k, op, "k");
  detail::check_floating(v, op, "v");
  detail::check_same_device_dtype(q, k, op);
  detail::check_same_device_dtype(q, v, op);
  LORA_CHECK(q.rank() == 4, "causal_attention: q has shape {}, expected [B, H, T, D]", q.shape().str());
  LORA_CHECK(k.shape() == v.shape(), "causal_attention: k {} and v {} must have the same shape [B, Hkv, T, D]",
             k.shape().str(), v.shape().str());
  LORA_CHECK(k.rank() == 4 && k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3),
             "causal_attention: k and v {} do not match q {}: expected [B, Hkv, T, D] with q's B, T and D",
             k.shape().str(), q.shape().str());
  LORA_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0,
             "causal_attention: q {} has {} heads, not a multiple of the {} kv heads of k {}", q.shape().str(),
             q.size(1), k.size(1), k.shape().str());
  LORA_CHECK(q.size(3) > 0, "causal_attention: q has shape {}, the head dimension D is empty", q.shape().str());
  LORA_CHECK(std::isfinite(scale), "causal_attention: scale = {} must be finite", scale);
  if (key_start.defined()) {
    LORA_CHECK(key_start.dtype() == DType::I32 && key_start.shape() == (Shape{q.size(0), q.size(2)}) &&
                   key_start.device() == q.device(),
               "causal_attention: key_start must be int32 [B, T] = [{}, {}] on {}, got {} {} on {}", q.size(0),
               q.size(2), q.device().str(), dtype_name(key_start.dtype()), key_start.shape().str(),
               key_start.device().str());
  }
  if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));

  Tensor out = detail::empty_like(q);                                     // [B, H, T, D]
  Tensor lse = detail::empty_like(q, {q.size(0), q.size(1), q.size(2)});  // [B, H, T]
  kernels::run<kernels::AttentionForward>(q.device(), q, k, v, key_start, scale, out, lse);

  if (OpRecord rec(causal_attention_op(), {q, k, v}); rec) {
    Tensor q_saved = rec.save(q), k_saved = rec.save(k), v_saved = rec.save(v);
    Tensor out_saved = rec.save(out), lse_saved = rec.save(lse);
    Tensor starts_saved = key_start;  // a small constant, kept as it is
    rec.finish(out, [=](const Tensor& grad_out, GradSink& g) {
      Tensor grad_q = detail::empty_like(q_saved);                                        // [B, H, T, D]
      Tensor grad_k = detail::empty_like(k_saved), grad_v = detail::empty_like(v_saved);  // [B, Hkv, T, D]
      kernels::run<kernels::AttentionBackward>(grad_out.device(), q_saved, k_saved, v_saved, starts_saved, out_saved,
                                               lse_saved, grad_out, scale, grad_q, grad_k, grad_v);
      if (g.needs_grad(0)) g.set(0, grad_q);
      if (g.needs_grad(1)) g.set(1, grad_k);
      if (g.needs_grad(2)) g.set(2, grad_v);
    });
  }
  return out;
}

}  // namespace lora::ops
