// CPU formulas of the elementwise table (backends/elementwise_ops.h), for T = float and double.
//
// Unary<Op>::forward(x, alpha) = y; Unary<Op>::backward(s, g, alpha) = grad_x for grad_y = g, where s is
// what the table says the derivative reads (x for Saves::Input, y for Saves::Output, 0 for Saves::Nothing).
// Binary<Op>::apply(a, b) = a op b. The primary templates have no definition: a table entry without its
// specialisation here is a compile error in backends/cpu/elementwise.cpp, which instantiates every entry.
// The loops that call these are plain and vectorisable; float exp goes through cpu::exp_f32 (fast_math.h).
#pragma once

#include <cmath>
#include <type_traits>

#include "backends/cpu/fast_math.h"
#include "backends/elementwise_ops.h"

namespace lora::cpu {

template <UnaryOp Op>
struct Unary;
template <BinaryOp Op>
struct Binary;

// ---------------------------------------------------------------------------------------------------
// Binary

template <>
struct Binary<BinaryOp::Add> {
  template <typename T>
  static T apply(T a, T b) {
    return a + b;
  }
};
template <>
struct Binary<BinaryOp::Sub> {
  template <typename T>
  static T apply(T a, T b) {
    return a - b;
  }
};
template <>
struct Binary<BinaryOp::Mul> {
  template <typename T>
  static T apply(T a, T b) {
    return a * b;
  }
};
template <>
struct Binary<BinaryOp::Div> {
  template <typename T>
  static T apply(T a, T b) {
    return a / b;
  }
};

// ---------------------------------------------------------------------------------------------------
// Unary: linear maps (the derivative reads nothing)

template <>
struct Unary<UnaryOp::Neg> {  // y = -x
  template <typename T>
  static T forward(T x, T) {
    return -x;
  }
  template <typename T>
  static T backward(T, T g, T) {
    return -g;
  }
};

template <>
struct Unary<UnaryOp::AddScalar> {  // y = x + alpha
  template <typename T>
  static T forward(T x, T alpha) {
    return x + alpha;
  }
  template <typename T>
  static T backward(T, T g, T) {
    return g;
  }
};

template <>
struct Unary<UnaryOp::MulScalar> {  // y = x * alpha
  template <typename T>
  static T forward(T x, T alpha) {
    return x * alpha;
  }
  template <typename T>
  static T backward(T, T g, T alpha) {
    return g * alpha;
  }
};

// ---------------------------------------------------------------------------------------------------
// Unary: functions

template <>
struct Unary<UnaryOp::Exp> {  // y = e^x;  dy/dx = y
  template <typename T>
  static T forward(T x, T) {
    return std::exp(x);
  }
  template <typename T>
  static T backward(T y, T g, T) {
    return g * y;
  }
};

template <>
struct Unary<UnaryOp::Log> {  // y = ln x;  dy/dx = 1 / x
  template <typename T>
  static T forward(T x, T) {
    return std::log(x);
  }
  template <typename T>
  static T backward(T x, T g, T) {
    return g / x;
  }
};

template <>
struct Unary<UnaryOp::Tanh> {  // y = tanh x;  dy/dx = 1 - y^2
  template <typename T>
  static T forward(T x, T) {
    return std::tanh(x);
  }
  template <typename T>
  static T backward(T y, T g, T) {
    return g * (T(1) - y * y);
  }
};

template <>
struct Unary<UnaryOp::Relu> {  // y = max(x, 0);  dy/dx = [x > 0]
  template <typename T>
  static T forward(T x, T) {
    return x > T(0) ? x : T(0);
  }
  template <typename T>
  static T backward(T x, T g, T) {
    return x > T(0) ? g : T(0);
  }
};

// GELU, tanh approximation (GPT-2): gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Computed as x * sigmoid(2u), the same function (0.5 (1 + tanh u) = 1 / (1 + e^-2u)): it does not cancel to 0
// for large negative x as 1 + tanh u does, and in float it is one vectorisable exp instead of glibc's scalar
// tanhf (which took 13% of a GPT-2 training step on one thread).
// d/dx gelu = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2);
// with s = sigmoid(2u) = 0.5 (1 + tanh u): 1 - tanh^2 u = 4 s (1 - s), so d/dx gelu = s + 2 x s (1 - s) du/dx.
template <>
struct Unary<UnaryOp::Gelu> {
  // e^v: the vectorisable exp in float, std::exp in double.
  template <typename T>
  static T exp_of(T v) {
    if constexpr (std::is_same_v<T, float>)
      return exp_f32(v);
    else
      return std::exp(v);
  }
  template <typename T>
  static T forward(T x, T) {
    const T k = T(0.7978845608028654);  // sqrt(2/pi)
    const T u = k * (x + T(0.044715) * x * x * x);
    return x / (T(1) + exp_of(T(-2) * u));
  }
  template <typename T>
  static T backward(T x, T g, T) {
    const T k = T(0.7978845608028654);
    const T u = k * (x + T(0.044715) * x * x * x);
    const T du = k * (T(1) + T(3 * 0.044715) * x * x);
    const T s = T(1) / (T(1) + exp_of(T(-2) * u));
    return g * (s + T(2) * x * s * (T(1) - s) * du);
  }
};

// SiLU (swish, Llama's MLP): y = x sigmoid(x) = x / (1 + e^-x);  dy/dx = s (1 + x (1 - s)), s = sigmoid(x).
template <>
struct Unary<UnaryOp::Silu> {
  template <typename T>
  static T forward(T x, T) {
    return x / (T(1) + fast_exp(-x));
  }
  template <typename T>
  static T backward(T x, T g, T) {
    const T s = T(1) / (T(1) + fast_exp(-x));
    return g * s * (T(1) + x * (T(1) - s));
  }
};

template <>
struct Unary<UnaryOp::Square> {  // y = x^2;  dy/dx = 2x
  template <typename T>
  static T forward(T x, T) {
    return x * x;
  }
  template <typename T>
  static T backward(T x, T g, T) {
    return g * T(2) * x;
  }
};

template <>
struct Unary<UnaryOp::Sqrt> {  // y = sqrt x;  dy/dx = 1 / (2 y)
  template <typename T>
  static T forward(T x, T) {
    return std::sqrt(x);
  }
  template <typename T>
  static T backward(T y, T g, T) {
    return g * T(0.5) / y;
  }
};

}  // namespace lora::cpu
