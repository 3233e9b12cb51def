// Causal self-attention with a KV cache and grouped-query heads.
#include "nn/attention.h"

#include <cmath>
#include <limits>

#include "autograd/grad_mode.h"
#include "autograd/ops.h"
#include "backends/backend.h"
#include "backends/kernels/decode_attention.h"

namespace lora::nn {

KVCache KVCache::allocate(int64_t n_layer, int64_t batch, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                          Device device) {
  LORA_CHECK(n_layer > 0 && batch > 0 && kv_heads > 0 && capacity > 0 && head_dim > 0,
             "KV cache: sizes must be positive (layers {}, batch {}, kv heads {}, capacity {}, head dim {})", n_layer,
             batch, kv_heads, capacity, head_dim);
  KVCache cache;
  cache.layers.resize(static_cast<size_t>(n_layer));
  for (Layer& l : cache.layers) {
    l.k = Tensor::empty({batch, kv_heads, capacity, head_dim}, DType::F32, device);
    l.v = Tensor::empty({batch, kv_heads, capacity, head_dim}, DType::F32, device);
  }
  return cache;
}

void KVCache::check_room(int64_t tokens, int64_t batch_size, const char* model) const {
  LORA_CHECK(!layers.empty(), "{}: the KV cache is not allocated", model);
  LORA_CHECK(batch_size == batch(), "{}: the KV cache holds batch {}, the input has {}", model, batch(), batch_size);
  LORA_CHECK(length + tokens <= capacity(), "{}: {} cached + {} new tokens exceed the cache's capacity of {}", model,
             length, tokens, capacity());
}

void KVCache::set_rows(std::vector<CacheRow> batch_rows) {
  rows = batch_rows.empty() ? nullptr : std::make_shared<const std::vector<CacheRow>>(std::move(batch_rows));
  for (Layer& l : layers) l.rows = rows;
}

void KVCache::check_rows(int64_t batch_size, const char* model) const {
  LORA_CHECK(!layers.empty() && rows, "{}: the KV cache has no rows set", model);
  LORA_CHECK(static_cast<int64_t>(rows->size()) == batch_size, "{}: the KV cache has {} rows, the input {}", model,
             rows->size(), batch_size);
  for (const CacheRow& r : *rows) {
    LORA_CHECK(r.slot >= 0 && r.slot < batch() && r.position >= 0 && r.position < capacity(),
               "{}: cache row (slot {}, position {}) is outside the cache's {} slots of {} positions", model, r.slot,
               r.position, batch(), capacity());
  }
}

namespace {

// Additive causal mask for query rows ordered (g, t), g < groups, over `keys` positions: row g*T + t sees
// key j when j <= start + t (0), and not otherwise (-inf). [groups * T, keys] in `like`'s dtype and device.
Tensor causal_mask(int64_t groups, int64_t T, int64_t keys, int64_t start, const Tensor& like) {
  std::vector<double> m(static_cast<size_t>(groups * T * keys));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < keys; ++j)
        m[static_cast<size_t>((g * T + t) * keys + j)] = j <= start + t ? 0.0 : -std::numeric_limits<double>::infinity();
  return Tensor::from_vector(m, {groups * T, keys}).to(like.dtype()).to(like.device());
}

// The composed route: q [B, H, T, D] against keys and values [B, H_kv, L, D], L = start + T. Query heads of
// one group are adjacent (h = kv * G + g), so q viewed as [B, H_kv, G * T, D] puts each group's rows under
// its key/value head and one batched matmul serves them all.
Tensor attend_composed(const Tensor& q, const Tensor& keys, const Tensor& values, int64_t start, double dropout_p,
                       uint64_t dropout_seed) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t H_kv = keys.size(1), G = H / H_kv, L = keys.size(2);
  const Tensor qg = ops::reshape(q, {B, H_kv, G * T, D});
  Tensor scores = ops::matmul(qg, keys, false, true) * (1.0 / std::sqrt(static_cast<double>(D)));  // [B, H_kv, G T, L]
  if (T > 1) scores = scores + causal_mask(G, T, L, start, scores);  // one query row sees every cached key
  Tensor probs = ops::softmax(scores);
  if (dropout_p > 0.0) probs = ops::dropout(probs, dropout_p, true, dropout_seed);
  return ops::reshape(ops::matmul(probs, values), {B, H, T, D});
}

// One token per row, each row at its own sequence and position of the cache (KVCache::rows): row b writes
// its key and value at (slot, position), then one fused kernel lets every row's queries attend over its
// sequence's position + 1 keys (backends/kernels/decode_attention.h).
Tensor attend_rows(const Tensor& q, const Tensor& k, const Tensor& v, KVCache::Layer& cache) {
  const std::vector<CacheRow>& rows = *cache.rows;
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), H_kv = k.size(1), capacity = cache.k.size(2);
  LORA_CHECK(q.size(2) == 1 && static_cast<int64_t>(rows.size()) == B,
             "attention: a decode step over cache rows takes one token for each of its {} rows, got q {}", rows.size(),
             q.shape().str());
  Backend& be = backend_for(q);
  std::vector<int64_t> table;  // [B, 2]: (slot, position)
  table.reserve(static_cast<size_t>(2 * B));
  for (int64_t b = 0; b < B; ++b) {
    const CacheRow& r = rows[static_cast<size_t>(b)];
    LORA_CHECK(r.slot >= 0 && r.slot < cache.k.size(0) && r.position >= 0 && r.position < capacity,
               "attention: cache row (slot {}, position {}) is outside the cache {}", r.slot, r.position,
               cache.k.shape().str());
    Tensor k_seq = cache.k.narrow_rows(r.slot, 1), v_seq = cache.v.narrow_rows(r.slot, 1);  // [1, H_kv, capacity, D]
    be.copy_block(k.narrow_rows(b, 1), k_seq, H_kv, 1, capacity, D, 0, r.position, 1, false);
    be.copy_block(v.narrow_rows(b, 1), v_seq, H_kv, 1, capacity, D, 0, r.position, 1, false);
    table.insert(table.end(), {r.slot, r.position});
  }
  Tensor out = Tensor::empty({B, H, D}, q.dtype(), q.device());
  kernels::run<kernels::DecodeAttention>(q.device(), q.view({B, H, D}), cache.k, cache.v,
                                         Tensor::from_vector(table, {B, 2}).to(q.device()),
                                         1.0 / std::sqrt(static_cast<double>(D)), out);
  return out.view({B, H, 1, D});
}

}  // namespace

Tensor causal_self_attention(const Tensor& q, const Tensor& k, const Tensor& v, KVCache::Layer* cache, int64_t start,
                             double dropout_p, uint64_t dropout_seed) {
  LORA_CHECK(q.rank() == 4 && k.rank() == 4 && v.rank() == 4 && k.shape() == v.shape() && q.size(0) == k.size(0) &&
                 q.size(2) == k.size(2) && q.size(3) == k.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
             "attention: q {} and k, v {}, {} are not [B, H, T, D] and [B, H_kv, T, D] with H a multiple of H_kv",
             q.shape().str(), k.shape().str(), v.shape().str());
  LORA_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, "attention: dropout {} is outside [0, 1)", dropout_p);
  if (!cache) {
    if (dropout_p > 0.0) return attend_composed(q, k, v, 0, dropout_p, dropout_seed);
    return ops::causal_attention(q, k, v);
  }

  LORA_CHECK(!GradMode::is_enabled() || !(q.requires_grad() || k.requires_grad() || v.requires_grad()),
             "attention: the KV cache is for inference (use NoGradGuard)");
  LORA_CHECK(cache->k.defined() && cache->k.size(1) == k.size(1) && cache->k.size(3) == k.size(3),
             "attention: the KV cache {} does not fit keys {}", cache->k.defined() ? cache->k.shape().str() : "(none)",
             k.shape().str());
  if (cache->rows) return attend_rows(q, k, v, *cache);
  const int64_t B = k.size(0), H_kv = k.size(1), T = k.size(2), D = k.size(3), capacity = cache->k.size(2);
  LORA_CHECK(start >= 0 && start + T <= capacity, "attention: positions [{}, {}) exceed the KV cache's capacity {}", start,
             start + T, capacity);
  // Append k and v at positions [start, start + T).
  Backend& be = backend_for(q);
  be.copy_block(k, cache->k, B * H_kv, T, capacity, D, 0, start, T, false);
  be.copy_block(v, cache->v, B * H_kv, T, capacity, D, 0, start, T, false);
  if (start == 0) return causal_self_attention(q, k, v, nullptr, 0, dropout_p, dropout_seed);
  const Tensor keys = ops::slice(cache->k, 2, 0, start + T);    // [B, H_kv, L, D]
  const Tensor values = ops::slice(cache->v, 2, 0, start + T);  // [B, H_kv, L, D]
  return attend_composed(q, keys, values, start, dropout_p, dropout_seed);
}

}  // namespace lora::nn
