// The shared layer runner: what every architecture's forward pass has in common, so that an architecture
// file holds its config, its weights' names and its block, and nothing else. From a validated ForwardBatch
// the runner works out each token's position (rows, starts, segments, cache slots), the attention layout
// (cache slots, segment masks) and the rotary tables once per pass, runs the embedding, the blocks
// (checkpointed when CheckpointMode is on) and the final norm, and advances the cache.
//
// An architecture provides (CausalLM's protected hooks): embed(ids, positions), block(i) (a DecoderBlock),
// final_norm(h), head_weight(), and rotary() when its attention is rotary.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/forward_batch.h"
#include "nn/attention.h"
#include "nn/module.h"
#include "nn/rotary.h"

namespace lora::models {

// The positions of one pass's tokens: [T] when every row has the same ones (shared), else [B * T].
struct TokenPositions {
  std::vector<int64_t> values;
  bool shared = true;
  int64_t batch = 0, time = 0;
  // I64 [T] (shared) or [B, T] on `device`: the ids a learned position embedding looks up.
  Tensor tensor(Device device) const;
};

// What every block of one pass reads besides its input, built once per pass.
struct PassInputs {
  nn::AttentionLayout attention;
  nn::RotaryTables rotary;  // cos and sin for the tokens' positions; empty unless the architecture is rotary
};

// One block's view of the pass: the pass's inputs and its own layer of the KV cache (null without one).
// Cheap to copy: a checkpointed block keeps it for the recomputation in backward. The default context is
// a block run on its own: no cache, no segments, no rotary tables.
struct BlockContext {
  std::shared_ptr<const PassInputs> pass;
  nn::KVCache::Layer* cache = nullptr;
  const nn::AttentionLayout& attention() const { return pass ? pass->attention : none().attention; }
  const nn::RotaryTables& rotary() const { return pass ? pass->rotary : none().rotary; }

 private:
  static const PassInputs& none() {
    static const PassInputs empty;
    return empty;
  }
};

// A transformer block of an architecture: x [B, T, hidden] -> [B, T, hidden]. Its attention calls
// nn::causal_self_attention(q, k, v, ctx.attention(), ctx.cache, ...) and, when rotary,
// nn::apply_rotary(heads, ctx.rotary()).
class DecoderBlock : public nn::Module {
 public:
  virtual Tensor forward(const Tensor& x, const BlockContext& ctx) = 0;
};

// A ForwardBatch checked against the model once, with everything derived from it.
struct ForwardPlan {
  int64_t batch = 0, time = 0;
  TokenPositions positions;
  std::shared_ptr<PassInputs> pass;
  std::vector<int64_t> logit_rows;  // flat rows b * T + t the head runs on (LogitRows::Last and Given)
};

// What the plan needs to know of the model.
struct ModelLimits {
  const char* model;  // its model_type, for errors
  int64_t context_length, n_layer, n_kv_head, head_dim;
  int64_t adapter_slots;  // 0: the model serves no adapters
};

// Validates `batch` (shapes, positions inside the context, cache slots and room, segments, adapters,
// logit positions) and derives the plan. Throws lora::Error naming the field and what was expected.
ForwardPlan plan_forward(const ForwardBatch& batch, const ModelLimits& limits, const nn::RotaryEmbedding* rotary);

// Every row's slot length grows by T: the tokens of the pass are cached.
void advance_cache(const ForwardBatch& batch, const ForwardPlan& plan);

// Rows `rows` of x [N, C] as [rows.size(), C], differentiable in x (the gradient scatters back).
Tensor gather_rows(const Tensor& x, const std::vector<int64_t>& rows);

}  // namespace lora::models
