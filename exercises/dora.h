// Exercise 3, a LoRA feature: DoRA's magnitude, LoRA's update split into a direction and a length per output
// (docs/exercises.md). The reference solution sits between the EXERCISE markers; `bash scripts/exercise.sh
// start 3` swaps it for a stub.
#pragma once

#include <cmath>
#include <memory>

#include "nn/linear.h"

namespace lora::exercises {

// DoRA (Liu et al., 2024, "Weight-Decomposed Low-Rank Adaptation"). With W' = W + s B A (LoRA's weight),
//   y = m * (x W'^T) / ||W'|| + b        m [out] trainable; ||W'|| [out]: the L2 norm of each row of W'
//     = (m / ||W'||) * (x W^T + s (x A^T) B^T) + b
// The second line is how it is computed: the input passes through W and the thin A, B as in LoRA; B A is
// formed only for the norm ([out, in], the extra cost DoRA pays). m starts at ||W||, B at zero: at first
// y = x W^T + b, the base layer. Gradients flow through the norm too (PEFT detaches it to save memory).
// x [..., in], W [out, in], b [out] or undefined, A [r, in], B [out, r], m [out] -> [..., out].
inline Tensor dora_linear(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B,
                          const Tensor& m, double s) {
  // EXERCISE 3 BEGIN
  const Tensor w_prime = W + ops::matmul(B, A) * s;                            // [out, in]
  const Tensor norm = ops::sqrt(ops::sum(ops::square(w_prime), 1));            // [out]
  const Tensor z = ops::linear(x, W) + ops::linear(ops::linear(x, A), B) * s;  // [..., out]
  Tensor y = z * (m / norm);                                                   // [..., out] * [out]
  return b.defined() ? y + b : y;
  // EXERCISE 3 END
}

// A Linear wrapped with DoRA: the base frozen, A (Kaiming-uniform, as LoRA), B (zeros) and the magnitude
// trainable. Parameter names follow PEFT: lora_A, lora_B, lora_magnitude_vector.
class DoRALinear : public nn::Layer {
 public:
  DoRALinear(std::shared_ptr<nn::Linear> base, int64_t rank, double alpha, Generator& gen)
      : base_layer(std::move(base)), scaling_(alpha / static_cast<double>(rank)) {
    LORA_CHECK(rank > 0 && rank <= std::min(base_layer->in_features(), base_layer->out_features()),
               "DoRA: rank {} does not fit a {} x {} layer", rank, base_layer->out_features(),
               base_layer->in_features());
    base_layer->freeze();
    register_module("base_layer", base_layer);
    const double bound = 1.0 / std::sqrt(static_cast<double>(base_layer->in_features()));
    lora_A = Tensor::uniform({rank, base_layer->in_features()}, gen, -bound, bound);
    lora_B = Tensor::zeros({base_layer->out_features(), rank});
    // EXERCISE 3 BEGIN
    {
      NoGradGuard no_grad;  // m = ||W||, row by row: a starting value, not part of any graph
      lora_magnitude_vector = ops::sqrt(ops::sum(ops::square(base_layer->weight), 1));  // [out]
    }
    // EXERCISE 3 END
    register_parameter("lora_A", lora_A);
    register_parameter("lora_B", lora_B);
    register_parameter("lora_magnitude_vector", lora_magnitude_vector);
  }

  Tensor forward(const Tensor& x) override {
    return dora_linear(x, base_layer->weight, base_layer->bias, lora_A, lora_B, lora_magnitude_vector, scaling_);
  }
  double scaling() const { return scaling_; }

  std::shared_ptr<nn::Linear> base_layer;
  Tensor lora_A;                 // [r, in]
  Tensor lora_B;                 // [out, r]
  Tensor lora_magnitude_vector;  // [out]

 private:
  double scaling_;
};

}  // namespace lora::exercises
