// Text generation with a KV cache: greedy (temperature 0), temperature, top-k and top-p sampling, seeded.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "models/causal_lm.h"

namespace lora::models {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens (0 = all)
  double top_p = 1.0;        // keep the smallest set whose probability reaches p (1 = all)
  uint64_t seed = 0;
  // Generation stops after emitting one of these; empty: the model's end-of-sequence tokens
  // (CausalLM::eos_token_ids). stop_at_eos = false never stops early.
  std::vector<int64_t> stop_tokens;
  bool stop_at_eos = true;
  void validate() const;
};

// Picks the next token from one row of logits [vocab]. Its scratch (candidates, probabilities) is kept per
// thread, so that a decode step's sampling allocates nothing once it has run at a vocabulary's size.
int32_t sample_token(std::span<const float> logits, const SamplingOptions& options, Generator& gen);

// Continues `prompt` (at least one token) with up to max_new_tokens tokens, stopping after a stop token
// or at the model's context length. Returns the new tokens only. `on_token` sees each as it comes.
std::vector<int32_t> generate(CausalLM& model, const std::vector<int32_t>& prompt, const SamplingOptions& options,
                              const std::function<void(int32_t)>& on_token = {});

}  // namespace lora::models
