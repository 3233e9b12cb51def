// NCCL for CUDA tensors (one GPU per rank), bootstrapped over MPI: rank 0 makes NCCL's unique id and MPI
// broadcasts it. Operations run on the legacy default stream, where the CUDA backend launches its
// kernels, so they are ordered with them; each waits for completion (the timing figures need it).
#if defined(LORA_HAVE_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>

#include "dist/communicator.h"

namespace lora::dist {
namespace {

void check_nccl(ncclResult_t rc, const char* what) {
  LORA_CHECK(rc == ncclSuccess, "NCCL {} failed: {}", what, ncclGetErrorString(rc));
}
void check_cuda(cudaError_t rc, const char* what) {
  LORA_CHECK(rc == cudaSuccess, "CUDA {} failed: {}", what, cudaGetErrorString(rc));
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& mpi, Device device) : mpi_(mpi), device_(device) {
    check_cuda(cudaSetDevice(device.index), "set device");
    ncclUniqueId id;
    if (mpi.rank() == 0) check_nccl(ncclGetUniqueId(&id), "get unique id");
    static_assert(sizeof(id) % sizeof(int32_t) == 0);
    Tensor bytes = Tensor::zeros({int64_t(sizeof(id) / sizeof(int32_t))}, DType::I32);
    if (mpi.rank() == 0) std::memcpy(bytes.raw_data(), &id, sizeof(id));
    mpi.broadcast(bytes, 0);
    std::memcpy(&id, bytes.raw_data(), sizeof(id));
    check_nccl(ncclCommInitRank(&comm_, mpi.size(), id, mpi.rank()), "init");
  }
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }
  int rank() const override { return mpi_.rank(); }
  int size() const override { return mpi_.size(); }
  std::string engine() const override { return "NCCL"; }

  void all_reduce_sum(Tensor& t) override {
    LORA_CHECK(t.device() == device_ && t.dtype() == DType::F32, "NCCL all-reduce: expected a float32 tensor on {}",
               device_.str());
    check_cuda(cudaSetDevice(device_.index), "set device");
    check_nccl(ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), ncclFloat, ncclSum, comm_, nullptr),
               "all-reduce");
    check_cuda(cudaStreamSynchronize(nullptr), "synchronize");
  }
  void broadcast(Tensor& t, int root) override {
    LORA_CHECK(t.device() == device_, "NCCL broadcast: expected a tensor on {}", device_.str());
    check_cuda(cudaSetDevice(device_.index), "set device");
    check_nccl(ncclBroadcast(t.raw_data(), t.raw_data(), t.nbytes(), ncclChar, root, comm_, nullptr), "broadcast");
    check_cuda(cudaStreamSynchronize(nullptr), "synchronize");
  }
  std::vector<std::string> all_gather(const std::string& text) override { return mpi_.all_gather(text); }
  double all_reduce_sum(double value) override { return mpi_.all_reduce_sum(value); }
  [[noreturn]] void abort(int code) override {
    ncclCommAbort(comm_);
    mpi_.abort(code);
    std::abort();  // not reached: MPI_Abort ends the job (the interface cannot promise that to the compiler)
  }

 private:
  Communicator& mpi_;
  Device device_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, Device device) {
  return std::make_unique<NcclCommunicator>(mpi, device);
}

}  // namespace lora::dist
#endif  // LORA_HAVE_NCCL
