// CpuBackend: the reference backend (OpenBLAS for gemm, OpenMP loops for everything else).
// The kernels are spread over backends/cpu/*.cpp by family; this header declares them all.
#pragma once

#include "backends/backend.h"

namespace lora {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }

  // cpu_layout.cpp
  void fill(Tensor& out, double value) override;
  void permute(const Tensor& x, Tensor& out, const std::vector<int>& dims) override;
  void copy_block(const Tensor& src, Tensor& dst, int64_t outer, int64_t src_mid, int64_t dst_mid, int64_t inner,
                  int64_t src_start, int64_t dst_start, int64_t count, bool accumulate) override;

  // elementwise.cpp
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) override;
  void unary_backward(UnaryOp op, const Tensor& saved, const Tensor& grad_y, Tensor& grad_x, double alpha) override;

  // cpu_reduce.cpp
  void sum_to(const Tensor& x, Tensor& out) override;
  void expand(const Tensor& x, Tensor& out, bool accumulate) override;
  double sum_squares(const Tensor& x) override;

  // cpu_gemm.cpp
  void gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& shape) override;

  // cpu_softmax.cpp
  void softmax_forward(const Tensor& x, Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) override;
  void log_softmax_forward(const Tensor& x, Tensor& y) override;
  void log_softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) override;

  // cpu_layer_norm.cpp
  void layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, Tensor& y,
                          Tensor& mean, Tensor& rstd) override;
  void layer_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& mean,
                           const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias) override;

  // cpu_embedding.cpp
  void embedding_forward(const Tensor& weight, const Tensor& ids, Tensor& out) override;
  void embedding_backward(const Tensor& ids, const Tensor& grad_out, Tensor& grad_weight) override;

  // cpu_cross_entropy.cpp
  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& losses,
                             Tensor& lse) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& grad_loss,
                              double scale, int64_t ignore_index, Tensor& grad_logits) override;

  // cpu_dropout.cpp
  void dropout_forward(const Tensor& x, Tensor& y, double p, uint64_t seed) override;
  void dropout_backward(const Tensor& grad_y, Tensor& grad_x, double p, uint64_t seed) override;

  // cpu_attention.cpp
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                         Tensor& lse) override;
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          const Tensor& grad_out, double scale, Tensor& grad_q, Tensor& grad_k,
                          Tensor& grad_v) override;

  // cpu_optim.cpp
  void adam_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamStep& hp) override;
  void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdStep& hp) override;
};

// Runs `body.template operator()<T>()` with T = float or double according to `dtype`; other dtypes throw
// a lora::Error naming the kernel.
template <typename Body>
void dispatch_floating(DType dtype, const char* kernel, Body&& body) {
  switch (dtype) {
    case DType::F32: body.template operator()<float>(); break;
    case DType::F64: body.template operator()<double>(); break;
    default: LORA_FAIL("{}: unsupported dtype {} (expected float32 or float64)", kernel, dtype_name(dtype));
  }
}

// Reads the integer id `i` of an I32 or I64 tensor.
inline int64_t read_index(const Tensor& ids, int64_t i) {
  return ids.dtype() == DType::I32 ? static_cast<int64_t>(static_cast<const int32_t*>(ids.raw_data())[i])
                                   : static_cast<const int64_t*>(ids.raw_data())[i];
}

}  // namespace lora
