// Held-out loss over fixed batches.
#include "train/evaluate.h"

#include "autograd/grad_mode.h"
#include "core/error.h"

namespace lora::train {

double evaluate_loss(models::CausalLM& model, const std::vector<HostBatch>& batches, Device device) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double weighted = 0;
  int64_t tokens = 0;
  for (const HostBatch& host : batches) {
    if (host.trained_tokens == 0) continue;
    const Batch b = host.to_batch(device);
    weighted += model.loss(b.ids, b.targets).item() * double(b.trained_tokens);
    tokens += b.trained_tokens;
  }
  model.train(was_training);
  LORA_CHECK(tokens > 0, "the held-out data has no trained token");
  return weighted / double(tokens);
}

}  // namespace lora::train
