// CudaBackend: the generic primitives of lora::Backend on NVIDIA GPUs (float32 for arithmetic; data movement
// works on any dtype; other dtypes are a lora::Error naming the kernel). The methods check tensors (defined,
// on one CUDA device, float32, shapes), make the device current and call the launchers of kernels.h. The
// fused kernels are not here: each implements its contract of backends/kernels/ in backends/cuda/<op>.cu.
#pragma once

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
};

}  // namespace lora::cuda
