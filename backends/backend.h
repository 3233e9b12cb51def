// Backend: the generic primitives every device implements, on whole contiguous tensors (no autograd, no
// per-element virtual calls): filling and layout copies, the table-driven elementwise kernels, reductions
// and broadcasting, and gemm. Every method is pure virtual, so a backend that misses one does not compile.
//
// Fused kernels (softmax, layer norm, attention, cross-entropy, optimizer steps, ...) are not here: each has
// its own contract in backends/kernels/<op>.h, one implementation file per device, and runs through
// kernels::run<K>(device, ...) (backends/kernels/dispatch.h). The CPU backend is the reference; other
// backends must match it within stated tolerances.
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
};

// Throws lora::Error naming the op unless `saved` is defined exactly when the op's derivative reads it and
// saved, grad_y and grad_x have the same number of elements.
void check_unary_backward_args(UnaryOp op, const Tensor& saved, const Tensor& grad_y, const Tensor& grad_x);

// The backend for a device; throws lora::Error when that device type was not built in.
Backend& backend_for(Device device);
inline Backend& backend_for(const Tensor& t) {
  return backend_for(t.device());
}
void register_backend(DeviceType type, Backend* backend);

// Thread count for both OpenMP and OpenBLAS: LORA_NUM_THREADS if set, otherwise all cores.
int num_threads();
void set_num_threads(int n);

}  // namespace lora
