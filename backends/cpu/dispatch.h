// Helpers of every CPU kernel: the float/double dispatch and reading integer ids.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace lora {

// Runs `body.template operator()<T>()` with T = float or double according to `dtype`; other dtypes throw
// a lora::Error naming the kernel.
template <typename Body>
void dispatch_floating(DType dtype, const char* kernel, Body&& body) {
  switch (dtype) {
    case DType::F32:
      body.template operator()<float>();
      break;
    case DType::F64:
      body.template operator()<double>();
      break;
    default:
      LORA_FAIL("{}: unsupported dtype {} (expected float32 or float64)", kernel, dtype_name(dtype));
  }
}

// Reads the integer id `i` of an I32 or I64 tensor.
inline int64_t read_index(const Tensor& ids, int64_t i) {
  return ids.dtype() == DType::I32 ? static_cast<int64_t>(static_cast<const int32_t*>(ids.raw_data())[i])
                                   : static_cast<const int64_t*>(ids.raw_data())[i];
}

}  // namespace lora
