// Linear layer construction.
#include "nn/linear.h"

#include <cmath>

namespace lora::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool has_bias, Generator& gen)
    : in_features_(in_features), out_features_(out_features) {
  LORA_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got in {} out {}", in_features,
             out_features);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = Tensor::uniform({out_features, in_features}, gen, -bound, bound);
  register_parameter("weight", weight);
  if (has_bias) {
    bias = Tensor::uniform({out_features}, gen, -bound, bound);
    register_parameter("bias", bias);
  }
}

}  // namespace lora::nn
