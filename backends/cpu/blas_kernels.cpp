// Making sure OpenBLAS runs the kernels this CPU can run.
//
// OpenBLAS's DYNAMIC_ARCH build chooses its kernels (sgemm and the rest) when it is loaded, before main,
// from the CPU's family and model numbers, or from $OPENBLAS_CORETYPE when that is set. Debian 12's
// OpenBLAS (0.3.21) does not know recent Intel server CPUs (Sapphire Rapids and later) and falls back to
// its generic "Prescott" SSE3 kernels: on such a CPU sgemm runs 3-4x slower than it can, and so does every
// training step (measured: a SmolLM2-135M LoRA step, one thread, 6.0 CPU s with Prescott, 1.76 CPU s with
// SkylakeX). The choice cannot be changed once the library is loaded, so when OpenBLAS chose Prescott on a
// CPU with AVX-512 or AVX2, the process re-executes itself once, before main, with OPENBLAS_CORETYPE set
// to the family those instructions match (SkylakeX or Haswell). The program, its arguments, its
// environment and its process id stay the same (an MPI rank remains the same rank).
//
// A user's own OPENBLAS_CORETYPE is always respected, and LORA_BLAS_REEXEC=0 turns this off.
#include "backends/cpu/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace lora {

std::string blas_kernel_family() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

namespace {

// The kernel family matching this CPU's instructions, or nullptr when OpenBLAS's own choice stands.
const char* better_kernel_family() {
  const char* chosen = openblas_get_corename();
  if (chosen == nullptr || std::strcmp(chosen, "Prescott") != 0) return nullptr;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

// glibc calls the functions of .init_array with (argc, argv, envp). Shared libraries (OpenBLAS among them)
// are initialised before the program's own constructors, so OpenBLAS has made its choice by now.
void reexec_with_matching_blas_kernels(int argc, char** argv, char** /*envp*/) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // set by the user, or by the re-execution
  if (const char* off = std::getenv("LORA_BLAS_REEXEC"); off != nullptr && std::strcmp(off, "0") == 0) return;
  const char* family = better_kernel_family();
  if (family == nullptr || argc < 1 || argv == nullptr) return;
  if (setenv("OPENBLAS_CORETYPE", family, 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when execv failed: go on with the slow kernels, correct results, and say so.
  std::fprintf(stderr,
               "warning: OpenBLAS chose its generic Prescott kernels on this CPU and re-running with "
               "OPENBLAS_CORETYPE=%s failed (%s); matrix products will be slower than the CPU allows\n",
               family, std::strerror(errno));
  unsetenv("OPENBLAS_CORETYPE");
}

__attribute__((section(".init_array"), used)) void (*const reexec_entry)(int, char**,
                                                                         char**) = &reexec_with_matching_blas_kernels;

}  // namespace
}  // namespace lora
