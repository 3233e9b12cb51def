// Adam (L2 weight decay folded into the gradient) and AdamW (decoupled weight decay), PyTorch's formulation.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace lora::optim {

// Note: weight_decay defaults to 0 for both; PyTorch's AdamW defaults to 0.01, so pass it explicitly.
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// Per parameter: step count t, exp_avg m and exp_avg_sq v (same shape and dtype as the parameter).
//   g = grad (+ wd p for Adam)                m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd) for AdamW               p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options = {}, std::vector<std::string> names = {});
  void step() override;
  const AdamOptions& options() const { return options_; }  // lr lives in Optimizer::lr()

 protected:
  Adam(std::vector<Tensor> params, AdamOptions options, std::vector<std::string> names, bool decoupled);
  std::string kind() const override { return decoupled_ ? "adamw" : "adam"; }
  std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::map<std::string, double> hyperparameters() const override;

 private:
  AdamOptions options_;
  bool decoupled_;
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamOptions options = {}, std::vector<std::string> names = {})
      : Adam(std::move(params), options, std::move(names), /*decoupled=*/true) {}
};

}  // namespace lora::optim
