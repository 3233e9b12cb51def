// Fault tolerance of training, end to end: runs killed with SIGKILL at chosen moments (mid-step, between
// writing a checkpoint and committing it) and at random moments, then resumed (perhaps killed again), end
// with weights bit-identical to an uninterrupted run, for full fine-tuning and LoRA with dropout on.
// SIGTERM saves and exits cleanly. A checkpoint of another run is refused naming what differs. A
// non-finite loss stops training with an error (or skips the step with --skip-nonfinite) and nothing
// non-finite is saved.
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "core/random.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "nn/quantized_linear.h"
#include "tests/program_runner.h"
#include "train/checkpoint.h"

using namespace lora;
using namespace lora::testing;

namespace {

// A tiny GPT-2 with every dropout at 0.1, and a learnable token stream.
struct Setup {
  fs::path dir, config, data;
};

Setup make_setup(const std::string& name) {
  Setup s;
  s.dir = scratch_dir() / name;
  fs::remove_all(s.dir);
  fs::create_directories(s.dir);
  s.config = s.dir / "config.json";
  write_file(s.config, R"({"model_type": "gpt2", "vocab_size": 101, "n_positions": 32, "n_embd": 48, "n_layer": 2,
    "n_head": 4, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1})");
  std::vector<int32_t> tokens;
  for (int i = 0; i < 4000; ++i) tokens.push_back((i * 7 + 3) % 101);
  s.data = s.dir / "tokens.bin";
  write_file(s.data, llmc_bin(tokens));
  return s;
}

std::vector<std::string> train_args(const Setup& s, const std::string& mode, const fs::path& save) {
  std::vector<std::string> args = {"--config",       s.config.string(),
                                   "--data",         s.data.string(),
                                   "--mode",         mode,
                                   "--steps",        "10",
                                   "--batch",        "2",
                                   "--seq",          "16",
                                   "--warmup",       "1",
                                   "--eval-batches", "1",
                                   "--save",         save.string(),
                                   "--save-every",   "2"};
  if (mode == "lora") args.insert(args.end(), {"--lora-dropout", "0.1", "--rank", "4"});
  return args;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

fs::path result_file(const fs::path& save, const std::string& mode) {
  return mode == "lora" ? save / "lora" / "adapter_model.safetensors" : save / "full" / "model.safetensors";
}

}  // namespace

TEST_CASE("training killed at any moment and resumed ends bit-identical to an uninterrupted run", "[resume][slow]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  for (const std::string mode : {"lora", "full"}) {
    INFO(mode);
    const Setup s = make_setup("kill_" + mode);
    const fs::path log = s.dir / "log.txt";
    const fs::path reference = s.dir / "reference";
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(Child(finetune, train_args(s, mode, reference), log).wait() == 0);
    const auto run_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    const std::string expected = read_bytes(result_file(reference, mode));
    REQUIRE(!expected.empty());

    const fs::path save = s.dir / "interrupted";
    auto resume_args = train_args(s, mode, save);
    resume_args.insert(resume_args.end(), {"--resume", save.string()});
    // 1. Killed in the middle of step 5 (after backward, before the update): checkpoint-4 remains.
    REQUIRE(Child(finetune, train_args(s, mode, save), log, {"LORA_FAULT_INJECT=train-step:5"}).wait() ==
            128 + SIGKILL);
    REQUIRE(fs::exists(save / "checkpoint-000000004" / "state.json"));
    // 2. Resumed, then killed while its first checkpoint (step 6) is written but not committed.
    REQUIRE(Child(finetune, resume_args, log, {"LORA_FAULT_INJECT=checkpoint-commit:1"}).wait() == 128 + SIGKILL);
    REQUIRE_FALSE(fs::exists(save / "checkpoint-000000006"));
    // 3. Resumed and killed at a random moment of the run's duration, three times (a kill may land anywhere:
    //    start-up, a step, a checkpoint write, the final save), then resumed to the end.
    Generator gen(mode == "lora" ? 11 : 12);
    int kills = 0;
    for (int attempt = 0; attempt < 3; ++attempt) {
      Child child(finetune, resume_args, log);
      std::this_thread::sleep_for(std::chrono::milliseconds(gen.below(uint64_t(run_ms) + 1)));
      int code = 0;
      if (child.finished(code)) {
        REQUIRE(code == 0);  // it completed before the kill: start the next attempt from the finished run
        continue;
      }
      child.signal(SIGKILL);
      // The run may have finished between the check above and the signal: then it exited 0, as in the branch
      // above, and the next attempt resumes a finished run.
      const int status = child.wait();
      REQUIRE((status == 128 + SIGKILL || status == 0));
      if (status == 128 + SIGKILL) ++kills;
    }
    INFO(kills << " random kills in runs of about " << run_ms << " ms");
    REQUIRE(Child(finetune, resume_args, log).wait() == 0);
    CHECK(read_bytes(result_file(save, mode)) == expected);
    // No staging folders or temporaries of dead processes are left behind in the checkpoint folder.
    for (const auto& entry : fs::directory_iterator(save)) {
      const std::string name = entry.path().filename().string();
      INFO(name);
      CHECK((name == mode || name.rfind("checkpoint-", 0) == 0));
    }
  }
}

TEST_CASE("SIGTERM saves a checkpoint and exits, and the resumed run finishes as an uninterrupted one",
          "[resume][slow]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Setup s = make_setup("sigterm");
  const fs::path log = s.dir / "log.txt";
  const fs::path reference = s.dir / "reference";
  REQUIRE(Child(finetune, train_args(s, "lora", reference), log).wait() == 0);
  const fs::path save = s.dir / "run";
  {
    Child child(finetune, train_args(s, "lora", save), log);
    // Wait for the first checkpoint, so that the signal arrives during training, then ask it to stop.
    for (int i = 0; i < 2000 && !fs::exists(save / "checkpoint-000000002"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    child.signal(SIGTERM);
    const int code = child.wait();
    if (code == 0) {
      WARN("the run finished before SIGTERM arrived");  // a very fast machine: nothing to test
      return;
    }
    REQUIRE(code == 128 + SIGTERM);
  }
  CHECK_THAT(read_bytes(log), Catch::Contains("interrupted (signal 15)"));
  auto resume = train_args(s, "lora", save);
  resume.insert(resume.end(), {"--resume", save.string()});
  REQUIRE(Child(finetune, resume, log).wait() == 0);
  CHECK(read_bytes(result_file(save, "lora")) == read_bytes(result_file(reference, "lora")));
}

TEST_CASE("a checkpoint of another run is refused, naming what differs", "[resume]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Setup s = make_setup("mismatch");
  const fs::path save = s.dir / "run";
  auto args = train_args(s, "lora", save);
  args[7] = "4";  // --steps 4: checkpoint-2 stays
  const fs::path log = s.dir / "log.txt";
  REQUIRE(Child(finetune, args, log).wait() == 0);
  auto refused = [&](std::vector<std::string> changed, const std::string& message) {
    changed.insert(changed.end(), {"--resume", save.string()});
    const fs::path out = s.dir / "refused.txt";
    fs::remove(out);
    CHECK(Child(finetune, changed, out).wait() == 1);
    INFO(read_bytes(out));
    CHECK_THAT(read_bytes(out), Catch::Contains("belongs to another run") && Catch::Contains(message));
  };
  auto rank = args;
  rank[rank.size() - 1] = "8";  // --rank 8
  refused(rank, "lora.rank: 4 in the checkpoint, 8 now");
  auto batch = args;
  batch[9] = "3";
  refused(batch, "batch: 2 in the checkpoint, 3 now");
  auto full = args;
  full[5] = "full";
  full.resize(full.size() - 4);  // no LoRA flags
  refused(full, "mode: \"lora\" in the checkpoint, \"full\" now");
  // Another model: a wider config.
  const fs::path wide = s.dir / "wide.json";
  write_file(wide, R"({"model_type": "gpt2", "vocab_size": 101, "n_positions": 32, "n_embd": 64, "n_layer": 2,
    "n_head": 4, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1})");
  auto model = args;
  model[1] = wide.string();
  refused(model, "model.n_embd: 48 in the checkpoint, 64 now");
  // Resuming from a folder without checkpoints.
  auto empty = args;
  empty.insert(empty.end(), {"--resume", (s.dir / "nothing").string()});
  const fs::path out = s.dir / "empty.txt";
  CHECK(Child(finetune, empty, out).wait() == 1);
  CHECK_THAT(read_bytes(out), Catch::Contains("no complete checkpoint"));
}

TEST_CASE("the frozen weights' fingerprint covers a quantized base: its values and its format", "[resume]") {
  auto base = [](uint64_t seed, QuantFormat format) {
    auto model = models::create_model(models::read_config_arg("llama-tiny"), seed);
    model->freeze();
    models::quantize_base(*model, format);
    return model;
  };
  const std::string q8 = train::RunIdentity::fingerprint(*base(1, QuantFormat::Q8_0));
  CHECK(train::RunIdentity::fingerprint(*base(1, QuantFormat::Q8_0)) == q8);  // the same base again
  CHECK(train::RunIdentity::fingerprint(*base(1, QuantFormat::Q4_0)) != q8);  // the same values, another format
  // Other values in the quantized layers only: the f32 rest (embeddings, norms, head) is the same.
  auto a = base(1, QuantFormat::Q8_0), b = base(1, QuantFormat::Q8_0);
  for (const auto& [path, module] : b->named_modules()) {
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinear>(module)) {
      auto changed = std::make_shared<QuantizedWeight>(*q->quantized);
      changed->data = changed->data.clone();
      static_cast<uint8_t*>(changed->data.raw_data())[5] ^= 1;
      q->quantized = changed;
      break;
    }
  }
  CHECK(train::RunIdentity::fingerprint(*a) != train::RunIdentity::fingerprint(*b));
}

TEST_CASE("a non-finite loss stops training naming the step, or skips the step with --skip-nonfinite", "[resume]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Setup s = make_setup("nonfinite");
  // A learning rate of 1e30 turns the weights into overflow after one update.
  std::vector<std::string> args = {"--config",       s.config.string(),
                                   "--data",         s.data.string(),
                                   "--mode",         "full",
                                   "--steps",        "4",
                                   "--batch",        "2",
                                   "--seq",          "8",
                                   "--warmup",       "1",
                                   "--lr",           "1e30",
                                   "--grad-clip",    "0",
                                   "--eval-batches", "1",
                                   "--save",         (s.dir / "out").string()};
  const fs::path log = s.dir / "stop.txt";
  CHECK(Child(finetune, args, log).wait() == 1);
  CHECK_THAT(read_bytes(log), Catch::Contains("step 2: the loss is") && Catch::Contains("--skip-nonfinite"));
  CHECK_FALSE(fs::exists(s.dir / "out" / "full"));

  args.push_back("--skip-nonfinite");
  args.insert(args.end(), {"--report-json", (s.dir / "report.json").string()});
  const fs::path skip_log = s.dir / "skip.txt";
  const int code = Child(finetune, args, skip_log).wait();
  INFO(read_bytes(skip_log));
  // Step 1's update leaves huge but finite weights; steps 2 to 4 overflow and are skipped, not applied.
  REQUIRE(code == 0);
  const auto report = nlohmann::json::parse(read_bytes(s.dir / "report.json"));
  CHECK(report["modes"][0]["skipped_steps"].get<int>() == 3);
  CHECK_THAT(read_bytes(skip_log), Catch::Contains("3 of 4 steps were skipped"));
}
