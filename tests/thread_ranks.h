// Ranks of a data-parallel job as threads of one process: a dist::Communicator over shared memory, for
// tests of what every rank computes without mpirun. Each collective is a barrier; sums run in rank order,
// so every rank gets the same bits. Every rank must make the same calls in the same order (as with MPI).
#pragma once

#include <barrier>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "dist/communicator.h"

namespace lora::testing {

class ThreadRanks {
 public:
  explicit ThreadRanks(int size) : size_(size), barrier_(size), slots_(size_t(size)), texts_(size_t(size)) {}

  // Runs body(comm) on `size` threads, one rank each, and waits for them; rethrows the first failure.
  void run(const std::function<void(dist::Communicator&)>& body) {
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      threads.emplace_back([&, r] {
        Rank comm(*this, r);
        try {
          body(comm);
        } catch (...) {
          errors[size_t(r)] = std::current_exception();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
  }

 private:
  class Rank : public dist::Communicator {
   public:
    Rank(ThreadRanks& ranks, int rank) : ranks_(ranks), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return ranks_.size_; }
    std::string engine() const override { return "threads"; }
    void all_reduce_sum(Tensor& t) override {
      LORA_CHECK(t.device().is_cpu() && t.dtype() == DType::F32, "thread ranks: CPU float32 tensors only");
      auto* data = static_cast<float*>(t.raw_data());
      ranks_.slots_[size_t(rank_)] = data;
      ranks_.barrier_.arrive_and_wait();
      std::vector<float> sum(size_t(t.numel()), 0.0f);
      for (int r = 0; r < ranks_.size_; ++r) {
        const float* other = static_cast<const float*>(ranks_.slots_[size_t(r)]);
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += other[i];
      }
      ranks_.barrier_.arrive_and_wait();  // every rank has read every buffer
      std::copy(sum.begin(), sum.end(), data);
      ranks_.barrier_.arrive_and_wait();
    }
    void broadcast(Tensor& t, int root) override {
      ranks_.slots_[size_t(rank_)] = t.raw_data();
      ranks_.barrier_.arrive_and_wait();
      if (rank_ != root) std::memcpy(t.raw_data(), ranks_.slots_[size_t(root)], size_t(t.nbytes()));
      ranks_.barrier_.arrive_and_wait();
    }
    std::vector<std::string> all_gather(const std::string& text) override {
      ranks_.texts_[size_t(rank_)] = text;
      ranks_.barrier_.arrive_and_wait();
      std::vector<std::string> all = ranks_.texts_;
      ranks_.barrier_.arrive_and_wait();
      return all;
    }
    double all_reduce_sum(double value) override {
      double mine = value;
      ranks_.slots_[size_t(rank_)] = &mine;
      ranks_.barrier_.arrive_and_wait();
      double sum = 0;
      for (int r = 0; r < ranks_.size_; ++r) sum += *static_cast<const double*>(ranks_.slots_[size_t(r)]);
      ranks_.barrier_.arrive_and_wait();
      return sum;
    }
    [[noreturn]] void abort(int code) override { std::abort(); }

   private:
    ThreadRanks& ranks_;
    int rank_;
  };

  int size_;
  std::barrier<> barrier_;
  std::vector<void*> slots_;
  std::vector<std::string> texts_;
};

}  // namespace lora::testing
