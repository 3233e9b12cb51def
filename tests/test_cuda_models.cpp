// GPT-2 and LoRA on CUDA against the same references as on the CPU: the PyTorch fixture (logits, loss,
// gradients, greedy tokens), LoRA exactness and merging, and a few fine-tuning steps that must give the
// CPU's losses. Each test skips with a warning where there is no CUDA device.
#if defined(LORA_HAVE_CUDA)

#include <catch2/catch.hpp>

#include "backends/cuda/cuda_device.h"
#include "core/safetensors.h"
#include "models/gpt2/model.h"
#include "models/lora.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "tests/model_checks.h"

using namespace lora;

namespace {

#define SKIP_WITHOUT_CUDA()          \
  if (!cuda_device_available()) {    \
    WARN("no CUDA device: skipped"); \
    return;                          \
  }

const std::string kFixtureDir = std::string(LORA_TEST_DATA_DIR) + "/gpt2_tiny";
const Device kCuda = Device::cuda(0);

}  // namespace

TEST_CASE("cuda: GPT-2 matches the PyTorch reference (logits, loss, gradients, greedy tokens)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  auto model = models::load_model(kFixtureDir, "");
  model->to(kCuda);
  REQUIRE(testing::check_against_reference(*model, kFixtureDir + "/expected.safetensors") == 11);
}

TEST_CASE("cuda: LoRA is exact at initialisation and merged equals unmerged", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  gpt2::GPT2LMHeadModel model(gpt2::GPT2Config::preset("tiny"), 3);
  model.to(kCuda);
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 5, 9, 33, 70, 2}, {1, 6}, kCuda);
  const Tensor base = model.forward(ids);
  nn::LoRAConfig config;
  config.targets = {"q", "v", "mlp.c_proj"};
  config.options.rank = 4;
  models::apply_lora(model, config);
  model.to(kCuda);
  REQUIRE(model.forward(ids).to_vector<float>() == base.to_vector<float>());
  Generator gen(4);
  for (auto& [path, layer] : nn::lora_layers(model)) {
    layer->lora_B.copy_from(Tensor::randn(layer->lora_B.shape(), gen, 0.0, 0.05));
  }
  const Tensor unmerged = model.forward(ids);
  nn::merge_lora(model);
  testing::require_close(model.forward(ids), unmerged, 1e-4, 1e-5);
  nn::unmerge_lora(model);
  testing::require_close(model.forward(ids), unmerged, 1e-5, 1e-6);
}

TEST_CASE("cuda: a few fine-tuning steps give the CPU's losses", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  std::vector<int32_t> in_ids, target_ids;
  Generator gen(5);
  for (int i = 0; i < 2 * 16; ++i) {
    in_ids.push_back(static_cast<int32_t>(gen.below(101)));
    target_ids.push_back(static_cast<int32_t>(gen.below(101)));
  }
  for (bool use_lora : {false, true}) {
    INFO((use_lora ? "lora" : "full"));
    std::vector<double> losses[2];
    for (int d = 0; d < 2; ++d) {
      const Device device = d == 0 ? Device::cpu() : kCuda;
      gpt2::GPT2LMHeadModel model(gpt2::GPT2Config::preset("tiny"), 6);
      if (use_lora) {
        nn::LoRAConfig config;
        config.options.rank = 4;
        models::apply_lora(model, config);
      }
      model.to(device);
      optim::AdamW opt(model.parameters(true), {.lr = 1e-2});
      const Tensor x = Tensor::from_vector(in_ids, {2, 16}, device),
                   y = Tensor::from_vector(target_ids, {2, 16}, device);
      for (int step = 0; step < 5; ++step) {
        Tensor loss = model.loss(x, y);
        losses[d].push_back(loss.item());
        backward(loss);
        opt.step();
        opt.zero_grad();
      }
    }
    for (size_t i = 0; i < losses[0].size(); ++i) REQUIRE(losses[1][i] == Approx(losses[0][i]).epsilon(1e-4));
  }
}

#endif  // LORA_HAVE_CUDA
