// Exercise 4, a model change: GPT-J's parallel block, attention and MLP side by side on one LayerNorm
// (docs/exercises.md). The reference solution sits between the EXERCISE markers; `bash scripts/exercise.sh
// start 4` swaps it for a stub.
#pragma once

#include <memory>

#include "models/gpt2/blocks.h"

namespace lora::exercises {

// GPT-2's block is sequential:  h = x + attn(ln_1(x));  y = h + mlp(ln_2(h)).
// GPT-J and PaLM run both branches on the same normalised input, one LayerNorm and one residual add:
//   y = x + attn(ln_1(x)) + mlp(ln_1(x))
// The two branches no longer wait for each other (on a GPU they can overlap) and a block has one
// LayerNorm fewer. The children are GPT-2's own (models/gpt2/blocks.h) and keep their names, so LoRA
// targets such as "attn.c_attn" or "mlp.c_fc" still match. x [B, T, C] -> [B, T, C].
class ParallelGPT2Block : public nn::Module {
 public:
  ParallelGPT2Block(const gpt2::GPT2Config& config, Generator& gen)
      : ln_1(std::make_shared<nn::LayerNorm>(config.n_embd, config.layer_norm_epsilon)),
        attn(std::make_shared<gpt2::GPT2Attention>(config, gen)),
        mlp(std::make_shared<gpt2::GPT2MLP>(config, gen)) {
    register_module("ln_1", ln_1);
    register_module("attn", attn);
    register_module("mlp", mlp);
  }

  Tensor forward(const Tensor& x) {
    // EXERCISE 4 BEGIN
    const Tensor h = ln_1->forward(x);  // both branches read the same normalised input
    return x + attn->forward(h) + mlp->forward(h);
    // EXERCISE 4 END
  }

  std::shared_ptr<nn::LayerNorm> ln_1;
  std::shared_ptr<gpt2::GPT2Attention> attn;
  std::shared_ptr<gpt2::GPT2MLP> mlp;
};

}  // namespace lora::exercises
