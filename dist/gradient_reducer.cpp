// GradientReducer: bucketed all-reduce of gradients, on a background thread as buckets become complete.
#include "dist/gradient_reducer.h"

#include <chrono>

#include "autograd/grad_mode.h"
#include "backends/backend.h"
#include "core/stopwatch.h"

namespace lora::dist {

GradientReducer::GradientReducer(Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), bucket_of_(params_.size()) {
  LORA_CHECK(bucket_bytes > 0, "GradientReducer: bucket size must be positive");
  // Reverse parameter order: backward produces the gradients of the last layers first.
  int64_t filled = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    LORA_CHECK(p.dtype() == DType::F32, "GradientReducer: parameter {} is {}, float32 expected", k,
               dtype_name(p.dtype()));
    if (buckets_.empty() || (filled > 0 && filled + int64_t(p.nbytes()) > bucket_bytes)) {
      buckets_.emplace_back();
      filled = 0;
    }
    Bucket& b = buckets_.back();
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    filled += int64_t(p.nbytes());
  }
  for (size_t k = 0; k < params_.size(); ++k) index_of_.emplace(params_[k].impl(), k);
  if (comm_.size() == 1) return;  // alone: nothing to reduce, no buffers, no thread
  for (Bucket& b : buckets_) {
    const int64_t n = b.offsets.back() + params_[b.params.back()].numel();
    b.buffer = Tensor::empty({n}, DType::F32, params_[b.params[0]].device(), MemoryCategory::Workspace);
    b.pending = b.params.size();
  }
  thread_ = std::thread([this] { worker(); });
}

GradientReducer::~GradientReducer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void GradientReducer::mark_ready(size_t index) {
  if (comm_.size() == 1 || index >= params_.size()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  Bucket& b = buckets_[bucket_of_[index]];
  if (b.pending > 0 && --b.pending == 0 && !b.queued) {
    b.queued = true;
    ++in_flight_;
    queue_.push_back(bucket_of_[index]);
    wake_.notify_one();
  }
}

void GradientReducer::mark_ready(const TensorImpl& leaf) {
  auto it = index_of_.find(&leaf);
  if (it != index_of_.end()) mark_ready(it->second);
}

void GradientReducer::reduce(Bucket& b) {
  NoGradGuard no_grad;
  // Pack: the bucket holds this rank's gradients back to back (zeros for a parameter without one).
  for (size_t j = 0; j < b.params.size(); ++j) {
    const Tensor& p = params_[b.params[j]];
    Tensor slot = b.buffer.narrow_rows(b.offsets[j], p.numel());
    const Tensor g = p.grad();
    if (g.defined())
      slot.copy_from(g.view({p.numel()}));
    else
      slot.zero_();
  }
  const auto t0 = std::chrono::steady_clock::now();
  comm_.all_reduce_sum(b.buffer);
  const double seconds = seconds_since(t0);
  // Unpack the average into each .grad.
  const double scale = 1.0 / comm_.size();
  for (size_t j = 0; j < b.params.size(); ++j) {
    Tensor p = params_[b.params[j]];
    Tensor g = p.grad();
    if (!g.defined()) {
      g = Tensor::empty(p.shape(), p.dtype(), p.device(), MemoryCategory::Gradient);
      p.set_grad(g);
    }
    Tensor flat = g.view({p.numel()});
    backend_for(flat).unary(UnaryOp::MulScalar, b.buffer.narrow_rows(b.offsets[j], p.numel()), flat, scale);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  current_.comm_seconds += seconds;
  current_.bytes += int64_t(b.buffer.nbytes());
  ++current_.buckets;
}

void GradientReducer::worker() {
  for (;;) {
    size_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
      index = queue_.front();
      queue_.pop_front();
    }
    reduce(buckets_[index]);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --in_flight_;
    }
    done_.notify_all();
  }
}

void GradientReducer::finish() {
  if (comm_.size() == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  {
    // Buckets never reported complete (no backward hook, or parameters without a gradient this step): now.
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < buckets_.size(); ++i) {
      if (!buckets_[i].queued) {
        buckets_[i].queued = true;
        ++in_flight_;
        queue_.push_back(i);
      }
    }
  }
  wake_.notify_one();
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return in_flight_ == 0; });
  current_.exposed_seconds = seconds_since(t0);
  last_ = current_;
  current_ = {};
  for (Bucket& b : buckets_) {
    b.pending = b.params.size();
    b.queued = false;
  }
}

}  // namespace lora::dist
