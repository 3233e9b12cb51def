// CpuBackend: the reference backend's generic primitives (OpenBLAS for gemm, OpenMP loops for the rest),
// spread over backends/cpu/*.cpp by family. The fused kernels (softmax, layer norm, attention, ...) are
// not here: each implements its contract of backends/kernels/ in its own file (backends/cpu/<op>.cpp).
#pragma once

#include "backends/backend.h"
#include "backends/cpu/dispatch.h"

namespace lora {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }

  // layout.cpp
  void fill(Tensor& out, double value) override;
  void permute(const Tensor& x, Tensor& out, const std::vector<int>& dims) override;
  void copy_block(const Tensor& src, Tensor& dst, int64_t outer, int64_t src_mid, int64_t dst_mid, int64_t inner,
                  int64_t src_start, int64_t dst_start, int64_t count, bool accumulate) override;

  // elementwise.cpp
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) override;
  void unary_backward(UnaryOp op, const Tensor& saved, const Tensor& grad_y, Tensor& grad_x, double alpha) override;

  // reduce.cpp
  void sum_to(const Tensor& x, Tensor& out) override;
  void expand(const Tensor& x, Tensor& out, bool accumulate) override;
  double sum_squares(const Tensor& x) override;

  // gemm.cpp
  void gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& shape) override;
};

}  // namespace lora
