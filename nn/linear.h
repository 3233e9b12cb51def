// Linear: y = x W^T + b, with W [out, in] (PyTorch's layout).
#pragma once

#include "nn/module.h"

namespace lora::nn {

class Linear : public Layer {
 public:
  // PyTorch's default initialisation: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override { return ops::linear(x, weight, bias); }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  // False for a frozen layer whose weight is held quantized (nn/quantized_linear.h): `weight` is then
  // undefined, and nothing may write into it (LoRA's merge, a full fine-tune).
  bool has_dense_weight() const { return weight.defined(); }

  Tensor weight;  // [out, in], or undefined when quantized
  Tensor bias;    // [out], or undefined

 protected:
  // For a subclass that keeps the weight in another form.
  Linear(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}

 private:
  int64_t in_features_ = 0, out_features_ = 0;
};

}  // namespace lora::nn
