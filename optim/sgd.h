// SGD with optional momentum, dampening, L2 weight decay and Nesterov, PyTorch's formulation.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace lora::optim {

struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening 0
};

// g = grad + wd p; with momentum: buf = g on the first update, then buf = momentum buf + (1 - dampening) g,
// and g = nesterov ? g + momentum buf : buf; p -= lr g. A momentum buffer exists only when momentum != 0.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SgdOptions options = {}, std::vector<std::string> names = {});
  void step() override;
  const SgdOptions& options() const { return options_; }  // lr lives in Optimizer::lr()

 protected:
  std::string kind() const override { return "sgd"; }
  std::vector<std::string> buffer_names() const override;
  std::map<std::string, double> hyperparameters() const override;

 private:
  SgdOptions options_;
};

}  // namespace lora::optim
