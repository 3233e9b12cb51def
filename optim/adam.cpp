// Adam / AdamW: hyperparameter checks and the step, one fused AdamUpdate kernel per parameter.
#include "optim/adam.h"

#include "backends/kernels/optimizer.h"
#include "core/error.h"

namespace lora::optim {

Adam::Adam(std::vector<Tensor> params, AdamOptions options, std::vector<std::string> names)
    : Adam(std::move(params), options, std::move(names), /*decoupled=*/false) {}

Adam::Adam(std::vector<Tensor> params, AdamOptions options, std::vector<std::string> names, bool decoupled)
    : Optimizer(std::move(params), options.lr, std::move(names)), options_(options), decoupled_(decoupled) {
  const char* name = decoupled ? "AdamW" : "Adam";
  LORA_CHECK(options.beta1 >= 0.0 && options.beta1 < 1.0, "{}: beta1 must be in [0, 1), got {}", name, options.beta1);
  LORA_CHECK(options.beta2 >= 0.0 && options.beta2 < 1.0, "{}: beta2 must be in [0, 1), got {}", name, options.beta2);
  LORA_CHECK(options.eps >= 0.0, "{}: eps must be >= 0, got {}", name, options.eps);
  LORA_CHECK(options.weight_decay >= 0.0, "{}: weight_decay must be >= 0, got {}", name, options.weight_decay);
}

void Adam::step() {
  AdamStep hp;
  hp.lr = lr_;
  hp.beta1 = options_.beta1;
  hp.beta2 = options_.beta2;
  hp.eps = options_.eps;
  hp.weight_decay = options_.weight_decay;
  hp.decoupled = decoupled_;
  for_each_update([&](Tensor& param, const Tensor& grad, ParamState& state) {
    hp.step = state.step;  // t counts from 1: already advanced for this update
    kernels::run<kernels::AdamUpdate>(param.device(), param, grad, state.buffers[0], state.buffers[1], hp);
  });
}

std::map<std::string, double> Adam::hyperparameters() const {
  return {{"beta1", options_.beta1},
          {"beta2", options_.beta2},
          {"eps", options_.eps},
          {"weight_decay", options_.weight_decay}};
}

}  // namespace lora::optim
