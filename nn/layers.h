// Small layers: Embedding, LayerNorm, RMSNorm, Dropout, GELU.
#pragma once

#include <memory>

#include "autograd/ops/quantized_embedding.h"
#include "nn/module.h"

namespace lora::nn {

// Lookup table: ids [...] -> [..., dim].
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, Generator& gen, double init_std = 1.0);
  // A frozen table held in a compact format (a GGUF file's quantized token_embd, kept as the file has it):
  // the rows looked up are dequantized; there is no f32 weight and no parameter.
  explicit Embedding(std::shared_ptr<const QuantizedWeight> table);
  Tensor forward(const Tensor& ids) {
    return compact ? ops::quantized_embedding(compact, ids) : ops::embedding(weight, ids);
  }
  // False for a compact table: `weight` is then undefined.
  bool has_dense_weight() const { return weight.defined(); }

  Tensor weight;                                   // [num_embeddings, dim], or undefined when compact
  std::shared_ptr<const QuantizedWeight> compact;  // [num_embeddings, dim], or null

 protected:
  void on_to(Device device) override;  // the compact table moves with the module, as a parameter would
};

// Layer normalisation over the last axis with a learned scale and shift (initialised to 1 and 0).
class LayerNorm : public Layer {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) override { return ops::layer_norm(x, weight, bias, eps_); }
  Tensor weight;  // [dim]
  Tensor bias;    // [dim]

 private:
  double eps_;
};

// Root-mean-square normalisation over the last axis with a learned scale (initialised to 1), as Llama:
// y = x / sqrt(mean(x^2) + eps) * weight.
class RMSNorm : public Layer {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) override { return ops::rms_norm(x, weight, eps_); }
  double eps() const { return eps_; }
  Tensor weight;  // [dim]

 private:
  double eps_;
};

// Inverted dropout in training mode, identity in eval mode. Each call draws a fresh mask: the seed is
// the module's base seed mixed with a call counter.
class Dropout : public Layer {
 public:
  explicit Dropout(double p, uint64_t seed = 0);
  Tensor forward(const Tensor& x) override;
  double p() const { return p_; }

 private:
  double p_;
  uint64_t seed_;
  uint64_t calls_ = 0;
};

class GELU : public Layer {
 public:
  Tensor forward(const Tensor& x) override { return ops::gelu(x); }
};

}  // namespace lora::nn
