// Small layers: construction and dropout's seeding.
#include "nn/layers.h"

namespace lora::nn {

Embedding::Embedding(int64_t num_embeddings, int64_t dim, Generator& gen, double init_std) {
  weight = Tensor::randn({num_embeddings, dim}, gen, 0.0, init_std);
  register_parameter("weight", weight);
}

Embedding::Embedding(std::shared_ptr<const QuantizedWeight> table) : compact(std::move(table)) {
  LORA_CHECK(compact != nullptr && compact->format != QuantFormat::F32, "Embedding: no compact table given");
}

void Embedding::on_to(Device device) {
  if (compact && compact->device() != device)
    compact = std::make_shared<const QuantizedWeight>(quantized_to(*compact, device));
}

LayerNorm::LayerNorm(int64_t dim, double eps) : eps_(eps) {
  weight = Tensor::ones({dim});
  bias = Tensor::zeros({dim});
  register_parameter("weight", weight);
  register_parameter("bias", bias);
}

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) {
  LORA_CHECK(eps > 0, "RMSNorm: eps {} must be positive", eps);
  weight = Tensor::ones({dim});
  register_parameter("weight", weight);
}

Dropout::Dropout(double p, uint64_t seed) : p_(p), seed_(seed) {
  LORA_CHECK(p >= 0.0 && p < 1.0, "Dropout: p = {} is outside [0, 1)", p);
  register_rng_counter("calls", calls_);
}

Tensor Dropout::forward(const Tensor& x) {
  if (!is_training() || p_ == 0.0) return x;
  return ops::dropout(x, p_, true, splitmix64(seed_ ^ (0x5851F42D4C957F2Dull * ++calls_)));
}

}  // namespace lora::nn
