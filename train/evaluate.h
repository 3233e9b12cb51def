// Held-out loss: the mean next-token loss over every trained token of a fixed set of batches (the same
// batches at every evaluation, so the figures of a run compare), in eval mode (no dropout), without a tape.
#pragma once

#include <vector>

#include "models/causal_lm.h"
#include "train/batch.h"

namespace lora::train {

// sum over batches of (mean loss x trained tokens) / all trained tokens. The model's mode is restored.
// Throws lora::Error when the batches hold no trained token.
double evaluate_loss(models::CausalLM& model, const std::vector<HostBatch>& batches, Device device);

}  // namespace lora::train
