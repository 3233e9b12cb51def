// Checks and small helpers shared by the CUDA backend (cuda_backend.cpp) and the fused CUDA kernels
// (backends/cuda/<op>.cu): argument checks that throw lora::Error naming the kernel, the current device,
// workspace tensors, and the error flag through which kernels report bad ids.
#pragma once

#include <initializer_list>

#include "core/tensor.h"

namespace lora::cuda {

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

// A 3-word device buffer in which kernels report the first bad id (common.cuh: record_error): zeroed here,
// error[0] = 1, error[1] = the bad value, error[2] = its row. check() reads it back (one synchronisation)
// and throws a lora::Error naming the kernel, the value, its row and the valid range.
class ErrorFlag {
 public:
  explicit ErrorFlag(int device);
  unsigned long long* data() const;
  void check(const char* kernel, const char* what, int64_t limit) const;

 private:
  Tensor buffer_;
};

// A tensor seen as [rows, cols] over its last axis (a rank-0 tensor is one row of one element).
struct Rows {
  int64_t rows, cols;
};
inline Rows rows_of(const Tensor& x) {
  const int64_t cols = x.rank() == 0 ? 1 : x.shape()[-1];
  return {cols == 0 ? 0 : x.numel() / cols, cols};
}

}  // namespace lora::cuda
