// The MPI world (CPU tensors) and, when built with NCCL, the NCCL communicator for CUDA tensors.
#if defined(LORA_HAVE_MPI)
#include <mpi.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "dist/single_process.h"

namespace lora::dist {
namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  LORA_FAIL("MPI {} failed: {}", what, std::string(text, length));
}

class MpiWorld final : public Communicator {
 public:
  MpiWorld() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Serialized: the gradient reducer's thread and the main thread never call MPI at the same time.
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "init");
      LORA_CHECK(provided >= MPI_THREAD_SERIALIZED, "this MPI offers thread level {}, lora.cpp needs SERIALIZED",
                 provided);
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    // Errors come back as codes (turned into lora::Error) instead of aborting inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return "MPI"; }

  void all_reduce_sum(Tensor& t) override {
    LORA_CHECK(t.device().is_cpu() && t.dtype() == DType::F32, "MPI all-reduce: expected a float32 CPU tensor, got {}",
               t.str(0));
    for (int64_t done = 0, n = t.numel(); done < n;) {  // MPI counts are int
      const int count = static_cast<int>(std::min<int64_t>(n - done, int64_t{1} << 30));
      check(MPI_Allreduce(MPI_IN_PLACE, t.data<float>() + done, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
            "all-reduce");
      done += count;
    }
  }
  void broadcast(Tensor& t, int root) override {
    LORA_CHECK(t.device().is_cpu(), "MPI broadcast: expected a CPU tensor");
    auto* bytes = static_cast<char*>(t.raw_data());
    for (int64_t done = 0, n = static_cast<int64_t>(t.nbytes()); done < n;) {
      const int count = static_cast<int>(std::min<int64_t>(n - done, int64_t{1} << 30));
      check(MPI_Bcast(bytes + done, count, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
      done += count;
    }
  }
  std::vector<std::string> all_gather(const std::string& text) override {
    const int length = static_cast<int>(text.size());
    std::vector<int> lengths(static_cast<size_t>(size_)), offsets(lengths.size());
    check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD), "all-gather");
    int total = 0;
    for (size_t i = 0; i < lengths.size(); ++i) offsets[i] = total, total += lengths[i];
    std::string all(static_cast<size_t>(total), '\0');
    check(MPI_Allgatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                         MPI_COMM_WORLD),
          "all-gather");
    std::vector<std::string> out;
    for (size_t i = 0; i < lengths.size(); ++i) out.push_back(all.substr(size_t(offsets[i]), size_t(lengths[i])));
    return out;
  }
  double all_reduce_sum(double value) override {
    double sum = 0;
    check(MPI_Allreduce(&value, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "all-reduce");
    return sum;
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

#if defined(LORA_HAVE_NCCL)
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, Device device);
#endif

Communicator& world(Device device) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  static SingleProcess single;
  if (!launched_by_mpi()) return single;
  static MpiWorld mpi;
  if (!device.is_cuda()) return mpi;
#if defined(LORA_HAVE_NCCL)
  static std::map<int, std::unique_ptr<Communicator>> nccl;
  auto& c = nccl[device.index];
  if (!c) c = make_nccl_communicator(mpi, device);
  return *c;
#else
  LORA_CHECK(mpi.size() == 1, "data-parallel training on CUDA needs NCCL, which this build does not have");
  return mpi;
#endif
}

bool built_with_mpi() {
  return true;
}
bool built_with_nccl() {
#if defined(LORA_HAVE_NCCL)
  return true;
#else
  return false;
#endif
}

}  // namespace lora::dist
#endif  // LORA_HAVE_MPI
