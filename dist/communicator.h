// Communicator: how the processes of a data-parallel job talk. One process per rank (launched by mpirun);
// every rank holds a replica of the model and the collective operations keep them identical:
//   all_reduce_sum  every rank's buffer becomes the elementwise sum over ranks (gradients)
//   broadcast       every rank's buffer becomes root's (initial weights)
//   all_gather      every rank learns every rank's short text (start-up consistency checks)
// Without mpirun (or in a build without MPI) the communicator is the single process itself: size 1, and
// every operation leaves the data as it is. CPU tensors go through MPI; CUDA tensors through NCCL where it
// is built (bootstrapped over MPI).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lora::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string engine() const = 0;  // "single process", "MPI", "NCCL"

  // In place over the whole (contiguous, float32) tensor.
  virtual void all_reduce_sum(Tensor& t) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  // Collects a short text from every rank, in rank order (host memory; used outside hot loops).
  virtual std::vector<std::string> all_gather(const std::string& text) = 0;
  // Sums one number over ranks (losses, counts).
  virtual double all_reduce_sum(double value) = 0;
  // Ends the whole job from one rank (an error on this rank must not leave the others waiting forever).
  [[noreturn]] virtual void abort(int code) = 0;
};

// The world of this process: MPI's when launched by mpirun in a build with MPI (initialised on first use;
// call it before starting threads), else the single process. `device` picks the engine for tensors: MPI
// for the CPU, NCCL for CUDA (one GPU per rank: the caller puts rank r on cuda:(r % GPUs)).
Communicator& world(Device device = Device::cpu());

// Whether this process was started by an MPI launcher (mpirun / srun), whatever the build.
bool launched_by_mpi();

// Whether this build can run data-parallel over MPI (and over NCCL for CUDA tensors).
bool built_with_mpi();
bool built_with_nccl();

}  // namespace lora::dist
