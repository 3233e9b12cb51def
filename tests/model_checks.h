// Checks every causal LM must pass, shared by the per-model tests: agreement with a reference dump made
// by transformers (tests/fixtures/make_*_fixture.py), and KV-cache decoding equal to the full forward.
#pragma once

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/causal_lm.h"
#include "models/generate.h"
#include "tests/test_helpers.h"

namespace lora::testing {

// expected.safetensors holds input_ids, targets (-100: ignored), logits, loss, grad.<HF name> (in HF's
// layout) for some parameters, prompt_ids and greedy_ids. Logits and loss within 1e-4 relative to their
// scale, gradients within 1e-3, greedy tokens exactly, on whatever device the model is. Returns the number
// of gradients checked.
inline int check_against_reference(models::CausalLM& model, const std::string& expected_path) {
  const SafeTensorsFile expected = SafeTensorsFile::open(expected_path);
  const Tensor ids = expected.load("input_ids", DType::I64, model.device());
  const Tensor targets = expected.load("targets", DType::I64, model.device());

  for (auto& [name, p] : model.named_parameters()) p.set_grad(Tensor());
  Tensor logits = model.forward(ids);
  REQUIRE(logits.device() == model.device());
  require_close_scaled(logits, expected.load("logits"), 1e-4);
  Tensor loss = ops::cross_entropy(logits, targets);
  REQUIRE(loss.item() == Approx(expected.load("loss").item()).epsilon(1e-4));
  backward(loss);

  int checked = 0;
  for (const std::string& key : expected.names()) {
    if (key.rfind("grad.", 0) != 0) continue;
    const std::string hf = key.substr(5);
    INFO("gradient of " << hf);
    Tensor grad;
    for (auto& [name, p] : model.named_parameters()) {
      if (model.hf_name(name) == hf) grad = p.grad();
    }
    REQUIRE(grad.defined());
    if (model.hf_transposed(hf)) grad = ops::transpose(grad, 0, 1);  // to HF's [in, out]
    require_close_scaled(grad, expected.load(key), 1e-3);
    ++checked;
  }

  const std::vector<int32_t> prompt = expected.load("prompt_ids", DType::I32).to_vector<int32_t>();
  const std::vector<int32_t> greedy = expected.load("greedy_ids", DType::I32).to_vector<int32_t>();
  models::SamplingOptions options;
  options.temperature = 0.0;
  options.max_new_tokens = static_cast<int64_t>(greedy.size());
  options.stop_at_eos = false;
  REQUIRE(models::generate(model, prompt, options) == greedy);
  return checked;
}

// The logits of decoding `tokens` incrementally (a prompt of `prompt` tokens, then one at a time) equal
// those of one full forward pass, within float32 rounding.
inline void check_kv_cache_matches_forward(models::CausalLM& model, const std::vector<int32_t>& tokens, size_t prompt) {
  NoGradGuard no_grad;
  model.eval();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const Tensor full = model.forward(Tensor::from_vector(tokens, {1, n}));  // [1, n, V]
  nn::KVCache cache = model.make_kv_cache(1, n);
  const std::vector<int32_t> head(tokens.begin(), tokens.begin() + static_cast<int64_t>(prompt));
  const models::ForwardBatch prompt_batch(Tensor::from_vector(head, {1, static_cast<int64_t>(prompt)}));
  Tensor prefix = model.forward(models::ForwardBatch(prompt_batch).with_cache(cache));
  require_close(prefix, ops::slice(full, 1, 0, static_cast<int64_t>(prompt)), 1e-4, 1e-5);
  for (int64_t t = static_cast<int64_t>(prompt); t < n; ++t) {
    const Tensor token = Tensor::from_vector(std::vector<int32_t>{tokens[t]}, {1, 1});
    Tensor step = model.forward(models::ForwardBatch(token).with_cache(cache));
    require_close(step, ops::slice(full, 1, t, t + 1), 1e-4, 1e-5);
  }
  REQUIRE(cache.length(0) == n);
}

}  // namespace lora::testing
