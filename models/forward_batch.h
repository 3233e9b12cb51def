// ForwardBatch: everything one forward pass of a causal LM is told, in one value. CausalLM::forward
// validates it once; nothing is set on the model around a call.
//
//   ids [B, T]        the tokens (I32/I64, on the model's device)
//   positions         each row from 0 (default), from a start per row, or given per token; with a KV cache,
//                     each row continues its cache slot (its positions start at the slot's length)
//   cache, slots      the KV cache and the slot each row reads and appends to (default: row b in slot b)
//   adapters          the adapter slot each row uses (-1: the base model) on a model serving many adapters
//   segments [B, T]   packed examples: attention stays inside a run of equal ids, positions restart at 0
//   logits            which positions need logits: all, the last of each row, none, or given positions
//
// Built with chained setters:
//
//   model.forward(ForwardBatch(ids));                                    // logits [B, T, V]
//   model.forward(ForwardBatch(ids).with_cache(cache).last_logits());    // logits [B, V], cache advanced
//   model.forward(ForwardBatch(ids).with_cache(pool, {3, 0}).with_adapters({1, -1}).last_logits());
//   model.loss(ForwardBatch(ids).with_segments(segments), targets);      // packed training examples
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "nn/attention.h"

namespace lora::models {

// Which positions the head computes logits for, and the shape forward returns.
enum class LogitRows {
  All,    // every position: [B, T, V]
  Last,   // the last position of each row (a prompt's next token): [B, V]
  None,   // none (a prompt run only to fill the cache): an undefined Tensor
  Given,  // the flat positions b * T + t in logit_positions, in that order: [N, V]
};

struct ForwardBatch {
  Tensor ids;  // [B, T], I32 or I64

  // Positions (empty: each row from 0). At most one of starts, positions and segments; none with a cache.
  std::vector<int64_t> starts;     // [B]: row b's tokens are at positions starts[b], starts[b] + 1, ...
  std::vector<int64_t> positions;  // [B * T]: each token's position, row-major

  // KV cache (inference only): row b appends its tokens to slot slots[b] after the lengths[slot] tokens
  // cached there; the slot's length grows by T when the pass succeeds.
  nn::KVCache* cache = nullptr;
  std::vector<int64_t> slots;  // [B], distinct; empty: row b uses slot b (the cache then has B slots)

  std::vector<int32_t> adapters;  // [B]: adapter slot per row (-1: base); empty: every row the base model
  std::vector<int32_t> segments;  // [B * T]: packed examples, one run of equal ids each; empty: one per row

  LogitRows logits = LogitRows::All;
  std::vector<int64_t> logit_positions;  // with LogitRows::Given

  ForwardBatch() = default;
  explicit ForwardBatch(Tensor token_ids) : ids(std::move(token_ids)) {}

  ForwardBatch& with_starts(std::vector<int64_t> row_starts) { return starts = std::move(row_starts), *this; }
  ForwardBatch& with_positions(std::vector<int64_t> p) { return positions = std::move(p), *this; }
  ForwardBatch& with_cache(nn::KVCache& kv, std::vector<int64_t> row_slots = {}) {
    cache = &kv;
    slots = std::move(row_slots);
    return *this;
  }
  ForwardBatch& with_adapters(std::vector<int32_t> row_adapters) { return adapters = std::move(row_adapters), *this; }
  ForwardBatch& with_segments(std::vector<int32_t> ids_of_segments) {
    segments = std::move(ids_of_segments);
    return *this;
  }
  ForwardBatch& last_logits() { return logits = LogitRows::Last, *this; }
  ForwardBatch& no_logits() { return logits = LogitRows::None, *this; }
  ForwardBatch& logits_at(std::vector<int64_t> flat_positions) {
    logits = LogitRows::Given;
    logit_positions = std::move(flat_positions);
    return *this;
  }

  int64_t batch() const { return ids.rank() == 2 ? ids.size(0) : 0; }
  int64_t time() const { return ids.rank() == 2 ? ids.size(1) : 0; }
};

}  // namespace lora::models
