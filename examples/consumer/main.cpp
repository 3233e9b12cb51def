// lora_consumer: the installed library from a project of its own. Builds a tiny GPT-2 from a preset,
// wraps its attention in LoRA, takes a few AdamW steps on a fixed batch, and checks that the loss fell and
// that only the adapters moved; it also tokenizes a sentence with the installed GPT-2 tokenizer files.
// Exits non-zero when any of that fails.
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "autograd/tape.h"
#include "models/registry.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "optim/adam.h"

using namespace lora;

int main() {
  try {
    auto model = models::create_model(models::read_config_arg("tiny"), /*seed=*/1);
    nn::LoRAConfig lora_config;
    lora_config.options.rank = 4;
    const auto summary = nn::apply_lora(*model, lora_config, model->lora_targets());
    const auto frozen_before = model->parameters().front().to_vector<float>();

    optim::AdamW optimizer(model->parameters(/*trainable_only=*/true), {.lr = 1e-2});
    const int64_t vocab = model->dims().vocab_size;
    Tensor ids = Tensor::empty({2, 16}, DType::I64), targets = Tensor::empty({2, 16}, DType::I64);
    auto* x = ids.data<int64_t>();
    auto* y = targets.data<int64_t>();
    for (int64_t i = 0; i < 32; ++i) x[i] = (7 * i + 3) % vocab, y[i] = (7 * i + 10) % vocab;

    double first = 0, last = 0;
    for (int step = 0; step < 10; ++step) {
      optimizer.zero_grad();
      Tensor loss = model->loss(ids, targets);
      backward(loss);
      optimizer.step();
      last = loss.item();
      if (step == 0) first = last;
    }
    const bool frozen_unchanged = model->parameters().front().to_vector<float>() == frozen_before;
    fmt::print("lora_consumer: tiny gpt2, {} trainable of {} parameters; loss {:.4f} -> {:.4f}; frozen weights {}\n",
               summary.trainable_params, model->num_parameters(), first, last,
               frozen_unchanged ? "unchanged" : "CHANGED");

    const auto tokenizer = tokenizer::GPT2Tokenizer::load_default();
    const auto tokens = tokenizer.encode("Hello world");
    fmt::print("lora_consumer: \"Hello world\" -> {} tokens\n", tokens.size());
    const bool ok = last < first && frozen_unchanged && tokens.size() == 2;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lora_consumer: %s\n", e.what());
    return 1;
  }
}
