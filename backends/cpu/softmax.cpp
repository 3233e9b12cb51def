// CPU kernels of softmax and log_softmax over the last axis (backends/kernels/softmax.h), forward and backward
// (numerically stable: row max first).
#include <algorithm>
#include <cmath>

#include "backends/cpu/dispatch.h"
#include "backends/kernels/softmax.h"

namespace lora {
namespace {

constexpr int64_t kMinParallelElements = 1 << 14;  // below this a loop runs on one thread

// A tensor seen as [rows, cols] over its last axis (a rank-0 tensor is one row of one element).
struct RowShape {
  int64_t rows, cols;
};
RowShape row_shape(const Tensor& t) {
  const int64_t cols = t.rank() == 0 ? 1 : t.size(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}

void check_alike(const char* kernel, const Tensor& a, const Tensor& b) {
  LORA_CHECK(a.shape() == b.shape(), "{}: shape {} does not match {}", kernel, a.shape().str(), b.shape().str());
  LORA_CHECK(a.dtype() == b.dtype(), "{}: dtype {} does not match {}", kernel, dtype_name(a.dtype()),
             dtype_name(b.dtype()));
}

template <typename T>
T row_max(const T* x, int64_t n) {
  T m = x[0];
  for (int64_t j = 1; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// ---------------------------------------------------------------------------------------------------
// softmax: y = exp(x - max) / sum(exp(x - max))

void softmax_forward(const Tensor& x, Tensor& y) {
  check_alike("softmax_forward", x, y);
  const auto shape = row_shape(x);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  dispatch_floating(x.dtype(), "softmax_forward", [&]<typename T>() {
    const T* xp = x.data<T>();  // [rows, cols]
    T* yp = y.data<T>();        // [rows, cols]
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * cols;
      T* yr = yp + r * cols;
      const T m = row_max(xr, cols);
      T sum = 0;
      for (int64_t j = 0; j < cols; ++j) {
        yr[j] = std::exp(xr[j] - m);
        sum += yr[j];
      }
      const T inv = T(1) / sum;
      for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
    }
  });
}

// grad_x = y * (grad_y - sum(grad_y * y)); grad_x may alias grad_y (the dot product is read first).
void softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) {
  check_alike("softmax_backward", y, grad_y);
  check_alike("softmax_backward", y, grad_x);
  const auto shape = row_shape(y);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  dispatch_floating(y.dtype(), "softmax_backward", [&]<typename T>() {
    const T* yp = y.data<T>();
    const T* gyp = grad_y.data<T>();
    T* gxp = grad_x.data<T>();
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* yr = yp + r * cols;
      const T* gyr = gyp + r * cols;
      T* gxr = gxp + r * cols;
      T dot = 0;
      for (int64_t j = 0; j < cols; ++j) dot += gyr[j] * yr[j];
      for (int64_t j = 0; j < cols; ++j) gxr[j] = yr[j] * (gyr[j] - dot);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// log_softmax: y = x - (max + log(sum(exp(x - max))))

void log_softmax_forward(const Tensor& x, Tensor& y) {
  check_alike("log_softmax_forward", x, y);
  const auto shape = row_shape(x);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  dispatch_floating(x.dtype(), "log_softmax_forward", [&]<typename T>() {
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * cols;
      T* yr = yp + r * cols;
      const T m = row_max(xr, cols);
      T sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += std::exp(xr[j] - m);
      const T lse = m + std::log(sum);
      for (int64_t j = 0; j < cols; ++j) yr[j] = xr[j] - lse;
    }
  });
}

// grad_x = grad_y - exp(y) * sum(grad_y); grad_x may alias grad_y.
void log_softmax_backward(const Tensor& y, const Tensor& grad_y, Tensor& grad_x) {
  check_alike("log_softmax_backward", y, grad_y);
  check_alike("log_softmax_backward", y, grad_x);
  const auto shape = row_shape(y);
  const int64_t rows = shape.rows, cols = shape.cols;  // not a structured binding: OpenMP regions capture these
  dispatch_floating(y.dtype(), "log_softmax_backward", [&]<typename T>() {
    const T* yp = y.data<T>();
    const T* gyp = grad_y.data<T>();
    T* gxp = grad_x.data<T>();
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      const T* yr = yp + r * cols;
      const T* gyr = gyp + r * cols;
      T* gxr = gxp + r * cols;
      T sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += gyr[j];
      for (int64_t j = 0; j < cols; ++j) gxr[j] = gyr[j] - std::exp(yr[j]) * sum;
    }
  });
}

}  // namespace

void kernels::SoftmaxForward::cpu(const Tensor& x, Tensor& y, bool log) {
  if (log)
    log_softmax_forward(x, y);
  else
    softmax_forward(x, y);
}

void kernels::SoftmaxBackward::cpu(const Tensor& y, const Tensor& grad_y, Tensor& grad_x, bool log) {
  if (log)
    log_softmax_backward(y, grad_y, grad_x);
  else
    softmax_backward(y, grad_y, grad_x);
}

}  // namespace lora
