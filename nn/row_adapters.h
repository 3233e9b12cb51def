// RowAdapters: which adapter slot each batch row of the forward pass running now uses, on a model that
// serves many LoRA adapters at once (serve/adapter_set.h). The model owns one (CausalLM::row_adapters);
// the MultiLoRALinear layers (serve/multi_lora.h) read it; CausalLM::forward sets it from its ForwardBatch
// for the length of the call (Scope) and nothing else does. Outside a call, or for a batch that names no
// adapters, every row uses the base model.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lora::nn {

class RowAdapters {
 public:
  explicit RowAdapters(int64_t slots);
  int64_t slots() const { return slots_; }

  // The rows of the pass running now (one slot per batch row, -1: the base model); empty: every row base.
  const std::vector<int32_t>& rows() const { return rows_; }
  bool any() const { return any_; }  // some row names an adapter
  // The slot of each of the n token rows of x [B, ..., in] (n / B tokens per batch row), int32 [n] on
  // `device`; rebuilt only when the rows, n or the device change.
  const Tensor& token_slots(int64_t n, Device device);

  // Sets the rows for one forward pass and puts "every row base" back when it ends (also on an exception).
  // Each entry must be in [-1, slots).
  class Scope {
   public:
    Scope(RowAdapters& adapters, const std::vector<int32_t>& rows);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    RowAdapters& adapters_;
  };

 private:
  int64_t slots_;
  std::vector<int32_t> rows_;
  bool any_ = false;
  std::vector<int32_t> built_rows_;  // the rows tokens_ was built for
  Tensor tokens_;                    // int32 [n]
};

}  // namespace lora::nn
