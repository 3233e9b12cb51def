// all_finite: whether a tensor holds no inf and no nan, on any device (one reduction: a sum of squares in
// double is finite exactly when every float element is).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace lora {

bool all_finite(const Tensor& t);

// Throws lora::Error "<what>: tensor '<name>' holds inf or nan values" for the first such tensor.
void require_finite(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& what);

}  // namespace lora
