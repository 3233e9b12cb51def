// RowAdapters: the per-row adapter slots of one forward pass, expanded to token rows.
#include "nn/row_adapters.h"

#include "core/error.h"

namespace lora::nn {

RowAdapters::RowAdapters(int64_t slots) : slots_(slots) {
  LORA_CHECK(slots > 0, "adapters: {} slots (expected at least one)", slots);
}

RowAdapters::Scope::Scope(RowAdapters& adapters, const std::vector<int32_t>& rows) : adapters_(adapters) {
  bool any = false;
  for (size_t i = 0; i < rows.size(); ++i) {
    LORA_CHECK(rows[i] >= -1 && rows[i] < adapters.slots_, "adapters: row {} names slot {}, outside [-1, {})", i,
               rows[i], adapters.slots_);
    any = any || rows[i] >= 0;
  }
  adapters.rows_ = rows;
  adapters.any_ = any;
}

RowAdapters::Scope::~Scope() {
  adapters_.rows_.clear();
  adapters_.any_ = false;
}

const Tensor& RowAdapters::token_slots(int64_t n, Device device) {
  const int64_t B = static_cast<int64_t>(rows_.size());
  LORA_CHECK(B > 0 && n % B == 0, "adapters: {} token rows do not split into the {} batch rows of the pass", n, B);
  if (rows_ != built_rows_ || !tokens_.defined() || tokens_.numel() != n || tokens_.device() != device) {
    const int64_t per_row = n / B;
    std::vector<int32_t> slots(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) slots[static_cast<size_t>(i)] = rows_[static_cast<size_t>(i / per_row)];
    tokens_ = Tensor::from_vector(slots, {n}).to(device);
    built_rows_ = rows_;
  }
  return tokens_;
}

}  // namespace lora::nn
