// SGD: hyperparameter checks and the step, one fused SgdUpdate kernel per parameter.
#include "optim/sgd.h"

#include "backends/kernels/optimizer.h"
#include "core/error.h"

namespace lora::optim {

SGD::SGD(std::vector<Tensor> params, SgdOptions options, std::vector<std::string> names)
    : Optimizer(std::move(params), options.lr, std::move(names)), options_(options) {
  LORA_CHECK(options.momentum >= 0.0, "SGD: momentum must be >= 0, got {}", options.momentum);
  LORA_CHECK(options.weight_decay >= 0.0, "SGD: weight_decay must be >= 0, got {}", options.weight_decay);
  LORA_CHECK(!options.nesterov || (options.momentum > 0.0 && options.dampening == 0.0),
             "SGD: nesterov needs momentum > 0 and dampening 0 (got momentum {}, dampening {})", options.momentum,
             options.dampening);
}

std::vector<std::string> SGD::buffer_names() const {
  if (options_.momentum == 0.0) return {};  // plain SGD keeps no state
  return {"momentum_buffer"};
}

void SGD::step() {
  SgdStep hp;
  hp.lr = lr_;
  hp.momentum = options_.momentum;
  hp.dampening = options_.dampening;
  hp.weight_decay = options_.weight_decay;
  hp.nesterov = options_.nesterov;
  Tensor no_buffer;
  for_each_update([&](Tensor& param, const Tensor& grad, ParamState& state) {
    hp.first_step = state.step == 1;  // the buffer starts as g instead of decaying zeros
    Tensor& buffer = state.buffers.empty() ? no_buffer : state.buffers[0];
    kernels::run<kernels::SgdUpdate>(param.device(), param, grad, buffer, hp);
  });
}

std::map<std::string, double> SGD::hyperparameters() const {
  return {{"momentum", options_.momentum},
          {"dampening", options_.dampening},
          {"weight_decay", options_.weight_decay},
          {"nesterov", options_.nesterov ? 1.0 : 0.0}};
}

}  // namespace lora::optim
