// DType: the element types a tensor can hold, their sizes and names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lora {

// F32 is the training type. F64 exists for the CPU reference paths (double-precision gradient checks).
// I32/I64 hold token ids and targets. F16/BF16 are storage types for loading checkpoints and for the GPU.
enum class DType : uint8_t { F32, F64, I32, I64, F16, BF16 };

constexpr size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::F64:
      return 8;
    case DType::I32:
      return 4;
    case DType::I64:
      return 8;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "float32";
    case DType::F64:
      return "float64";
    case DType::I32:
      return "int32";
    case DType::I64:
      return "int64";
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
  }
  return "?";
}

constexpr bool is_floating(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F64;
}
constexpr bool is_integer(DType dtype) {
  return dtype == DType::I32 || dtype == DType::I64;
}

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::F64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::I32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::I64;
}

}  // namespace lora
