// The meta device's backend: every primitive is a no-op (the tensors have shapes and no data), so that a
// model's forward and backward run on shapes alone while the MemoryTracker counts what they allocate and
// save. sum_squares has no data to sum and returns 0.
#pragma once

#include "backends/backend.h"

namespace lora {

class MetaBackend final : public Backend {
 public:
  Device device() const override { return Device::meta(); }
  void fill(Tensor&, double) override {}
  void permute(const Tensor&, Tensor&, const std::vector<int>&) override {}
  void copy_block(const Tensor&, Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                  bool) override {}
  void binary(BinaryOp, const Tensor&, const Tensor&, Tensor&) override {}
  void unary(UnaryOp, const Tensor&, Tensor&, double) override {}
  void unary_backward(UnaryOp, const Tensor&, const Tensor&, Tensor&, double) override {}
  void sum_to(const Tensor&, Tensor&) override {}
  void expand(const Tensor&, Tensor&, bool) override {}
  double sum_squares(const Tensor&) override { return 0.0; }
  void gemm(const Tensor&, const Tensor&, Tensor&, const GemmShape&) override {}
};

inline MetaBackend& meta_backend() {
  static MetaBackend backend;
  return backend;
}

}  // namespace lora
