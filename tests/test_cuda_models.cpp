// GPT-2 and LoRA on CUDA against the same references as on the CPU: the PyTorch fixture (logits, loss,
// gradients, greedy tokens), LoRA exactness and merging, and a few fine-tuning steps that must give the
// CPU's losses. Each test skips with a warning where there is no CUDA device.
#if defined(LORA_HAVE_CUDA)

#include <catch2/catch.hpp>

#include "backends/cuda/cuda_device.h"
#include "core/safetensors.h"
#include "models/gpt2/checkpoint.h"
#include "models/gpt2/generate.h"
#include "nn/lora/apply_lora.h"
#include "optim/adam.h"
#include "tests/test_helpers.h"

using namespace lora;

namespace {

#define SKIP_WITHOUT_CUDA()                  \
  if (!cuda_device_available()) {            \
    WARN("no CUDA device: skipped");         \
    return;                                  \
  }

const std::string kFixtureDir = std::string(LORA_TEST_DATA_DIR) + "/gpt2_tiny";
const Device kCuda = Device::cuda(0);


}  // namespace

TEST_CASE("cuda: GPT-2 matches the PyTorch reference (logits, loss, gradients, greedy tokens)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  auto model = gpt2::load_pretrained(kFixtureDir);
  model->to(kCuda);
  const SafeTensorsFile expected = SafeTensorsFile::open(kFixtureDir + "/expected.safetensors");
  const Tensor ids = expected.load("input_ids", DType::I64, kCuda);
  const Tensor targets = expected.load("targets", DType::I64, kCuda);
  Tensor logits = model->forward(ids);
  REQUIRE(logits.device() == kCuda);
  testing::require_close_scaled(logits, expected.load("logits"), 1e-4);
  Tensor loss = ops::cross_entropy(logits, targets);
  REQUIRE(loss.item() == Approx(expected.load("loss").item()).epsilon(1e-4));
  backward(loss);
  for (const std::string& key : expected.names()) {
    if (key.rfind("grad.", 0) != 0) continue;
    const std::string name = key.substr(5);
    INFO("gradient of " << name);
    Tensor grad;
    for (auto& [n, p] : model->named_parameters()) {
      if (n == name) grad = p.grad();
    }
    REQUIRE(grad.defined());
    if (gpt2::is_conv1d_weight(name)) grad = ops::transpose(grad, 0, 1);
    testing::require_close_scaled(grad, expected.load(key), 1e-3);
  }
  gpt2::SamplingOptions options;
  options.temperature = 0.0;
  const std::vector<int32_t> greedy = expected.load("greedy_ids", DType::I32).to_vector<int32_t>();
  options.max_new_tokens = static_cast<int64_t>(greedy.size());
  options.eot_token = -1;
  REQUIRE(gpt2::generate(*model, expected.load("prompt_ids", DType::I32).to_vector<int32_t>(), options) == greedy);
}

TEST_CASE("cuda: LoRA is exact at initialisation and merged equals unmerged", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  gpt2::GPT2 model(gpt2::GPT2Config::preset("tiny"), 3);
  model.to(kCuda);
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 5, 9, 33, 70, 2}, {1, 6}, kCuda);
  const Tensor base = model.forward(ids);
  nn::LoRAConfig config;
  config.targets = {"q", "v", "mlp.c_proj"};
  config.options.rank = 4;
  nn::apply_lora(model, config);
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
      gpt2::GPT2 model(gpt2::GPT2Config::preset("tiny"), 6);
      if (use_lora) {
        nn::LoRAConfig config;
        config.options.rank = 4;
        nn::apply_lora(model, config);
      }
      model.to(device);
      optim::AdamW opt(model.parameters(true), {.lr = 1e-2});
      const Tensor x = Tensor::from_vector(in_ids, {2, 16}, device), y = Tensor::from_vector(target_ids, {2, 16}, device);
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
