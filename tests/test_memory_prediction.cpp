// The memory prediction (a meta-device dry run of the training step, train/memory_prediction.h) against
// the measurement, for every model the framework has, full fine-tuning and LoRA: each category within
// 1% + 64 KiB of what the allocator-tracked CPU step charges, end to end through finetune's report too.
// And the pre-flight check's refusal names the categories and what to change.
#include <catch2/catch.hpp>

#include "autograd/checkpoint.h"
#include "autograd/tape.h"
#include "models/lora.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "tests/program_runner.h"
#include "train/memory_prediction.h"
#include "train/train_step.h"

using namespace lora;

namespace {

// The same two steps as the prediction (train_step), on the CPU, measured by the tracker.
DeviceMemoryStats measure_training_step(const models::ModelConfig& config, const nn::LoRAConfig* lora, int64_t batch,
                                        int64_t seq, QuantFormat base = QuantFormat::F32, bool checkpoint = false) {
  auto model = models::create_model(config, 0);
  if (lora) models::apply_lora(*model, *lora);
  if (lora) models::quantize_base(*model, base);
  autograd::CheckpointGuard checkpointing(checkpoint);
  optim::AdamW optimizer(model->parameters(true), {});
  Generator gen(1);
  std::vector<int32_t> ids(size_t(batch * seq));
  for (auto& id : ids) id = static_cast<int32_t>(gen.below(uint64_t(model->dims().vocab_size)));
  train::Batch batch_of_ids;
  batch_of_ids.ids = Tensor::from_vector(ids, {batch, seq});
  batch_of_ids.targets = batch_of_ids.ids;
  batch_of_ids.trained_tokens = batch * seq;
  batch_of_ids.sequences = batch;
  MemoryTracker::instance().reset_peaks(Device::cpu());
  for (int step = 0; step < 2; ++step) REQUIRE(train::train_step(*model, optimizer, {batch_of_ids}).applied);
  return MemoryTracker::instance().stats(Device::cpu());
}

bool close(int64_t predicted, int64_t measured) {
  return std::abs(double(predicted - measured)) <= 0.01 * double(measured) + 65536.0;
}

}  // namespace

TEST_CASE("predicted step memory matches the measured step for every model, full and LoRA", "[memory]") {
  for (const std::string preset : {"tiny", "small-test", "llama-tiny"}) {
    for (const bool use_lora : {false, true}) {
      INFO(preset << (use_lora ? " lora" : " full"));
      const models::ModelConfig config = models::read_config_arg(preset);
      nn::LoRAConfig lora;
      lora.options.rank = 4;
      lora.targets =
          preset == "llama-tiny" ? std::vector<std::string>{"all-linear"} : std::vector<std::string>{"q", "v"};
      const auto predicted = train::predict_training_step(config, use_lora ? &lora : nullptr, 2, 16);
      const DeviceMemoryStats measured = measure_training_step(config, use_lora ? &lora : nullptr, 2, 16);
      autograd::Tape::current().clear();
      for (int c = 0; c < kNumMemoryCategories; ++c) {
        INFO(category_name(static_cast<MemoryCategory>(c))
             << ": predicted " << predicted.peak.bytes[c] << ", measured " << measured.peak.bytes[c]);
        CHECK(close(predicted.peak.bytes[c], measured.peak.bytes[c]));
      }
      CHECK(close(predicted.total_peak, measured.global_peak));
      CHECK(predicted.peak[MemoryCategory::Activation] > 0);
      if (use_lora)
        CHECK(predicted.peak[MemoryCategory::Gradient] < predicted.peak[MemoryCategory::FrozenParameter] / 10);
    }
  }
}

TEST_CASE("predicted step memory matches the measured step on an nf4 base with checkpointing", "[memory][quantized]") {
  for (const std::string preset : {"small-test", "llama-tiny"}) {
    for (const bool checkpoint : {false, true}) {
      INFO(preset << " lora on nf4" << (checkpoint ? ", checkpointed" : ""));
      const models::ModelConfig config = models::read_config_arg(preset);
      nn::LoRAConfig lora;
      lora.options.rank = 4;
      lora.targets = {"all-linear"};
      const auto predicted = train::predict_training_step(config, &lora, 2, 16, QuantFormat::NF4, checkpoint);
      const DeviceMemoryStats measured = measure_training_step(config, &lora, 2, 16, QuantFormat::NF4, checkpoint);
      autograd::Tape::current().clear();
      for (int c = 0; c < kNumMemoryCategories; ++c) {
        INFO(category_name(static_cast<MemoryCategory>(c))
             << ": predicted " << predicted.peak.bytes[c] << ", measured " << measured.peak.bytes[c]);
        CHECK(close(predicted.peak.bytes[c], measured.peak.bytes[c]));
      }
      CHECK(close(predicted.total_peak, measured.global_peak));
    }
  }
}

TEST_CASE("finetune's report: prediction and measurement agree", "[memory][examples]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  for (const std::string mode : {"full", "lora"}) {
    INFO(mode);
    const auto json = testing::scratch_dir() / ("predict_" + mode + ".json");
    const testing::RunResult r = testing::run(finetune, "--config small-test --mode " + mode +
                                                            " --steps 2 --warmup 1 --batch 2 --seq 32 --eval-batches 1 "
                                                            "--report-json " +
                                                            testing::quote(json));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::ifstream in(json);
    const auto m = nlohmann::json::parse(in)["modes"][0];
    for (const auto& [category, bytes] : m["peak_bytes"].items()) {
      INFO(category);
      CHECK(close(m["predicted_bytes"][category].get<int64_t>(), bytes.get<int64_t>()));
    }
  }
}

TEST_CASE("the pre-flight check refuses what will not fit, by category and with what to change", "[memory]") {
  const auto prediction = train::predict_training_step(models::read_config_arg("gpt2-xl"), nullptr, 1, 256);
  // GPT-2 XL, full fine-tuning: parameters, gradients and AdamW's two moments, four copies of 1.56 B floats.
  CHECK(prediction.peak[MemoryCategory::TrainableParameter] == int64_t(1557611200) * 4);
  CHECK(prediction.peak[MemoryCategory::OptimizerState] == int64_t(1557611200) * 8);
  REQUIRE_THROWS_WITH(
      train::check_fits(prediction, int64_t(24) << 30, int64_t(512) << 20, "full fine-tuning", "Use --mode lora."),
      Catch::Contains("will not fit") && Catch::Contains("optimizer_state") && Catch::Contains("Use --mode lora"));
  nn::LoRAConfig lora;
  const auto lora_prediction = train::predict_training_step(models::read_config_arg("gpt2-xl"), &lora, 1, 256);
  CHECK_NOTHROW(train::check_fits(lora_prediction, int64_t(24) << 30, int64_t(512) << 20, "LoRA", ""));
}
