// Activation checkpointing: gradients bit-identical with and without it (full and LoRA, GPT-2 and Llama,
// dropout on), the same dropout masks on recomputation, and the activation peak falling.
#include <catch2/catch.hpp>

#include "autograd/checkpoint.h"
#include "models/lora.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "tests/op_cases.h"

using namespace lora;

namespace {

models::ModelConfig gpt2_with_dropout(int64_t layers = 3) {
  return {nlohmann::json::parse(fmt::format(R"({{"model_type": "gpt2", "vocab_size": 101, "n_positions": 64,
    "n_embd": 48, "n_layer": {}, "n_head": 4, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}})",
                                            layers)),
          "test config"};
}

models::ModelConfig llama_tiny() {
  return {models::preset_config("llama-tiny"), "preset 'llama-tiny'"};
}

struct StepResult {
  double loss;
  std::vector<std::pair<std::string, std::vector<float>>> grads;
  int64_t activation_peak, gradient_peak;
};

// One forward and backward of the model on fixed tokens; the model's random streams start where `streams`
// says, so that both runs draw the same dropout masks.
StepResult step(models::CausalLM& model, bool checkpointing, int64_t batch = 2, int64_t seq = 16) {
  for (auto& [name, counter] : model.named_rng_counters()) *counter = 0;
  for (auto& p : model.parameters(true)) p.set_grad(Tensor());
  std::vector<int32_t> ids(static_cast<size_t>(batch * seq)), targets(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % 101), targets[i] = int32_t((i * 5 + 1) % 101);
  autograd::CheckpointGuard mode(checkpointing);
  auto& tracker = MemoryTracker::instance();
  tracker.reset_peaks();
  Tensor loss = model.loss(Tensor::from_vector(ids, {batch, seq}), Tensor::from_vector(targets, {batch, seq}));
  backward(loss);
  const auto stats = tracker.stats();
  StepResult r{loss.item(), {}, stats.peak[MemoryCategory::Activation], stats.peak[MemoryCategory::Gradient]};
  for (const auto& [name, p] : model.named_parameters(true)) r.grads.emplace_back(name, p.grad().to_vector<float>());
  return r;
}

void require_identical(const StepResult& a, const StepResult& b) {
  REQUIRE(a.loss == b.loss);
  REQUIRE(a.grads.size() == b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    INFO("gradient of " << a.grads[i].first);
    REQUIRE(a.grads[i].first == b.grads[i].first);
    CHECK(a.grads[i].second == b.grads[i].second);  // bit for bit
  }
}

}  // namespace

// The op's registered cases: y = tanh(x W^T) W checkpointed, x and W training.
LORA_OP_CASES(checkpoint_cases) {
  const testing::OpFn f = [](const testing::Inputs& in) {
    const Tensor w = in[1];
    return autograd::checkpoint(
        [w](const Tensor& x) { return ops::linear(ops::tanh(ops::linear(x, w)), ops::transpose(w, 0, 1)); }, in[0],
        {w});
  };
  testing::gradcheck_case("checkpoint", "a two-layer function of x and W", f, [] {
    Generator gen(51);
    return testing::Inputs{testing::randn_leaf({3, 5}, gen, DType::F64), testing::randn_leaf({4, 5}, gen, DType::F64)};
  });
  testing::parity_case(
      "checkpoint", "a two-layer function of x and W", f,
      [] {
        Generator gen(52);
        return testing::Inputs{testing::randn_leaf({3, 5}, gen, DType::F32),
                               testing::randn_leaf({4, 5}, gen, DType::F32)};
      },
      testing::kGemm);
}

TEST_CASE("checkpointed blocks give bit-identical gradients, dropout on", "[checkpoint]") {
  for (const std::string which : {"gpt2", "llama"}) {
    for (const bool lora : {false, true}) {
      DYNAMIC_SECTION(which << (lora ? ", LoRA" : ", full")) {
        auto model = models::create_model(which == "gpt2" ? gpt2_with_dropout() : llama_tiny(), 3);
        model->train();
        if (lora) {
          nn::LoRAConfig config;
          config.targets = {"all-linear"};
          config.options.dropout = 0.1;
          config.options.seed = 4;
          models::apply_lora(*model, config);
          // B starts at zero: give it values so that the adapters' gradients reach A too.
          for (auto& [name, layer] : nn::lora_layers(*model)) {
            Generator gen(5);
            layer->lora_B.copy_from(Tensor::randn(layer->lora_B.shape(), gen, 0.0, 0.1));
          }
        }
        const StepResult plain = step(*model, false), checkpointed = step(*model, true);
        require_identical(plain, checkpointed);
        // A second pair: the streams carry on, and still agree.
        require_identical(step(*model, false), step(*model, true));
      }
    }
  }
}

TEST_CASE("checkpointing through an nf4 base gives the same gradients as without", "[checkpoint][quantized]") {
  auto model = models::create_model(gpt2_with_dropout(), 6);
  model->train();
  nn::LoRAConfig config;
  models::apply_lora(*model, config);
  models::quantize_base(*model, QuantFormat::NF4);
  require_identical(step(*model, false), step(*model, true));
}

TEST_CASE("checkpointing keeps the block inputs, not every block's activations", "[checkpoint][memory]") {
  auto model = models::create_model(gpt2_with_dropout(6), 7);
  model->train();
  const StepResult plain = step(*model, false, 4, 64), checkpointed = step(*model, true, 4, 64);
  INFO("activation peak: " << plain.activation_peak << " bytes plain, " << checkpointed.activation_peak
                           << " checkpointed");
  // Six blocks: the checkpointed peak is the block inputs plus one block's activations (and the head's).
  CHECK(checkpointed.activation_peak * 2 < plain.activation_peak);
  // The recomputation's gradient of the block input is an activation's gradient: it is charged as a leaf's
  // gradient only while the inner backward runs (at most one block input, [4, 64, 48] f32, at a time).
  CHECK(checkpointed.gradient_peak <= plain.gradient_peak + 4 * 64 * 48 * 4);
  require_identical(plain, checkpointed);
}

TEST_CASE("checkpoint is a plain call without gradients to record", "[checkpoint]") {
  Generator gen(61);
  const Tensor x = Tensor::randn({2, 3}, gen);
  int calls = 0;
  const auto fn = [&calls](const Tensor& t) {
    ++calls;
    return t * 2.0;
  };
  const Tensor y = autograd::checkpoint(fn, x, {});
  CHECK_FALSE(y.requires_grad());
  CHECK(calls == 1);
  CHECK(autograd::Tape::current().size() == 0);
}
