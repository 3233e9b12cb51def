// Sampling and the incremental decoding loop.
#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "core/step_arena.h"

namespace lora::models {

void SamplingOptions::validate() const {
  LORA_CHECK(max_new_tokens >= 0, "--max-new-tokens {}: expected a non-negative count", max_new_tokens);
  LORA_CHECK(temperature >= 0 && std::isfinite(temperature), "--temperature {}: expected a finite value >= 0",
             temperature);
  LORA_CHECK(top_k >= 0, "--top-k {}: expected a non-negative count", top_k);
  LORA_CHECK(top_p > 0 && top_p <= 1, "--top-p {}: expected a value in (0, 1]", top_p);
}

int32_t sample_token(std::span<const float> logits, const SamplingOptions& o, Generator& gen) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (o.temperature == 0.0) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates sorted by logit, cut to top-k.
  thread_local std::vector<int32_t> order;
  thread_local std::vector<double> probs;
  order.resize(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  order.resize(static_cast<size_t>(k));
  // p_i = softmax(logit_i / temperature) over the candidates
  probs.resize(order.size());
  const double max_logit = logits[order[0]];
  double total = 0.0;
  for (size_t i = 0; i < order.size(); ++i)
    total += probs[i] = std::exp((logits[order[i]] - max_logit) / o.temperature);
  for (double& p : probs) p /= total;
  // top-p: the smallest prefix whose mass reaches p.
  size_t keep = probs.size();
  if (o.top_p < 1.0) {
    double mass = 0.0;
    for (size_t i = 0; i < probs.size(); ++i) {
      mass += probs[i];
      if (mass >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_mass = 0.0;
  for (size_t i = 0; i < keep; ++i) kept_mass += probs[i];
  double u = gen.uniform() * kept_mass;
  for (size_t i = 0; i < keep; ++i) {
    if ((u -= probs[i]) <= 0.0) return order[i];
  }
  return order[keep - 1];
}

std::vector<int32_t> generate(CausalLM& model, const std::vector<int32_t>& prompt, const SamplingOptions& options,
                              const std::function<void(int32_t)>& on_token) {
  options.validate();
  LORA_CHECK(!prompt.empty(), "generate: the prompt is empty (give at least one token)");
  const ModelDims dims = model.dims();
  const int64_t context = dims.context_length, V = dims.vocab_size;
  LORA_CHECK(static_cast<int64_t>(prompt.size()) <= context, "generate: the prompt has {} tokens, the context is {}",
             prompt.size(), context);
  for (int32_t id : prompt)
    LORA_CHECK(id >= 0 && id < V, "generate: prompt token {} is outside the vocabulary [0, {})", id, V);

  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  Generator gen(options.seed);
  const Device device = model.device();
  const std::vector<int64_t> stop = !options.stop_at_eos          ? std::vector<int64_t>{}
                                    : options.stop_tokens.empty() ? model.eos_token_ids()
                                                                  : options.stop_tokens;
  // Room for the prompt and every new token, not the whole context (Llama 3's is 131072 tokens).
  nn::KVCache cache = model.make_kv_cache(
      1,
      std::min<int64_t>(context, static_cast<int64_t>(prompt.size()) + std::max<int64_t>(options.max_new_tokens, 1)));
  std::vector<int32_t> out;

  // The decode steps' tensors come from one buffer sized by the first of them (core/step_arena.h); the prompt's
  // step, of another size, goes to the allocator.
  StepArena arena;
  int64_t position = static_cast<int64_t>(prompt.size());
  while (static_cast<int64_t>(out.size()) < options.max_new_tokens) {
    std::optional<StepArena::Scope> in_arena;  // declared first: it closes after the step's tensors are gone
    Tensor ids;
    if (out.empty()) {
      ids = Tensor::from_vector(prompt, {1, static_cast<int64_t>(prompt.size())}, device);
    } else {
      in_arena.emplace(arena);
      ids = Tensor::from_vector(std::vector<int32_t>{out.back()}, {1, 1}, device);
      ++position;
    }
    // The prompt, then each new token, appended to the cache; logits of the last position only: [1, V].
    Tensor logits = model.forward(ForwardBatch(ids).with_cache(cache).last_logits()).to(Device::cpu());
    if (logits.dtype() != DType::F32) logits = logits.to(DType::F32);
    const int32_t next = sample_token(std::span<const float>(logits.data<float>(), static_cast<size_t>(V)), options, gen);
    out.push_back(next);
    if (on_token) on_token(next);
    if (std::find(stop.begin(), stop.end(), next) != stop.end() || position >= context) break;
  }
  model.train(was_training);
  return out;
}

}  // namespace lora::models
