// Helpers shared by the op files: output allocation and input checks with clear messages.
#pragma once

#include <string_view>

#include "autograd/op_registry.h"
#include "autograd/tape.h"
#include "backends/backend.h"
#include "core/tensor.h"

namespace lora::ops::detail {

// A new tensor like `t` (same dtype and device) with `shape`, charged to the current category.
inline Tensor empty_like(const Tensor& t, const Shape& shape) {
  return Tensor::empty(shape, t.dtype(), t.device());
}
inline Tensor empty_like(const Tensor& t) {
  return empty_like(t, t.shape());
}
inline Tensor zeros_like(const Tensor& t, const Shape& shape) {
  return Tensor::zeros(shape, t.dtype(), t.device());
}
inline Tensor zeros_like(const Tensor& t) {
  return zeros_like(t, t.shape());
}

inline void check_defined(const Tensor& t, std::string_view op, const char* what) {
  LORA_CHECK(t.defined(), "{}: {} is undefined", op, what);
}
inline void check_floating(const Tensor& t, std::string_view op, const char* what) {
  check_defined(t, op, what);
  LORA_CHECK(is_floating(t.dtype()), "{}: {} must be float32 or float64, got {}", op, what, dtype_name(t.dtype()));
}
inline void check_same_device_dtype(const Tensor& a, const Tensor& b, std::string_view op) {
  LORA_CHECK(a.device() == b.device(), "{}: inputs are on different devices ({} and {})", op, a.device().str(),
             b.device().str());
  LORA_CHECK(a.dtype() == b.dtype(), "{}: inputs have different dtypes ({} and {})", op, dtype_name(a.dtype()),
             dtype_name(b.dtype()));
}
inline void check_integer(const Tensor& t, std::string_view op, const char* what) {
  check_defined(t, op, what);
  LORA_CHECK(is_integer(t.dtype()), "{}: {} must be int32 or int64, got {}", op, what, dtype_name(t.dtype()));
}

// Sums a broadcast gradient back to an input's shape (the backward of numpy broadcasting).
inline Tensor reduce_to_shape(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  Tensor out = empty_like(grad, shape);
  backend_for(grad).sum_to(grad, out);
  return out;
}

}  // namespace lora::ops::detail

namespace lora::ops {
// Op files record themselves with these.
using autograd::GradSink;
using autograd::OpRecord;
}  // namespace lora::ops
