// Backend: the kernels every device implements, on whole contiguous tensors (no autograd, no per-element
// virtual calls). The CPU backend is the reference; other backends must match it within stated tolerances.
// Every method is pure virtual, so a backend that misses a kernel does not compile.
//
// Conventions for every kernel:
// - tensors are dense row-major; outputs are allocated by the caller with the right shape and dtype;
// - floating kernels accept F32 (every backend) and F64 (the CPU, for double-precision gradient checks);
// - elementwise kernels allow out to be the same tensor as an input (in place);
// - a kernel that "accumulates" adds into its output, otherwise it overwrites it.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/elementwise_ops.h"
#include "core/tensor.h"

namespace lora {

// C[i] = alpha * op(A[i]) * op(B[i]) + beta * C[i] for i in [0, batch), row-major.
// op(A) is [m, k] (A is stored [k, m] when trans_a), op(B) is [k, n] (B stored [n, k] when trans_b),
// C is [m, n]. Strides are in elements between consecutive batch entries; stride 0 reuses one matrix.
struct GemmShape {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
};

// Hyperparameters of one Adam/AdamW step (PyTorch's formulation and eps placement):
//   g = grad (+ weight_decay * p when !decoupled)           m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) g^2                           p = p (1 - lr weight_decay) when decoupled
//   p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
struct AdamStep {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled = true;  // AdamW
  int64_t step = 1;       // t, counted from 1
};

// One SGD step: g = grad + weight_decay p; buf = momentum buf + (1 - dampening) g (buf = g on the first
// step); g = nesterov ? g + momentum buf : buf (when momentum != 0); p = p - lr g.
struct SgdStep {
  double lr = 1e-2, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
  bool first_step = true;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // ---- Filling and layout
  virtual void fill(Tensor& out, double value) = 0;
  // out[permuted index] = x[index]: out.shape[i] == x.shape[dims[i]].
  virtual void permute(const Tensor& x, Tensor& out, const std::vector<int>& dims) = 0;
  // Block copy along a middle axis: src viewed as [outer, src_mid, inner], dst as [outer, dst_mid, inner];
  // for o < outer, j < count: dst[o, dst_start + j, :] (+)= src[o, src_start + j, :].
  virtual void copy_block(const Tensor& src, Tensor& dst, int64_t outer, int64_t src_mid, int64_t dst_mid,
                          int64_t inner, int64_t src_start, int64_t dst_start, int64_t count, bool accumulate) = 0;

  // ---- Elementwise, one kernel per entry of the table in backends/elementwise_ops.h
  // out = a op b, with numpy broadcasting of a and b to out's shape.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // out = f(x; alpha)
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha = 0.0) = 0;
  // grad_x = grad_y * f'(x). `saved` is what the table says the derivative reads: x (Saves::Input), y = f(x)
  // (Saves::Output), or an undefined tensor (Saves::Nothing); check_unary_backward_args checks it.
  virtual void unary_backward(UnaryOp op, const Tensor& saved, const Tensor& grad_y, Tensor& grad_x,
                              double alpha = 0.0) = 0;

  // ---- Reductions and broadcasting
  // out = x summed over the axes where out (right-aligned, missing axes = 1) has size 1 and x does not.
  virtual void sum_to(const Tensor& x, Tensor& out) = 0;
  // out = x broadcast (numpy rules) to out's shape; accumulates into out when asked.
  virtual void expand(const Tensor& x, Tensor& out, bool accumulate) = 0;
  // Sum of squares of all elements, in double (gradient clipping, norms).
  virtual double sum_squares(const Tensor& x) = 0;

  // ---- Matrix multiplication (OpenBLAS sgemm/dgemm on the CPU, cuBLAS on CUDA)
  virtual void gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& shape) = 0;

  // ---- Softmax family, over the last axis
  virtual void softmax_forward(const Tensor& x, Tensor& y) = 0;
  // grad_x = y * (grad_y - sum(grad_y * y))
  virtual void softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) = 0;
  virtual void log_softmax_forward(const Tensor& x, Tensor& y) = 0;
  // grad_x = grad_y - exp(y) * sum(grad_y)
  virtual void log_softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) = 0;

  // ---- Layer normalisation over the last axis: x [N, C], weight/bias [C], mean/rstd [N] (saved).
  // y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) (biased variance).
  virtual void layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, Tensor& y,
                                  Tensor& mean, Tensor& rstd) = 0;
  // Writes grad_x; accumulates into grad_weight and grad_bias. Any of the three may be undefined (skipped).
  virtual void layer_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                   const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias) = 0;

  // ---- Embedding: weight [V, C], ids [N] (I32 or I64), out [N, C]. An id outside [0, V) is a lora::Error.
  virtual void embedding_forward(const Tensor& weight, const Tensor& ids, Tensor& out) = 0;
  // grad_weight[ids[i]] += grad_out[i] (scatter-add; repeated ids add up).
  virtual void embedding_backward(const Tensor& ids, const Tensor& grad_out, Tensor& grad_weight) = 0;

  // ---- Cross-entropy over logits [N, V] with integer targets [N]; rows whose target is ignore_index
  // count for nothing. losses[i] = logsumexp(logits[i]) - logits[i, target[i]] (0 when ignored), and
  // lse[i] = logsumexp(logits[i]) is saved for backward. A target outside [0, V) is a lora::Error.
  virtual void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                     Tensor& losses, Tensor& lse) = 0;
  // grad_logits[i] = grad_loss * scale * (softmax(logits[i]) - onehot(target[i])), 0 for ignored rows;
  // grad_loss is a one-element tensor (read on the device). grad_logits may be logits itself (each element
  // is read before it is written): the fused LM head + loss turns its saved logits into their gradient.
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                      const Tensor& grad_loss, double scale, int64_t ignore_index,
                                      Tensor& grad_logits) = 0;

  // ---- Dropout with a counter-based RNG: element i is kept when counter_uniform(seed, i) >= float(p)
  // (compared in float on every device), and scaled by 1 / (1 - p). Backward regenerates the same mask,
  // so no mask is stored.
  virtual void dropout_forward(const Tensor& x, Tensor& y, double p, uint64_t seed) = 0;
  virtual void dropout_backward(const Tensor& grad_y, Tensor& grad_x, double p, uint64_t seed) = 0;

  // ---- Causal scaled-dot-product attention over q, k, v, out: [B, H, T, D]; lse: [B, H, T].
  // out = softmax(q k^T * scale + causal mask) v; lse[b,h,t] = logsumexp of row t of the masked scores.
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                                 Tensor& lse) = 0;
  // Recomputes the probabilities from q, k and lse (no T x T tensor is kept between forward and backward).
  // Writes grad_q, grad_k, grad_v.
  virtual void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const Tensor& grad_out, double scale, Tensor& grad_q,
                                  Tensor& grad_k, Tensor& grad_v) = 0;

  // ---- Optimizer steps, in place on param and state
  virtual void adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                         const AdamStep& hp) = 0;
  // momentum_buffer is undefined when hp.momentum == 0.
  virtual void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp) = 0;
};

// Throws lora::Error naming the op unless `saved` is defined exactly when the op's derivative reads it and
// saved, grad_y and grad_x have the same number of elements.
void check_unary_backward_args(UnaryOp op, const Tensor& saved, const Tensor& grad_y, const Tensor& grad_x);

// The backend for a device; throws lora::Error when that device type was not built in.
Backend& backend_for(Device device);
inline Backend& backend_for(const Tensor& t) { return backend_for(t.device()); }
void register_backend(DeviceType type, Backend* backend);

// Thread count for both OpenMP and OpenBLAS: LORA_NUM_THREADS if set, otherwise all cores.
int num_threads();
void set_num_threads(int n);

}  // namespace lora
