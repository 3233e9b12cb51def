// Rotary position embedding tables: frequencies (with linear or llama3 scaling) and cos/sin per position.
#include "nn/rotary.h"

#include <cmath>
#include <numbers>

#include "autograd/ops.h"
#include "core/error.h"

namespace lora::nn {

// Every step is float32 arithmetic, in transformers' order, so the tables match its to the last bit or two.
RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double theta, RopeScaling s) {
  LORA_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary embedding: head dimension {} must be positive and even",
             head_dim);
  LORA_CHECK(theta > 1.0 && std::isfinite(theta), "rotary embedding: rope_theta {} must be a finite number above 1",
             theta);
  const int64_t half = head_dim / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq_[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  if (s.type == "default") return;
  LORA_CHECK(s.factor >= 1.0 && std::isfinite(s.factor), "rotary embedding: rope scaling factor {} must be >= 1",
             s.factor);
  const float factor = static_cast<float>(s.factor);
  if (s.type == "linear") {  // positions interpolated: every frequency divided by the factor
    for (float& f : inv_freq_) f /= factor;
    return;
  }
  LORA_CHECK(s.type == "llama3",
             "rotary embedding: rope scaling type '{}' is not implemented (default, linear, llama3)", s.type);
  LORA_CHECK(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0 && s.original_max_position_embeddings > 0,
             "rotary embedding: llama3 scaling needs high_freq_factor > low_freq_factor > 0 and a positive "
             "original_max_position_embeddings (got {}, {}, {})",
             s.high_freq_factor, s.low_freq_factor, s.original_max_position_embeddings);
  // Llama 3.1: long wavelengths (low frequencies) are slowed by `factor`, short ones kept, the band between
  // interpolated smoothly in 1 / wavelength.
  const float old_context = static_cast<float>(s.original_max_position_embeddings);
  const float low = static_cast<float>(s.low_freq_factor), high = static_cast<float>(s.high_freq_factor);
  const float low_freq_wavelen = old_context / low, high_freq_wavelen = old_context / high;
  for (float& f : inv_freq_) {
    const float wavelen = static_cast<float>(2.0 * std::numbers::pi) / f;
    if (wavelen > low_freq_wavelen) {
      f = f / factor;
    } else if (!(wavelen < high_freq_wavelen)) {  // the medium band
      const float smooth = (old_context / wavelen - low) / (high - low);
      f = (1.0f - smooth) * f / factor + smooth * f;
    }
  }
}

std::pair<Tensor, Tensor> RotaryEmbedding::tables(int64_t start, int64_t T, Device device) const {
  std::vector<int64_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[static_cast<size_t>(t)] = start + t;
  return tables(positions, device);
}

std::pair<Tensor, Tensor> RotaryEmbedding::tables(const std::vector<int64_t>& positions, Device device) const {
  const int64_t half = static_cast<int64_t>(inv_freq_.size()), T = static_cast<int64_t>(positions.size());
  std::vector<float> cos(static_cast<size_t>(T * half)), sin(cos.size());
  for (int64_t t = 0; t < T; ++t) {
    const float position = static_cast<float>(positions[static_cast<size_t>(t)]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = position * inv_freq_[static_cast<size_t>(i)];  // a float32 product
      cos[static_cast<size_t>(t * half + i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[static_cast<size_t>(t * half + i)] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return {Tensor::from_vector(cos, {T, half}, device), Tensor::from_vector(sin, {T, half}, device)};
}

Tensor apply_rotary(const Tensor& x, const RotaryTables& tables) {
  if (!tables.per_token) return ops::rope(x, tables.cos, tables.sin);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  return ops::reshape(ops::rope(ops::reshape(x, {1, B * T, H, D}), tables.cos, tables.sin), {B, T, H, D});
}

}  // namespace lora::nn
