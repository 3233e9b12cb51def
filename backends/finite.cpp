// all_finite and require_finite through the backend's sum of squares.
#include "backends/finite.h"

#include <cmath>

#include "backends/backend.h"

namespace lora {

bool all_finite(const Tensor& t) {
  if (!t.defined() || t.numel() == 0 || !is_floating(t.dtype())) return true;
  return std::isfinite(backend_for(t).sum_squares(t));
}

void require_finite(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& what) {
  for (const auto& [name, t] : tensors) {
    LORA_CHECK(all_finite(t), "{}: tensor '{}' holds inf or nan values", what, name);
  }
}

}  // namespace lora
