// CudaBackend: lora::Backend on NVIDIA GPUs (float32; other dtypes are a lora::Error naming the kernel).
// The methods check tensors (defined, on one CUDA device, float32, shapes), make the device current and call
// the launchers of kernels.h. Split over cuda_backend.cpp (layout, elementwise, reductions, gemm) and
// cuda_backend_nn.cpp (softmax, layer norm, embedding, cross-entropy, dropout, attention, optimizers).
#pragma once

#include <initializer_list>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/kernels.h"

namespace lora::cuda {

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::cuda(0); }

  void fill(Tensor& out, double value) override;
  void permute(const Tensor& x, Tensor& out, const std::vector<int>& dims) override;
  void copy_block(const Tensor& src, Tensor& dst, int64_t outer, int64_t src_mid, int64_t dst_mid, int64_t inner,
                  int64_t src_start, int64_t dst_start, int64_t count, bool accumulate) override;

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) override;
  void unary_backward(UnaryOp op, const Tensor& saved, const Tensor& grad_y, Tensor& grad_x, double alpha) override;

  void sum_to(const Tensor& x, Tensor& out) override;
  void expand(const Tensor& x, Tensor& out, bool accumulate) override;
  double sum_squares(const Tensor& x) override;

  void gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& shape) override;

  void softmax_forward(const Tensor& x, Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) override;
  void log_softmax_forward(const Tensor& x, Tensor& y) override;
  void log_softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) override;

  void layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, Tensor& y,
                          Tensor& mean, Tensor& rstd) override;
  void layer_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& mean,
                           const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias) override;

  void embedding_forward(const Tensor& weight, const Tensor& ids, Tensor& out) override;
  void embedding_backward(const Tensor& ids, const Tensor& grad_out, Tensor& grad_weight) override;

  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& losses,
                             Tensor& lse) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& grad_loss,
                              double scale, int64_t ignore_index, Tensor& grad_logits) override;

  void dropout_forward(const Tensor& x, Tensor& y, double p, uint64_t seed) override;
  void dropout_backward(const Tensor& grad_y, Tensor& grad_x, double p, uint64_t seed) override;

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                         Tensor& lse) override;
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          const Tensor& grad_out, double scale, Tensor& grad_q, Tensor& grad_k,
                          Tensor& grad_v) override;

  void adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamStep& hp) override;
  void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp) override;
};

// ---- Helpers shared by the two source files

// Checks that every defined tensor is on the same CUDA device, makes it current and returns its index.
int activate(const char* kernel, std::initializer_list<const Tensor*> tensors);
// The float32 device pointer of a defined tensor (else a lora::Error naming the kernel, the argument, the dtype).
float* f32(const char* kernel, const Tensor& t, const char* name);
// As f32, but null for an undefined tensor.
float* f32_or_null(const char* kernel, const Tensor& t, const char* name);
void check_same_shape(const char* kernel, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name);
void check_numel(const char* kernel, const Tensor& t, const char* name, int64_t expected);
// Integer ids or targets (int32 or int64); returns true for int64.
bool check_ids(const char* kernel, const Tensor& ids, const char* name);
// A temporary on `device`, charged to the Workspace category.
Tensor workspace(const Shape& shape, DType dtype, int device);

// A 3-word device buffer in which kernels report the first bad id (see kernels.h); check() reads it back
// (one synchronisation) and throws a lora::Error naming the kernel, the value, its row and the valid range.
class ErrorFlag {
 public:
  explicit ErrorFlag(int device);
  unsigned long long* data() const;
  void check(const char* kernel, const char* what, int64_t limit) const;

 private:
  Tensor buffer_;
};

}  // namespace lora::cuda
