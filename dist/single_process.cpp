// The single-process world (size 1), and world() for builds without MPI.
#include "dist/single_process.h"

#include <cstdlib>

namespace lora::dist {

[[noreturn]] void SingleProcess::abort(int code) {
  std::exit(code);
}

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_PROCID"}) {
    if (std::getenv(var)) return true;
  }
  return false;
}

#if !defined(LORA_HAVE_MPI)
Communicator& world(Device device) {
  static SingleProcess single;
  LORA_CHECK(
      !launched_by_mpi() ||
          [] {
            const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
            return size && std::string(size) == "1";
          }(),
      "this build has no MPI (install libopenmpi-dev and rebuild) but the program was started by mpirun with "
      "several ranks: each would train alone");
  return single;
}
bool built_with_mpi() {
  return false;
}
bool built_with_nccl() {
  return false;
}
#endif

}  // namespace lora::dist
