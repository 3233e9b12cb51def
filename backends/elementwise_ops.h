// The elementwise ops, defined once. This table drives the UnaryOp and BinaryOp enums, both backends'
// dispatch (a switch generated from it instantiates each entry's formula, so a backend that lacks one does
// not compile), what each derivative reads, and the tests that walk every entry. Plain C++ that nvcc also
// compiles: no fmt, no std beyond <cstdint>.
//
// A new elementwise op: one line here, its formula in backends/cpu/elementwise_formulas.h and in
// backends/cuda/elementwise_formulas.cuh, and its named function in autograd/ops.h (docs/adding-an-op.md).
#pragma once

#include <cstdint>

// X(Name, name, saves, domain): y = f(x; alpha) (alpha: the scalar of the scalar ops, unused otherwise).
//   saves:  what the derivative reads besides grad_y: Nothing, Input (x) or Output (y)
//   domain: where the tests draw inputs: Real (|x| in [0.1, 2], both signs: away from kinks at 0) or Positive
#define LORA_UNARY_OPS(X)                 \
  X(Neg, neg, Nothing, Real)              \
  X(AddScalar, add_scalar, Nothing, Real) \
  X(MulScalar, mul_scalar, Nothing, Real) \
  X(Exp, exp, Output, Real)               \
  X(Log, log, Input, Positive)            \
  X(Tanh, tanh, Output, Real)             \
  X(Relu, relu, Input, Real)              \
  X(Gelu, gelu, Input, Real)              \
  X(Silu, silu, Input, Real)              \
  X(Square, square, Input, Real)          \
  X(Sqrt, sqrt, Output, Positive)

// X(Name, name, grad_a_reads, grad_b_reads): out = a op b (numpy broadcasting). The derivatives are composed
// from binary kernels in autograd/ops/elementwise.cpp; the last two columns say which of a, b and out each
// reads (ReadsA | ReadsB | ReadsOut), so that the op saves exactly those.
#define LORA_BINARY_OPS(X)    \
  X(Add, add, 0, 0)           \
  X(Sub, sub, 0, 0)           \
  X(Mul, mul, ReadsB, ReadsA) \
  X(Div, div, ReadsB, ReadsB | ReadsOut)

namespace lora {

enum class UnaryOp : uint8_t {
#define LORA_X(Name, name, saves, domain) Name,
  LORA_UNARY_OPS(LORA_X)
#undef LORA_X
};

enum class BinaryOp : uint8_t {
#define LORA_X(Name, name, grad_a, grad_b) Name,
  LORA_BINARY_OPS(LORA_X)
#undef LORA_X
};

enum class Saves : uint8_t { Nothing, Input, Output };
enum class TestDomain : uint8_t { Real, Positive };

struct UnaryInfo {
  UnaryOp op;
  const char* name;
  Saves saves;
  TestDomain domain;
};

// What a binary derivative reads (bit set).
enum : uint8_t { ReadsA = 1, ReadsB = 2, ReadsOut = 4 };

struct BinaryInfo {
  BinaryOp op;
  const char* name;
  uint8_t grad_a_reads, grad_b_reads;
};

inline constexpr UnaryInfo kUnaryOps[] = {
#define LORA_X(Name, name, saves, domain) {UnaryOp::Name, #name, Saves::saves, TestDomain::domain},
    LORA_UNARY_OPS(LORA_X)
#undef LORA_X
};
inline constexpr BinaryInfo kBinaryOps[] = {
#define LORA_X(Name, name, grad_a, grad_b) {BinaryOp::Name, #name, grad_a, grad_b},
    LORA_BINARY_OPS(LORA_X)
#undef LORA_X
};
inline constexpr int kNumUnaryOps = sizeof(kUnaryOps) / sizeof(kUnaryOps[0]);
inline constexpr int kNumBinaryOps = sizeof(kBinaryOps) / sizeof(kBinaryOps[0]);

constexpr const UnaryInfo& unary_info(UnaryOp op) {
  return kUnaryOps[static_cast<int>(op)];
}
constexpr const BinaryInfo& binary_info(BinaryOp op) {
  return kBinaryOps[static_cast<int>(op)];
}

// Throws lora::Error for a value outside the enum (only a corrupted or cast value can get here).
[[noreturn]] void throw_invalid_op(const char* kind, int value);

// f.template operator()<UnaryOp::Name>() for the runtime `op`: how a backend turns the op into a template
// argument. The switch is generated from the table and has no default, so every entry is instantiated.
template <typename F>
decltype(auto) visit_unary(UnaryOp op, F&& f) {
  switch (op) {
#define LORA_X(Name, name, saves, domain) \
  case UnaryOp::Name:                     \
    return f.template operator()<UnaryOp::Name>();
    LORA_UNARY_OPS(LORA_X)
#undef LORA_X
  }
  throw_invalid_op("UnaryOp", static_cast<int>(op));
}

template <typename F>
decltype(auto) visit_binary(BinaryOp op, F&& f) {
  switch (op) {
#define LORA_X(Name, name, grad_a, grad_b) \
  case BinaryOp::Name:                     \
    return f.template operator()<BinaryOp::Name>();
    LORA_BINARY_OPS(LORA_X)
#undef LORA_X
  }
  throw_invalid_op("BinaryOp", static_cast<int>(op));
}

}  // namespace lora
