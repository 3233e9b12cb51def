// Which of OpenBLAS's kernel families this process runs (its DYNAMIC_ARCH build picks one per CPU at load
// time), for reports and benchmarks: "SkylakeX", "Haswell", ...
#pragma once

#include <string>

namespace lora {

std::string blas_kernel_family();

}  // namespace lora
