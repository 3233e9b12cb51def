// Which of OpenBLAS's kernel families this process runs (its DYNAMIC_ARCH build picks one per CPU at load
// time), for reports and benchmarks: "SkylakeX", "Haswell", ...
#pragma once

#include <string>
#include <string_view>

namespace lora {

std::string blas_kernel_family();

// The family to re-execute with when OpenBLAS chose `chosen` on a CPU with these instructions (AVX-512 F, BW,
// DQ and VL; AVX2 and FMA): "SkylakeX" when the choice uses no AVX-512 and the CPU has it, "Haswell" when it
// uses no AVX2 and the CPU has that, nullptr when the choice stands (blas_kernels.cpp says why).
const char* matching_kernel_family(std::string_view chosen, bool avx512, bool avx2_fma);
// The same for this CPU's instructions.
const char* better_kernel_family(std::string_view chosen);

// Empty, or a one-line notice when the environment's OPENBLAS_CORETYPE holds OpenBLAS to kernels below what
// this CPU runs (a user's setting is respected, never overridden; the notice says what it costs).
std::string blas_kernel_notice();

}  // namespace lora
