// MultiLoRALinear: a frozen Linear with many LoRA adapters resident beside it, each batch row choosing its
// own (or none). The base matmul runs once for the whole batch; the LoRA branch is one grouped kernel
// (backends/kernels/lora_gather.h) in which each token row gathers its adapter's A and B:
//
//   y_i = x_i W^T + b + sum over the pieces p of adapter(row i):  s_p * B_p A_p x_i   (on p's output slice)
//
// Adapters may differ in rank and in which slices of a fused projection they adapt. Inference only: the
// adapters are not parameters and nothing is recorded for backward. serve/adapter_set.h installs these
// layers and loads adapters into them; the rows' slots come from the model's nn::RowAdapters, which
// CausalLM::forward sets from its ForwardBatch for the length of the pass.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "nn/lora/lora_linear.h"
#include "nn/row_adapters.h"

namespace lora::serve {

class MultiLoRALinear : public nn::Layer {
 public:
  // One adapter on this layer, as LoRALinear holds it (CPU tensors):
  //   A [S r, in], B [S size, r], scale = alpha / r (or alpha / sqrt(r)), S slices of `size` outputs.
  struct Adapter {
    std::vector<nn::OutputSlice> slices;
    int64_t rank = 0;
    double scale = 0.0;
    Tensor A, B;
  };

  MultiLoRALinear(std::shared_ptr<nn::Linear> base, std::shared_ptr<nn::RowAdapters> rows);
  Tensor forward(const Tensor& x) override;

  // Puts an adapter in a slot (replacing what was there) or empties it; repacks this layer's buffers.
  void set(int32_t slot, Adapter adapter);
  void clear(int32_t slot);
  bool holds(int32_t slot) const;

  std::shared_ptr<nn::Linear> base_layer;

 private:
  void repack();
  std::shared_ptr<nn::RowAdapters> rows_;
  std::vector<std::optional<Adapter>> adapters_;  // by slot
  // The packed form the kernel reads (backends/kernels/lora_gather.h), on the base weight's device.
  Tensor slot_pieces_, pieces_, scales_, a_pack_, b_pack_;
};

}  // namespace lora::serve
