// GradientReducer: averages the trainable gradients over the ranks of a data-parallel job, between
// backward and clipping / the optimizer step, so that every replica takes the same step:
//   g_i = (1 / N) sum over ranks r of g_i^(r)
// Gradients are packed into flat buckets of about `bucket_bytes` (parameters in reverse order: backward
// completes the last layers first) and each bucket is all-reduced in one call. When the autograd engine
// reports each gradient as complete (mark_ready), a full bucket is reduced at once on a background thread
// while backward goes on; finish() reduces what is left and waits. The figures of the last step (bytes,
// time in communication, the share of it hidden behind backward) feed the memory report.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dist/communicator.h"

namespace lora::dist {

class GradientReducer {
 public:
  GradientReducer(Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes = int64_t(25) << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Parameter `index`'s gradient is complete for this step (called by the backward hook).
  void mark_ready(size_t index);
  // The same, by the parameter's storage identity, as the autograd grad-ready hook reports it; a leaf
  // that is not one of the reduced parameters is ignored.
  void mark_ready(const TensorImpl& leaf);
  // Reduces every bucket not reduced yet, waits for all, and leaves the averages in each .grad (a
  // parameter without a gradient on this rank gets one). A no-op with one rank.
  void finish();

  struct StepFigures {
    int64_t bytes = 0;  // gradient bytes all-reduced per step
    int64_t buckets = 0;
    double comm_seconds = 0;     // time inside the all-reduce calls
    double exposed_seconds = 0;  // time finish() waited: the communication backward did not hide
    double hidden_share() const { return comm_seconds > 0 ? std::max(0.0, 1.0 - exposed_seconds / comm_seconds) : 0.0; }
  };
  const StepFigures& last_step() const { return last_; }
  Communicator& communicator() const { return comm_; }
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    std::vector<int64_t> offsets;
    Tensor buffer;       // [elements] on the parameters' device
    size_t pending = 0;  // gradients not yet ready this step
    bool queued = false;
  };
  void reduce(Bucket& bucket);  // pack, all-reduce, unpack the average
  void worker();

  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<size_t> bucket_of_;                           // param -> bucket
  std::unordered_map<const TensorImpl*, size_t> index_of_;  // param storage -> index into params_
  std::vector<Bucket> buckets_;
  StepFigures last_, current_;

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::deque<size_t> queue_;
  size_t in_flight_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace lora::dist
