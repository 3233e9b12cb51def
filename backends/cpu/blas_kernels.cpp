// Making sure OpenBLAS runs the kernels this CPU can run.
//
// OpenBLAS's DYNAMIC_ARCH build chooses its kernels (sgemm and the rest) when it is loaded, before main,
// from the CPU's family and model numbers, or from $OPENBLAS_CORETYPE when that is set. Debian 12's
// OpenBLAS (0.3.21) does not know the CPUs that came after it, and can guess low: recent Intel server CPUs
// (Sapphire Rapids and later) get its generic "Prescott" SSE3 kernels, and sgemm runs 3-4x slower than it can
// (a SmolLM2-135M LoRA step, one thread: 6.0 CPU s with Prescott, 1.76 with SkylakeX). A CPU with AVX-512
// that it maps to its AVX2 families (Haswell, Zen) loses about half: a 2048^3 sgemm on a 2-core AMD Zen 5,
// Haswell kernels forced, ran at 201-217 GFLOP/s against 374-427 with SkylakeX (there OpenBLAS chose its
// AVX-512 Cooperlake kernels by itself).
// The choice cannot be changed once the library is loaded, so when OpenBLAS chose kernels below what the
// CPU's instructions allow, the process re-executes itself once, before main, with OPENBLAS_CORETYPE set to
// the family those instructions match (SkylakeX for AVX-512, Haswell for AVX2). The program, its arguments,
// its environment and its process id stay the same (an MPI rank remains the same rank).
//
// A user's own OPENBLAS_CORETYPE is always respected, and LORA_BLAS_REEXEC=0 turns this off.
#include "backends/cpu/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>

#include "backends/cpu/skinny_matmul.h"

namespace lora {

std::string blas_kernel_family() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

const char* matching_kernel_family(std::string_view chosen, bool avx512, bool avx2_fma) {
  // OpenBLAS's x86-64 families that use no AVX-512 (the names openblas_get_corename() gives).
  constexpr std::string_view kBelowAvx512[] = {"Prescott", "Core2",    "Penryn",  "Dunnington", "Nehalem",
                                               "Sandybridge", "Haswell", "Zen",   "Atom",       "Barcelona",
                                               "Opteron",  "Bobcat",   "Bulldozer", "Piledriver", "Steamroller",
                                               "Excavator"};
  constexpr std::string_view kBelowAvx2[] = {"Prescott", "Core2",   "Penryn",    "Dunnington", "Nehalem", "Sandybridge",
                                             "Atom",     "Barcelona", "Opteron", "Bobcat",     "Bulldozer"};
  auto in = [&](const auto& names) { return std::find(std::begin(names), std::end(names), chosen) != std::end(names); };
  if (avx512 && in(kBelowAvx512)) return "SkylakeX";
  if (avx2_fma && in(kBelowAvx2)) return "Haswell";
  return nullptr;
}

const char* better_kernel_family(std::string_view chosen) {
  // The skinny product's detection: AVX-512 means F, BW, DQ and VL (what OpenBLAS's SkylakeX kernels use),
  // AVX2 means AVX2 with FMA; both include the OS's support for the registers.
  return matching_kernel_family(chosen, cpu::isa_supported(cpu::Isa::AVX512), cpu::isa_supported(cpu::Isa::AVX2));
}

std::string blas_kernel_notice() {
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  const char* better = better_kernel_family(blas_kernel_family());
  if (set == nullptr || better == nullptr) return "";
  return std::string("notice: OPENBLAS_CORETYPE=") + set + " holds OpenBLAS to its " + blas_kernel_family() +
         " kernels; this CPU runs its " + better + " ones, with faster matrix products " +
         "(docs/performance.md measures the difference): unset it to let the programs choose";
}

namespace {

// glibc calls the functions of .init_array with (argc, argv, envp). Shared libraries (OpenBLAS among them)
// are initialised before the program's own constructors, so OpenBLAS has made its choice by now.
void reexec_with_matching_blas_kernels(int argc, char** argv, char** /*envp*/) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // set by the user, or by the re-execution
  if (const char* off = std::getenv("LORA_BLAS_REEXEC"); off != nullptr && std::strcmp(off, "0") == 0) return;
  const char* chosen = openblas_get_corename();
  const char* family = chosen ? better_kernel_family(chosen) : nullptr;
  if (family == nullptr || argc < 1 || argv == nullptr) return;
  if (setenv("OPENBLAS_CORETYPE", family, 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when execv failed: go on with the slow kernels, correct results, and say so.
  std::fprintf(stderr,
               "warning: OpenBLAS chose its %s kernels on this CPU and re-running with "
               "OPENBLAS_CORETYPE=%s failed (%s); matrix products will be slower than the CPU allows\n",
               openblas_get_corename(), family, std::strerror(errno));
  unsetenv("OPENBLAS_CORETYPE");
}

__attribute__((section(".init_array"), used)) void (*const reexec_entry)(int, char**,
                                                                         char**) = &reexec_with_matching_blas_kernels;

}  // namespace
}  // namespace lora
