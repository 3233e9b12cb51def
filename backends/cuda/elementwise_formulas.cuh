// CUDA formulas of the elementwise table (backends/elementwise_ops.h), in float32.
//
// Unary<Op>::forward(x, alpha) = y; Unary<Op>::backward(s, g, alpha) = grad_x for grad_y = g, where s is
// what the table says the derivative reads (x for Saves::Input, y for Saves::Output, 0 for Saves::Nothing).
// Binary<Op>::apply(a, b) = a op b. The primary templates have no definition: a table entry without its
// specialisation here is a compile error in backends/cuda/elementwise.cu, which instantiates every entry.
#pragma once

#include <cuda_runtime.h>

#include "backends/elementwise_ops.h"

namespace lora::cuda {

template <UnaryOp Op>
struct Unary;
template <BinaryOp Op>
struct Binary;

// ---------------------------------------------------------------------------------------------------
// Binary

template <>
struct Binary<BinaryOp::Add> {
  __device__ static float apply(float a, float b) { return a + b; }
};
template <>
struct Binary<BinaryOp::Sub> {
  __device__ static float apply(float a, float b) { return a - b; }
};
template <>
struct Binary<BinaryOp::Mul> {
  __device__ static float apply(float a, float b) { return a * b; }
};
template <>
struct Binary<BinaryOp::Div> {
  __device__ static float apply(float a, float b) { return a / b; }
};

// ---------------------------------------------------------------------------------------------------
// Unary: linear maps (the derivative reads nothing)

template <>
struct Unary<UnaryOp::Neg> {  // y = -x
  __device__ static float forward(float x, float) { return -x; }
  __device__ static float backward(float, float g, float) { return -g; }
};

template <>
struct Unary<UnaryOp::AddScalar> {  // y = x + alpha
  __device__ static float forward(float x, float alpha) { return x + alpha; }
  __device__ static float backward(float, float g, float) { return g; }
};

template <>
struct Unary<UnaryOp::MulScalar> {  // y = x * alpha
  __device__ static float forward(float x, float alpha) { return x * alpha; }
  __device__ static float backward(float, float g, float alpha) { return g * alpha; }
};

// ---------------------------------------------------------------------------------------------------
// Unary: functions (CUDA's expf, logf, tanhf are within 2 ulp)

template <>
struct Unary<UnaryOp::Exp> {  // y = e^x;  dy/dx = y
  __device__ static float forward(float x, float) { return expf(x); }
  __device__ static float backward(float y, float g, float) { return g * y; }
};

template <>
struct Unary<UnaryOp::Log> {  // y = ln x;  dy/dx = 1 / x
  __device__ static float forward(float x, float) { return logf(x); }
  __device__ static float backward(float x, float g, float) { return g / x; }
};

template <>
struct Unary<UnaryOp::Tanh> {  // y = tanh x;  dy/dx = 1 - y^2
  __device__ static float forward(float x, float) { return tanhf(x); }
  __device__ static float backward(float y, float g, float) { return g * (1.f - y * y); }
};

template <>
struct Unary<UnaryOp::Relu> {  // y = max(x, 0);  dy/dx = [x > 0]
  __device__ static float forward(float x, float) { return x > 0.f ? x : 0.f; }
  __device__ static float backward(float x, float g, float) { return x > 0.f ? g : 0.f; }
};

// GELU, tanh approximation: y = 0.5 x (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3);
// dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
template <>
struct Unary<UnaryOp::Gelu> {
  static constexpr float kSqrt2OverPi = 0.7978845608028654f;
  static constexpr float kCoeff = 0.044715f;
  // As on the CPU: 0.5 (1 + tanh u) written as sigmoid(2u), which does not cancel to 0 for large negative x.
  __device__ static float forward(float x, float) {
    return x / (1.f + expf(-2.f * kSqrt2OverPi * (x + kCoeff * x * x * x)));
  }
  __device__ static float backward(float x, float g, float) {
    const float x2 = x * x;
    const float s = 1.f / (1.f + expf(-2.f * kSqrt2OverPi * (x + kCoeff * x2 * x)));
    return g * (s + 2.f * x * s * (1.f - s) * kSqrt2OverPi * (1.f + 3.f * kCoeff * x2));
  }
};

// SiLU: y = x sigmoid(x) = x / (1 + e^-x);  dy/dx = s (1 + x (1 - s)), s = sigmoid(x).
template <>
struct Unary<UnaryOp::Silu> {
  __device__ static float forward(float x, float) { return x / (1.f + expf(-x)); }
  __device__ static float backward(float x, float g, float) {
    const float s = 1.f / (1.f + expf(-x));
    return g * s * (1.f + x * (1.f - s));
  }
};

template <>
struct Unary<UnaryOp::Square> {  // y = x^2;  dy/dx = 2x
  __device__ static float forward(float x, float) { return x * x; }
  __device__ static float backward(float x, float g, float) { return 2.f * x * g; }
};

template <>
struct Unary<UnaryOp::Sqrt> {  // y = sqrt x;  dy/dx = 1 / (2 y)
  __device__ static float forward(float x, float) { return sqrtf(x); }
  __device__ static float backward(float y, float g, float) { return g / (2.f * y); }
};

}  // namespace lora::cuda
