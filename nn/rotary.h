// Rotary position embeddings (Su et al., 2021), as Hugging Face's Llama computes them: the cos and sin
// tables for a range of positions, with the frequency scalings recent checkpoints use.
//
//   inv_freq[i] = 1 / theta^(2i / D),  i < D/2        (D: the rotated head dimension)
//   angle[t, i] = position(t) * inv_freq[i],  cos/sin tables [T, D/2]
//
// ops::rope then rotates each pair (x[i], x[i + D/2]) of a head by angle[t, i] (the rotate-half layout).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace lora::nn {

// How the frequencies are scaled for contexts longer than the model was pre-trained on.
struct RopeScaling {
  std::string type = "default";  // "default" (none), "linear", or "llama3"
  double factor = 1.0;           // linear, llama3
  // llama3: wavelengths longer than original_max_position_embeddings / low_freq_factor are divided by
  // `factor`, shorter than .. / high_freq_factor are kept, and the band between is interpolated.
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// cos and sin for the tokens of one forward pass: [T, D/2] when every batch row has the same positions
// (shared), else [B * T, D/2], one row per token.
struct RotaryTables {
  Tensor cos, sin;
  bool per_token = false;
};

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, double theta, RopeScaling scaling = {});
  // cos and sin [T, D/2] (float32) for positions [start, start + T), on `device`.
  std::pair<Tensor, Tensor> tables(int64_t start, int64_t T, Device device) const;
  // cos and sin [N, D/2] (float32) for the N positions given, on `device`.
  std::pair<Tensor, Tensor> tables(const std::vector<int64_t>& positions, Device device) const;
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  std::vector<float> inv_freq_;  // [D/2], computed in float32 as transformers does
};

// Rotates the heads of x [B, T, heads, D] by `tables` (ops::rope, differentiable in x). Per-token tables
// rotate x viewed as one row of B * T time steps.
Tensor apply_rotary(const Tensor& x, const RotaryTables& tables);

}  // namespace lora::nn
