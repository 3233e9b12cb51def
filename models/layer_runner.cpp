// The layer runner's planning: a ForwardBatch validated once against the model, and what every layer of
// the pass shares derived from it (positions, attention layout, rotary tables).
#include "models/layer_runner.h"

#include <algorithm>

#include "autograd/ops.h"
#include "core/error.h"

namespace lora::models {

Tensor TokenPositions::tensor(Device device) const {
  return shared ? Tensor::from_vector(values, {time}, device) : Tensor::from_vector(values, {batch, time}, device);
}

namespace {

// Rows that all hold the same T values collapse to one row of T.
TokenPositions from_per_token(std::vector<int64_t> values, int64_t B, int64_t T) {
  bool same = true;
  for (int64_t b = 1; b < B && same; ++b) {
    same = std::equal(values.begin() + b * T, values.begin() + (b + 1) * T, values.begin());
  }
  if (same) values.resize(static_cast<size_t>(T));
  return {std::move(values), same, B, T};
}

// Row b's tokens at starts[b], starts[b] + 1, ...: [B * T].
std::vector<int64_t> from_starts(const std::vector<int64_t>& starts, int64_t B, int64_t T) {
  std::vector<int64_t> values(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) values[static_cast<size_t>(b * T + t)] = starts[static_cast<size_t>(b)] + t;
  return values;
}

// A row's real tokens: lengths[b], or T.
int64_t row_length(const ForwardBatch& batch, int64_t b) {
  return batch.lengths.empty() ? batch.time() : batch.lengths[static_cast<size_t>(b)];
}

// The cache slots of the rows: distinct, inside the cache, with room for T more tokens within the context.
void plan_cache(const ForwardBatch& batch, const ModelLimits& m, nn::AttentionLayout& layout) {
  const nn::KVCache& cache = *batch.cache;
  const int64_t B = batch.batch(), T = batch.time();
  LORA_CHECK(batch.starts.empty() && batch.positions.empty() && batch.segments.empty(),
             "{}: a batch with a KV cache continues each row's cache slot (its positions start at the slot's "
             "length): it takes no starts, positions or segments",
             m.model);
  LORA_CHECK(static_cast<int64_t>(cache.layers.size()) == m.n_layer && !cache.layers.empty(),
             "{}: a KV cache of {} layers for a model of {}", m.model, cache.layers.size(), m.n_layer);
  const Tensor& k = cache.layers[0].k;
  LORA_CHECK(k.rank() == 4 && k.size(1) == m.n_kv_head && k.size(3) == m.head_dim && k.size(0) == cache.slots(),
             "{}: a KV cache of {} with {} slot lengths does not fit the model ({} key/value heads of {})", m.model,
             k.shape().str(), cache.slots(), m.n_kv_head, m.head_dim);
  if (batch.slots.empty()) {
    LORA_CHECK(cache.slots() == B, "{}: the KV cache has {} slots for a batch of {} rows (name a slot per row)",
               m.model, cache.slots(), B);
    for (int64_t b = 0; b < B; ++b) layout.slots.push_back(b);
  } else {
    LORA_CHECK(static_cast<int64_t>(batch.slots.size()) == B, "{}: {} cache slots for a batch of {} rows", m.model,
               batch.slots.size(), B);
    layout.slots = batch.slots;
  }
  std::vector<bool> taken(static_cast<size_t>(cache.slots()), false);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t slot = layout.slots[static_cast<size_t>(b)];
    LORA_CHECK(slot >= 0 && slot < cache.slots(), "{}: row {} names cache slot {}, outside the cache's {} slots",
               m.model, b, slot, cache.slots());
    LORA_CHECK(!taken[static_cast<size_t>(slot)], "{}: cache slot {} is named by two rows", m.model, slot);
    taken[static_cast<size_t>(slot)] = true;
    const int64_t start = cache.lengths[static_cast<size_t>(slot)], n = row_length(batch, b);
    LORA_CHECK(start + n <= cache.capacity(),
               "{}: {} cached + {} new tokens exceed the cache's capacity of {} (slot {})", m.model, start, n,
               cache.capacity(), slot);
    layout.starts.push_back(start);
  }
  bool padded = false;
  for (int64_t b = 0; b < B; ++b) padded = padded || row_length(batch, b) != T;
  if (padded) layout.lengths = batch.lengths;
  bool in_order = cache.slots() == B && !padded;
  for (int64_t b = 0; b < B && in_order; ++b) {
    in_order = layout.slots[static_cast<size_t>(b)] == b && layout.starts[static_cast<size_t>(b)] == layout.starts[0];
  }
  layout.plain = in_order;
  if (T == 1) {  // the decode kernel's (slot, position) table, once for every layer
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < B; ++b)
      rows.insert(rows.end(), {layout.slots[static_cast<size_t>(b)], layout.starts[static_cast<size_t>(b)]});
    layout.decode_rows = Tensor::from_vector(rows, {B, 2}, batch.ids.device());
  }
}

}  // namespace

ForwardPlan plan_forward(const ForwardBatch& batch, const ModelLimits& m, const nn::RotaryEmbedding* rotary) {
  const Tensor& ids = batch.ids;
  LORA_CHECK(ids.defined() && ids.rank() == 2 && (ids.dtype() == DType::I32 || ids.dtype() == DType::I64),
             "{}: token ids must be int32 or int64 [batch, time], got {}", m.model,
             ids.defined() ? std::string(dtype_name(ids.dtype())) + " " + ids.shape().str() : "none");
  const int64_t B = ids.size(0), T = ids.size(1);
  LORA_CHECK(B > 0 && T > 0, "{}: an empty batch {}", m.model, ids.shape().str());
  const auto sized = [&](size_t n, int64_t expected, const char* what) {
    LORA_CHECK(n == 0 || static_cast<int64_t>(n) == expected, "{}: {} {} for a batch of {} x {} tokens (expected {})",
               m.model, n, what, B, T, expected);
  };
  sized(batch.starts.size(), B, "row starts");
  sized(batch.positions.size(), B * T, "positions");
  sized(batch.segments.size(), B * T, "segment ids");
  sized(batch.adapters.size(), B, "row adapters");
  sized(batch.lengths.size(), B, "row lengths");
  for (size_t b = 0; b < batch.lengths.size(); ++b) {
    LORA_CHECK(batch.lengths[b] >= 1 && batch.lengths[b] <= T, "{}: row {} has length {}, outside [1, {}]", m.model, b,
               batch.lengths[b], T);
  }
  LORA_CHECK(int(!batch.starts.empty()) + int(!batch.positions.empty()) + int(!batch.segments.empty()) <= 1,
             "{}: give row starts, positions or segments, not several", m.model);

  ForwardPlan plan;
  plan.batch = B;
  plan.time = T;
  plan.pass = std::make_shared<PassInputs>();
  nn::AttentionLayout& layout = plan.pass->attention;

  // Positions: from the cache slots, the row starts, the segments, as given, or 0, 1, ... in every row.
  std::vector<int64_t> values;  // [B * T]
  if (batch.cache) {
    plan_cache(batch, m, layout);
    values = from_starts(layout.starts, B, T);
  } else if (!batch.starts.empty()) {
    for (int64_t s : batch.starts) LORA_CHECK(s >= 0, "{}: a row starts at position {}", m.model, s);
    values = from_starts(batch.starts, B, T);
  } else if (!batch.positions.empty()) {
    for (int64_t p : batch.positions) LORA_CHECK(p >= 0, "{}: a token at position {}", m.model, p);
    values = batch.positions;
  } else if (!batch.segments.empty()) {
    // Attention stays inside each segment and its positions restart at 0.
    layout.key_start_host = nn::segment_key_starts(batch.segments, B, T);
    layout.key_start = Tensor::from_vector(layout.key_start_host, {B, T}, ids.device());
    values.resize(static_cast<size_t>(B * T));
    for (int64_t i = 0; i < B * T; ++i) values[static_cast<size_t>(i)] = i % T - layout.key_start_host[i];
  } else {
    values = from_starts(std::vector<int64_t>(static_cast<size_t>(B), 0), B, T);
  }
  for (int64_t b = 0; b < B; ++b) {  // padding repeats its row's last real position
    const int64_t n = row_length(batch, b);
    for (int64_t t = n; t < T; ++t) values[static_cast<size_t>(b * T + t)] = values[static_cast<size_t>(b * T + n - 1)];
  }
  plan.positions = from_per_token(std::move(values), B, T);
  const int64_t last = *std::max_element(plan.positions.values.begin(), plan.positions.values.end());
  LORA_CHECK(last < m.context_length, "{}: position {} is outside the context length {}", m.model, last,
             m.context_length);

  if (rotary) {
    auto [cos, sin] = rotary->tables(plan.positions.values, ids.device());
    plan.pass->rotary = {cos, sin, !plan.positions.shared};
  }

  for (size_t b = 0; b < batch.adapters.size(); ++b) {
    const int32_t a = batch.adapters[b];
    LORA_CHECK(a == -1 || m.adapter_slots > 0,
               "{}: row {} names adapter slot {}, but the model serves no adapters "
               "(serve::AdapterSet installs them)",
               m.model, b, a);
    LORA_CHECK(a >= -1 && a < m.adapter_slots, "{}: row {} names adapter slot {}, outside [-1, {})", m.model, b, a,
               m.adapter_slots);
  }

  switch (batch.logits) {
    case LogitRows::All:
    case LogitRows::None:
      LORA_CHECK(batch.logit_positions.empty(), "{}: logit positions are given only with LogitRows::Given", m.model);
      break;
    case LogitRows::Last:
      LORA_CHECK(batch.logit_positions.empty(), "{}: logit positions are given only with LogitRows::Given", m.model);
      for (int64_t b = 0; b < B; ++b) plan.logit_rows.push_back(b * T + row_length(batch, b) - 1);
      break;
    case LogitRows::Given:
      for (int64_t p : batch.logit_positions) {
        LORA_CHECK(p >= 0 && p < B * T, "{}: logits asked at position {}, outside the batch's {} x {} tokens", m.model,
                   p, B, T);
      }
      plan.logit_rows = batch.logit_positions;
      break;
  }
  return plan;
}

void advance_cache(const ForwardBatch& batch, const ForwardPlan& plan) {
  if (!batch.cache) return;
  const std::vector<int64_t>& slots = plan.pass->attention.slots;
  for (size_t b = 0; b < slots.size(); ++b) {
    batch.cache->lengths[static_cast<size_t>(slots[b])] += row_length(batch, static_cast<int64_t>(b));
  }
}

Tensor gather_rows(const Tensor& x, const std::vector<int64_t>& rows) {
  // A row lookup is an embedding lookup into x: its backward scatter-adds into x's gradient.
  return ops::embedding(x, Tensor::from_vector(rows, {static_cast<int64_t>(rows.size())}, x.device()));
}

}  // namespace lora::models
