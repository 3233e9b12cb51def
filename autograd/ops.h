// The differentiable ops. Each is a free function that computes its result with the backend of its
// inputs' device and, when recording, pushes a node whose backward computes only the gradients its
// inputs need. Forward and backward of each op live side by side in one file under autograd/ops/.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/tape.h"
#include "backends/elementwise_ops.h"
#include "core/tensor.h"

namespace lora::ops {

// ---- Elementwise ops: the table in backends/elementwise_ops.h. The generic forms take any table entry; the
// named functions below are the same ops.
Tensor unary(UnaryOp op, const Tensor& x, double alpha = 0.0);  // f(x; alpha)   (autograd/ops/unary.cpp)
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);   // a op b  (autograd/ops/elementwise.cpp)

// ---- Elementwise arithmetic with numpy broadcasting (leading dimensions, a trailing bias, size-1 axes)
// autograd/ops/elementwise.cpp
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);

// ---- Elementwise functions (autograd/ops/unary.cpp)
Tensor add_scalar(const Tensor& x, double s);  // x + s
Tensor mul_scalar(const Tensor& x, double s);  // x * s
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // tanh approximation, as GPT-2
Tensor silu(const Tensor& x);  // x * sigmoid(x), as Llama's MLP
Tensor square(const Tensor& x);
Tensor sqrt(const Tensor& x);

// ---- Matrix products (autograd/ops/matmul.cpp)
// a [..., M, K] (or [..., K, M] with trans_a) times b [..., K, N] (or [..., N, K] with trans_b).
// b may be 2-D (shared across a's batch) or have a's leading dimensions.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// y = x W^T + b: x [..., in], weight [out, in], bias [out] or undefined. One gemm over all rows of x.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// out = base with columns [column, column + w) of its last axis increased by scale * delta [..., w]
// (autograd/ops/add_columns.cpp; how LoRA updates one slice of a fused projection).
Tensor add_columns(const Tensor& base, const Tensor& delta, int64_t column, double scale = 1.0);

// ---- Reductions (autograd/ops/reduce.cpp)
Tensor sum(const Tensor& x);  // all elements -> shape []
Tensor sum(const Tensor& x, int axis, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int axis, bool keepdim = false);

// ---- Shape and layout (autograd/ops/shape.cpp). reshape shares storage; permute copies.
Tensor reshape(const Tensor& x, const Shape& shape);  // one dimension may be -1
Tensor permute(const Tensor& x, const std::vector<int>& dims);
Tensor transpose(const Tensor& x, int axis0, int axis1);
// [start, end) along axis: a copy, or, without gradients, a view when the part is one contiguous block.
Tensor slice(const Tensor& x, int axis, int64_t start, int64_t end);
std::vector<Tensor> split(const Tensor& x, int axis, const std::vector<int64_t>& sizes);
Tensor concat(const std::vector<Tensor>& xs, int axis);

// ---- Normalisation and probabilities, over the last axis
Tensor softmax(const Tensor& x);      // autograd/ops/softmax.cpp
Tensor log_softmax(const Tensor& x);  // autograd/ops/softmax.cpp
// weight and bias [C] for x [..., C] (autograd/ops/layer_norm.cpp)
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// y = x * rsqrt(mean(x^2 over the last axis) + eps) * weight: x [..., C], weight [C] (Llama's RMSNorm;
// autograd/ops/rms_norm.cpp)
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
// silu(gate) * up for gate and up of one shape (the Llama family's SwiGLU MLP): the composed ops' values and
// gradients bit for bit, keeping gate and up for backward instead of gate, silu(gate) and up
// (autograd/ops/swiglu.cpp)
Tensor swiglu(const Tensor& gate, const Tensor& up);

// ---- Lookup and losses
// weight [V, C], ids [...] (I32/I64) -> [..., C]; backward is a scatter-add into weight (autograd/ops/embedding.cpp)
Tensor embedding(const Tensor& weight, const Tensor& ids);
// Mean over the rows whose target is not ignore_index of -log softmax(logits)[target]; logits [..., V],
// targets [...] (I32/I64). Fused and numerically stable (autograd/ops/cross_entropy.cpp). Shape [].
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

// ---- Regularisation (autograd/ops/dropout.cpp): identity when !training or p == 0.
// The mask comes from a counter-based generator keyed by `seed`, so backward regenerates it.
Tensor dropout(const Tensor& x, double p, bool training, uint64_t seed);

// ---- Attention
// Causal scaled-dot-product attention, q [B, H, T, D], k and v [B, Hkv, T, D] with H % Hkv == 0 -> [B, H, T, D];
// query head h reads kv head h / (H / Hkv) (grouped-query attention; Hkv = H is multi-head attention).
// scale = 1/sqrt(D) when 0 is passed (autograd/ops/attention.cpp). key_start I32 [B, T] (packed segments):
// query t of batch row b sees keys [key_start[b, t], t] only; undefined: keys [0, t].
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale = 0.0,
                        const Tensor& key_start = Tensor());
// Rotary position embedding, rotate-half convention (Hugging Face Llama, GPT-NeoX): x [B, T, H, D] (D even),
// cos and sin [T, D/2] for the positions of x (constants). For i < D/2 at time t:
//   y[i] = x[i] cos[t,i] - x[i + D/2] sin[t,i];   y[i + D/2] = x[i + D/2] cos[t,i] + x[i] sin[t,i]
// (autograd/ops/rope.cpp)
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin);

}  // namespace lora::ops

namespace lora {
// Operators for readable model code: a + b, a * b, ...
inline Tensor operator+(const Tensor& a, const Tensor& b) {
  return ops::add(a, b);
}
inline Tensor operator-(const Tensor& a, const Tensor& b) {
  return ops::sub(a, b);
}
inline Tensor operator*(const Tensor& a, const Tensor& b) {
  return ops::mul(a, b);
}
inline Tensor operator/(const Tensor& a, const Tensor& b) {
  return ops::div(a, b);
}
inline Tensor operator-(const Tensor& x) {
  return ops::neg(x);
}
inline Tensor operator+(const Tensor& x, double s) {
  return ops::add_scalar(x, s);
}
inline Tensor operator-(const Tensor& x, double s) {
  return ops::add_scalar(x, -s);
}
inline Tensor operator*(const Tensor& x, double s) {
  return ops::mul_scalar(x, s);
}
inline Tensor operator*(double s, const Tensor& x) {
  return ops::mul_scalar(x, s);
}
inline Tensor operator/(const Tensor& x, double s) {
  return ops::mul_scalar(x, 1.0 / s);
}
}  // namespace lora
