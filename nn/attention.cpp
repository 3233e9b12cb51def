// Causal self-attention with a KV cache (a pool of slots), grouped-query heads and packed segments.
#include "nn/attention.h"

#include <cmath>
#include <limits>

#include "autograd/grad_mode.h"
#include "autograd/ops.h"
#include "backends/backend.h"
#include "backends/kernels/decode_attention.h"

namespace lora::nn {

// ---------------------------------------------------------------------------------------------------
// KVCache

KVCache KVCache::allocate(int64_t n_layer, int64_t slots, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                          Device device) {
  LORA_CHECK(n_layer > 0 && slots > 0 && kv_heads > 0 && capacity > 0 && head_dim > 0,
             "KV cache: sizes must be positive (layers {}, slots {}, kv heads {}, capacity {}, head dim {})", n_layer,
             slots, kv_heads, capacity, head_dim);
  KVCache cache;
  cache.layers.resize(static_cast<size_t>(n_layer));
  for (Layer& l : cache.layers) {
    l.k = Tensor::empty({slots, kv_heads, capacity, head_dim}, DType::F32, device);
    l.v = Tensor::empty({slots, kv_heads, capacity, head_dim}, DType::F32, device);
  }
  cache.lengths.assign(static_cast<size_t>(slots), 0);
  return cache;
}

int64_t KVCache::length(int64_t slot) const {
  LORA_CHECK(slot >= 0 && slot < slots(), "KV cache: slot {} is outside its {} slots", slot, slots());
  return lengths[static_cast<size_t>(slot)];
}

void KVCache::clear() {
  std::fill(lengths.begin(), lengths.end(), 0);
}

void KVCache::clear(int64_t slot) {
  LORA_CHECK(slot >= 0 && slot < slots(), "KV cache: slot {} is outside its {} slots", slot, slots());
  lengths[static_cast<size_t>(slot)] = 0;
}

std::vector<int32_t> segment_key_starts(const std::vector<int32_t>& segments, int64_t B, int64_t T) {
  LORA_CHECK(static_cast<int64_t>(segments.size()) == B * T, "segments: {} ids for a batch of {} x {} tokens",
             segments.size(), B, T);
  std::vector<int32_t> starts(segments.size());
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* seg = segments.data() + b * T;
    int32_t first = 0;  // where the current run began
    for (int64_t t = 0; t < T; ++t) {
      if (t > 0 && seg[t] != seg[t - 1]) {
        for (int64_t u = 0; u < first; ++u) {  // an id seen before this run: the segment is split
          LORA_CHECK(seg[u] != seg[t],
                     "segments: row {} position {}: segment {} appears again after another one "
                     "(each segment must be one run of positions)",
                     b, t, seg[t]);
        }
        first = static_cast<int32_t>(t);
      }
      starts[static_cast<size_t>(b * T + t)] = first;
    }
  }
  return starts;
}

namespace {

// Additive mask for query rows ordered (g, t), g < groups, over `keys` positions: row g*T + t sees key j
// when lo(t) <= j <= start + t (0), and not otherwise (-inf). lo is key_start[t] of one batch row, or 0.
// [groups * T, keys] in `like`'s dtype and device.
Tensor attention_mask(int64_t groups, int64_t T, int64_t keys, int64_t start, const int32_t* key_start,
                      const Tensor& like) {
  std::vector<double> m(static_cast<size_t>(groups * T * keys));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t lo = key_start ? key_start[t] : 0;
      for (int64_t j = 0; j < keys; ++j)
        m[static_cast<size_t>((g * T + t) * keys + j)] =
            j >= lo && j <= start + t ? 0.0 : -std::numeric_limits<double>::infinity();
    }
  return Tensor::from_vector(m, {groups * T, keys}).to(like.dtype()).to(like.device());
}

// The composed route: q [B, H, T, D] against keys and values [B, H_kv, L, D], L = start + T. Query heads of
// one group are adjacent (h = kv * G + g), so q viewed as [B, H_kv, G * T, D] puts each group's rows under
// its key/value head and one batched matmul serves them all. With segments (start 0), each batch row gets
// its own mask [B, 1, G T, L].
Tensor attend_composed(const Tensor& q, const Tensor& keys, const Tensor& values, int64_t start,
                       const std::vector<int32_t>& key_start, double dropout_p, uint64_t dropout_seed) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t H_kv = keys.size(1), G = H / H_kv, L = keys.size(2);
  const Tensor qg = ops::reshape(q, {B, H_kv, G * T, D});
  Tensor scores = ops::matmul(qg, keys, false, true) * (1.0 / std::sqrt(static_cast<double>(D)));  // [B, H_kv, G T, L]
  if (!key_start.empty()) {
    std::vector<Tensor> masks;
    for (int64_t b = 0; b < B; ++b) masks.push_back(attention_mask(G, T, L, start, key_start.data() + b * T, scores));
    scores = scores + ops::reshape(ops::concat(masks, 0), {B, 1, G * T, L});
  } else if (T > 1) {
    scores = scores + attention_mask(G, T, L, start, nullptr, scores);  // one query row sees every cached key
  }
  Tensor probs = ops::softmax(scores);
  if (dropout_p > 0.0) probs = ops::dropout(probs, dropout_p, true, dropout_seed);
  return ops::reshape(ops::matmul(probs, values), {B, H, T, D});
}

// One token per row, each row at its own slot and position of the cache: the rows' keys and values are
// already written; one fused kernel lets every row's queries attend over its slot's position + 1 keys
// (backends/kernels/decode_attention.h).
Tensor attend_rows(const Tensor& q, const AttentionLayout& layout, const KVCache::Layer& cache) {
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3);
  Tensor table = layout.decode_rows;  // [B, 2]: (slot, position), built once per pass by the runner
  if (!table.defined() || table.device() != q.device()) {
    std::vector<int64_t> rows;
    rows.reserve(static_cast<size_t>(2 * B));
    for (int64_t b = 0; b < B; ++b) rows.insert(rows.end(), {layout.slots[b], layout.starts[b]});
    table = Tensor::from_vector(rows, {B, 2}, q.device());
  }
  Tensor out = Tensor::empty({B, H, D}, q.dtype(), q.device());
  kernels::run<kernels::DecodeAttention>(q.device(), q.view({B, H, D}), cache.k, cache.v, table,
                                         1.0 / std::sqrt(static_cast<double>(D)), out);
  return out.view({B, H, 1, D});
}

// A row's real tokens (the rest of its T is padding).
int64_t row_length(const AttentionLayout& layout, int64_t b, int64_t T) {
  return layout.lengths.empty() ? T : layout.lengths[static_cast<size_t>(b)];
}

// Writes each row's k, v [B, H_kv, T, D] (its real tokens) into its slot at its start.
void write_cache(const Tensor& k, const Tensor& v, const AttentionLayout& layout, KVCache::Layer& cache) {
  const int64_t B = k.size(0), H_kv = k.size(1), T = k.size(2), D = k.size(3), capacity = cache.k.size(2);
  Backend& be = backend_for(k);
  if (layout.plain) {  // every row into its own slot at one start: one copy for the whole batch
    be.copy_block(k, cache.k, B * H_kv, T, capacity, D, 0, layout.starts[0], T, false);
    be.copy_block(v, cache.v, B * H_kv, T, capacity, D, 0, layout.starts[0], T, false);
    return;
  }
  for (int64_t b = 0; b < B; ++b) {
    Tensor k_seq = cache.k.narrow_rows(layout.slots[b], 1), v_seq = cache.v.narrow_rows(layout.slots[b], 1);
    const int64_t n = row_length(layout, b, T);
    be.copy_block(k.narrow_rows(b, 1), k_seq, H_kv, T, capacity, D, 0, layout.starts[b], n, false);
    be.copy_block(v.narrow_rows(b, 1), v_seq, H_kv, T, capacity, D, 0, layout.starts[b], n, false);
  }
}

// Attention of q [B, H, T, D] over each row's slot, whose keys and values are written already.
Tensor attend_cached(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionLayout& layout,
                     const KVCache::Layer& cache) {
  const int64_t B = q.size(0), T = q.size(2);
  if (T == 1) return attend_rows(q, layout, cache);
  bool all_fresh = true;  // every row starts its slot: the keys are exactly k and v
  for (int64_t s : layout.starts) all_fresh = all_fresh && s == 0;
  if (all_fresh) return ops::causal_attention(q, k, v);
  if (layout.plain) {
    const int64_t L = layout.starts[0] + T;
    return attend_composed(q, ops::slice(cache.k, 2, 0, L), ops::slice(cache.v, 2, 0, L), layout.starts[0], {}, 0.0, 0);
  }
  std::vector<Tensor> rows;  // each row over its own slot's keys [0, start + n): its padding sees them all
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = layout.starts[b] + row_length(layout, b, T);
    const Tensor keys = ops::slice(cache.k.narrow_rows(layout.slots[b], 1), 2, 0, L);
    const Tensor values = ops::slice(cache.v.narrow_rows(layout.slots[b], 1), 2, 0, L);
    rows.push_back(attend_composed(q.narrow_rows(b, 1), keys, values, layout.starts[b], {}, 0.0, 0));
  }
  return ops::concat(rows, 0);
}

}  // namespace

Tensor causal_self_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionLayout& layout,
                             KVCache::Layer* cache, double dropout_p, uint64_t dropout_seed) {
  LORA_CHECK(q.rank() == 4 && k.rank() == 4 && v.rank() == 4 && k.shape() == v.shape() && q.size(0) == k.size(0) &&
                 q.size(2) == k.size(2) && q.size(3) == k.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
             "attention: q {} and k, v {}, {} are not [B, H, T, D] and [B, H_kv, T, D] with H a multiple of H_kv",
             q.shape().str(), k.shape().str(), v.shape().str());
  LORA_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, "attention: dropout {} is outside [0, 1)", dropout_p);
  const int64_t B = q.size(0), T = q.size(2);
  if (layout.segmented()) {
    LORA_CHECK(!cache && layout.key_start.shape() == (Shape{B, T}) &&
                   static_cast<int64_t>(layout.key_start_host.size()) == B * T,
               "attention: segments {} do not fit q {} (or come with a KV cache)", layout.key_start.shape().str(),
               q.shape().str());
  }
  if (!cache) {
    if (dropout_p > 0.0) return attend_composed(q, k, v, 0, layout.key_start_host, dropout_p, dropout_seed);
    return ops::causal_attention(q, k, v, 0.0, layout.key_start);
  }

  LORA_CHECK(!GradMode::is_enabled() || !(q.requires_grad() || k.requires_grad() || v.requires_grad()),
             "attention: the KV cache is for inference (use NoGradGuard)");
  LORA_CHECK(cache->k.defined() && cache->k.size(1) == k.size(1) && cache->k.size(3) == k.size(3),
             "attention: the KV cache {} does not fit keys {}", cache->k.defined() ? cache->k.shape().str() : "(none)",
             k.shape().str());
  LORA_CHECK(static_cast<int64_t>(layout.slots.size()) == B && static_cast<int64_t>(layout.starts.size()) == B,
             "attention: the layout names {} cache slots for {} rows", layout.slots.size(), B);
  LORA_CHECK(layout.lengths.empty() || static_cast<int64_t>(layout.lengths.size()) == B,
             "attention: the layout has {} row lengths for {} rows", layout.lengths.size(), B);
  for (int64_t b = 0; b < B; ++b) {  // the runner checked these; a kernel must never write outside the cache
    const int64_t n = row_length(layout, b, T);
    LORA_CHECK(n >= 1 && n <= T && layout.slots[b] >= 0 && layout.slots[b] < cache->k.size(0) &&
                   layout.starts[b] >= 0 && layout.starts[b] + n <= cache->k.size(2),
               "attention: row {} (slot {}, positions [{}, {})) is outside the KV cache {}", b, layout.slots[b],
               layout.starts[b], layout.starts[b] + n, cache->k.shape().str());
  }
  write_cache(k, v, layout, *cache);
  return attend_cached(q, k, v, layout, *cache);
}

}  // namespace lora::nn
