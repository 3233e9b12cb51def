// SingleProcess: the world of a process that is not part of an MPI job (size 1; collectives change nothing).
#pragma once

#include "dist/communicator.h"

namespace lora::dist {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string engine() const override { return "single process"; }
  void all_reduce_sum(Tensor&) override {}
  void broadcast(Tensor&, int) override {}
  std::vector<std::string> all_gather(const std::string& text) override { return {text}; }
  double all_reduce_sum(double value) override { return value; }
  [[noreturn]] void abort(int code) override;
};

}  // namespace lora::dist
