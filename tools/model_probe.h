// A model's logits on a fixed short token sequence: what a program compares before and after a change that must
// not alter the function (merge_lora's merge, quantize's write and read back).
#pragma once

#include <vector>

#include "models/causal_lm.h"

namespace lora::tools {

// Logits [T, V] of min(16, context) fixed ids spread over the vocabulary, flattened.
std::vector<float> probe_logits(models::CausalLM& model);

}  // namespace lora::tools
