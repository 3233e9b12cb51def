// LoRALinear: a frozen Linear plus a trainable low-rank update (Hu et al., 2021).
//
//   y = base(x) + s * (dropout(x) A^T) B^T        A [r, in] random, B [out, r] zeros, s = alpha / r
//
// B starts at zero, so the wrapped layer computes exactly what the base layer did. Training never forms
// B A: the update costs two thin gemms. merge() adds s * B A into the base weight for zero-latency
// inference; unmerge() subtracts it again (how adapters are switched).
//
// A LoRALinear may adapt only some slices of the output (loralib's MergedLinear): for GPT-2's fused
// c_attn [3C, C], adapting q and v means slices [0, C) and [2C, 3C), each with its own A_s [r, in] and
// B_s [C, r], while the base matmul stays one gemm. A holds the slices' A_s stacked [S r, in]; B holds
// the B_s stacked [S C, r].
#pragma once

#include <memory>
#include <vector>

#include "nn/layers.h"
#include "nn/linear.h"

namespace lora::nn {

struct LoRAOptions {
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;        // on the LoRA branch's input
  bool rslora = false;         // scale alpha / sqrt(r) instead of alpha / r (Kalajdzievski, 2023)
  bool gaussian_init = false;  // A ~ N(0, 1/r) instead of Kaiming-uniform (PEFT's "gaussian")
  uint64_t seed = 0;

  double scaling() const;
  void validate() const;
};

// One adapted output slice: rows [offset, offset + size) of the base weight.
struct OutputSlice {
  int64_t offset = 0;
  int64_t size = 0;
};

class LoRALinear : public Layer {
 public:
  // slices empty = the whole output.
  LoRALinear(std::shared_ptr<Linear> base, const LoRAOptions& options, std::vector<OutputSlice> slices = {});
  Tensor forward(const Tensor& x) override;

  // W += s * B_s A_s for every slice; a no-op when already merged. Returns whether it changed anything.
  bool merge();
  // W -= s * B_s A_s; a no-op when not merged.
  bool unmerge();
  bool merged() const { return merged_; }

  const LoRAOptions& options() const { return options_; }
  const std::vector<OutputSlice>& slices() const { return slices_; }
  double scaling() const { return options_.scaling(); }
  int64_t rank() const { return options_.rank; }
  int64_t in_features() const { return base_layer->in_features(); }
  int64_t out_features() const { return base_layer->out_features(); }

  std::shared_ptr<Linear> base_layer;
  Tensor lora_A;  // [S r, in]
  Tensor lora_B;  // [S slice, r]  (slices are equal-sized)

 private:
  void apply_delta(double sign);
  LoRAOptions options_;
  std::vector<OutputSlice> slices_;
  std::shared_ptr<Dropout> dropout_;
  bool merged_ = false;
};

}  // namespace lora::nn
