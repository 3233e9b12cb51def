// OpenBLAS's kernel family: which one a process re-executes with (backends/cpu/blas_kernels.cpp), and that
// this test process itself runs kernels that match its CPU.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <strings.h>
#include <string>

#include "backends/cpu/blas_kernels.h"

using namespace lora;

namespace {
std::string or_none(const char* family) {
  return family ? family : "(stands)";
}
}  // namespace

TEST_CASE("blas kernels: a choice below the CPU's instructions is raised, a matching one stands", "[blas]") {
  // An AVX-512 CPU: generic kernels (what Debian 12's OpenBLAS gives a Sapphire Rapids Xeon) and AVX2 ones.
  CHECK(or_none(matching_kernel_family("Prescott", true, true)) == "SkylakeX");
  CHECK(or_none(matching_kernel_family("Haswell", true, true)) == "SkylakeX");
  CHECK(or_none(matching_kernel_family("Zen", true, true)) == "SkylakeX");
  CHECK(or_none(matching_kernel_family("Sandybridge", true, true)) == "SkylakeX");
  // An AVX2 CPU: generic kernels are raised to Haswell; Haswell and Zen are its best.
  CHECK(or_none(matching_kernel_family("Prescott", false, true)) == "Haswell");
  CHECK(or_none(matching_kernel_family("Sandybridge", false, true)) == "Haswell");
  CHECK(or_none(matching_kernel_family("Haswell", false, true)) == "(stands)");
  CHECK(or_none(matching_kernel_family("Zen", false, true)) == "(stands)");
  // AVX-512 families are never lowered, nor is anything raised on a CPU without AVX2.
  CHECK(or_none(matching_kernel_family("SkylakeX", true, true)) == "(stands)");
  CHECK(or_none(matching_kernel_family("Cooperlake", true, true)) == "(stands)");
  CHECK(or_none(matching_kernel_family("SapphireRapids", true, true)) == "(stands)");
  CHECK(or_none(matching_kernel_family("Prescott", false, false)) == "(stands)");
  // Names OpenBLAS may add later, or other architectures' families, are left alone.
  CHECK(or_none(matching_kernel_family("Unknown", true, true)) == "(stands)");
  CHECK(or_none(matching_kernel_family("NEOVERSEN1", true, true)) == "(stands)");
  CHECK(or_none(matching_kernel_family("", true, true)) == "(stands)");
}

TEST_CASE("blas kernels: this process runs the family its CPU allows", "[blas]") {
  const char* user = std::getenv("LORA_BLAS_REEXEC");
  if (user != nullptr && std::strcmp(user, "0") == 0) return;  // turned off: OpenBLAS's own choice stands
  // Either the process re-executed itself with OPENBLAS_CORETYPE (a user's own is respected too), or OpenBLAS
  // chose a family that nothing would be raised from.
  const std::string running = blas_kernel_family();
  INFO("OpenBLAS runs " << running);
  if (const char* set = std::getenv("OPENBLAS_CORETYPE"); set != nullptr) {
    // Set by the user (always respected) or by the re-execution: either way, it is what runs.
    CHECK(strcasecmp(set, running.c_str()) == 0);
    return;
  }
  CHECK(better_kernel_family(running) == nullptr);
}
