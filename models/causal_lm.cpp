// CausalLM: what every model shares: the forward pass and the loss over a ForwardBatch (the layer loop of
// every architecture), its device, KV caches, Hugging Face state, LoRA targets.
#include "models/causal_lm.h"

#include <optional>

#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/ops/quantized_linear.h"
#include "nn/checkpoint.h"
#include "nn/linear.h"

namespace lora::models {

Device CausalLM::device() const {
  const auto params = named_parameters();
  return params.empty() ? Device::cpu() : params.front().second.device();
}

std::vector<int64_t> CausalLM::eos_token_ids() const {
  const int64_t eos = eos_token_id();
  return eos >= 0 ? std::vector<int64_t>{eos} : std::vector<int64_t>{};
}

nn::KVCache CausalLM::make_kv_cache(int64_t slots, int64_t capacity) const {
  const ModelDims d = dims();
  if (capacity <= 0) capacity = d.context_length;
  LORA_CHECK(capacity <= d.context_length, "{}: a KV cache of {} tokens exceeds the context length {}", model_type(),
             capacity, d.context_length);
  return nn::KVCache::allocate(d.n_layer, slots, d.n_kv_head, capacity, d.head_dim, device());
}

// ---------------------------------------------------------------------------------------------------
// The forward pass

ForwardPlan CausalLM::plan(const ForwardBatch& batch) const {
  const ModelDims d = dims();
  const std::string type = model_type();
  const ModelLimits limits{type.c_str(), d.context_length, d.n_layer,
                           d.n_kv_head,  d.head_dim,       row_adapters_ ? row_adapters_->slots() : 0};
  return plan_forward(batch, limits, rotary());
}

Tensor CausalLM::run_blocks(const ForwardBatch& batch, const ForwardPlan& plan) {
  Tensor x = embed(batch.ids, plan.positions);  // [B, T, hidden]
  const int64_t n_layer = dims().n_layer;
  for (int64_t i = 0; i < n_layer; ++i) {
    DecoderBlock* b = &block(i);
    if (batch.cache) {
      x = b->forward(x, {plan.pass, &batch.cache->layers[static_cast<size_t>(i)]});
    } else {  // training: checkpointed when CheckpointMode is on (the closure outlives this call)
      x = nn::checkpoint_block(
          *b, [b, ctx = BlockContext{plan.pass, nullptr}](const Tensor& h) { return b->forward(h, ctx); }, x);
    }
  }
  return x;
}

void CausalLM::quantize_inference_head(QuantFormat format) {
  if (compact_head()) {  // read as it is
    inference_head_ = nullptr;
    return;
  }
  inference_head_ = format == QuantFormat::F32
                        ? nullptr
                        : std::make_shared<const QuantizedWeight>(quantize_weight(head_weight(), format));
}

Tensor CausalLM::forward(const ForwardBatch& batch) {
  const ForwardPlan p = plan(batch);
  std::optional<nn::RowAdapters::Scope> adapters;  // the rows' adapters, for this pass only
  if (row_adapters_) adapters.emplace(*row_adapters_, batch.adapters);
  const Tensor h = run_blocks(batch, p);  // [B, T, hidden]
  advance_cache(batch, p);
  const int64_t B = p.batch, T = p.time, C = h.size(2);
  auto head = [&](const Tensor& x) { return head_logits(x); };
  switch (batch.logits) {
    case LogitRows::None:
      return Tensor();
    case LogitRows::All:
      return head(final_norm(h));
    case LogitRows::Last:
      if (T == 1) return head(final_norm(ops::reshape(h, {B, C})));
      break;
    case LogitRows::Given:
      break;
  }
  // Only the rows asked for go through the norm and the head.
  return head(final_norm(gather_rows(ops::reshape(h, {B * T, C}), p.logit_rows)));
}

Tensor CausalLM::loss(const ForwardBatch& batch, const Tensor& targets) {
  LORA_CHECK(targets.defined() && targets.shape() == batch.ids.shape(), "{} loss: targets {} do not match ids {}",
             model_type(), targets.defined() ? targets.shape().str() : "(none)", batch.ids.shape().str());
  LORA_CHECK(batch.logits == LogitRows::All && !batch.cache,
             "{} loss: the batch must ask for every position's logits and have no KV cache (the loss picks the "
             "trained positions itself)",
             model_type());
  const ForwardPlan p = plan(batch);
  std::optional<nn::RowAdapters::Scope> adapters;
  if (row_adapters_) adapters.emplace(*row_adapters_, batch.adapters);
  const Tensor h = run_blocks(batch, p);  // [B, T, hidden]
  // The trained positions (targets != -100). When a good part of the batch is not trained (masked
  // prompts, padding), only the trained rows go through the norm, the head and the loss: the same mean,
  // without the [untrained, V] logits. The meta device has no targets to read: every row, an upper bound.
  const int64_t N = p.batch * p.time, C = h.size(2);
  if (targets.device().type != DeviceType::Meta) {
    const std::vector<int64_t> t = targets.to(Device::cpu()).to(DType::I64).to_vector<int64_t>();
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < N; ++i)
      if (t[static_cast<size_t>(i)] != -100) rows.push_back(i);
    const int64_t n = static_cast<int64_t>(rows.size());
    if (n > 0 && 8 * n <= 7 * N) {  // an eighth or more untrained: worth the gather
      std::vector<int64_t> kept(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) kept[static_cast<size_t>(i)] = t[static_cast<size_t>(rows[i])];
      const Tensor h_trained = gather_rows(ops::reshape(h, {N, C}), rows);  // [n, C]
      return head_loss(final_norm(h_trained), Tensor::from_vector(kept, {n}, targets.device()));
    }
  }
  // The head and the loss as one op: the logits and their gradient share one buffer.
  return head_loss(final_norm(h), targets);
}

Tensor CausalLM::head_logits(const Tensor& x) const {
  if (inference_head_) return ops::quantized_linear(x, inference_head_, Tensor());
  if (const auto compact = compact_head()) return ops::quantized_linear(x, compact, Tensor());
  return ops::linear(x, head_weight());
}

Tensor CausalLM::head_loss(const Tensor& x, const Tensor& targets) const {
  if (const auto compact = compact_head()) return ops::linear_cross_entropy(x, compact, targets);
  return ops::linear_cross_entropy(x, head_weight(), targets);
}

std::string CausalLM::hf_name(const std::string& parameter_name) const {
  std::string name = parameter_name;
  for (size_t at; (at = name.find(".base_layer.")) != std::string::npos;) name.erase(at, 11);
  return name;
}

std::vector<std::pair<std::string, Tensor>> CausalLM::hf_state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  NoGradGuard no_grad;
  for (auto& [name, param] : named_parameters()) {
    if (name.find(".lora_") != std::string::npos) continue;  // adapters are saved on their own
    const std::string hf = hf_name(name);
    if (hf.empty()) continue;
    out.emplace_back(hf, hf_transposed(hf) ? ops::transpose(param, 0, 1) : param);
  }
  return out;
}

std::vector<nn::LoRATarget> CausalLM::lora_targets() const {
  std::vector<nn::LoRATarget> targets = declared_lora_targets();
  // PEFT's "all-linear": every linear layer except the output head.
  nn::LoRATarget all{"all-linear", "every linear layer except the output head", {}};
  const std::string head = output_head_path();
  for (const auto& [path, module] : named_modules()) {
    if (!std::dynamic_pointer_cast<nn::Linear>(module) || path == head) continue;
    if (path.ends_with(".base_layer")) continue;
    all.sites.push_back({path, {}});
  }
  targets.push_back(std::move(all));
  return targets;
}

}  // namespace lora::models
