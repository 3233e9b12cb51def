// Linear: y = x W^T + b, with W [out, in] (PyTorch's layout).
#pragma once

#include "nn/module.h"

namespace lora::nn {

class Linear : public Layer {
 public:
  // PyTorch's default initialisation: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override { return ops::linear(x, weight, bias); }

  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  Tensor weight;  // [out, in]
  Tensor bias;    // [out], or undefined
};

}  // namespace lora::nn
