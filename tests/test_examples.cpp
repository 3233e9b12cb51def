// End-to-end runs of the example programs as subprocesses: outputs against the library, errors, --help.
//
// Programs are found beside the test binary's folder (BUILD/tests/lora_tests -> BUILD/<program>); a test
// whose program was not built (LORA_BUILD_EXAMPLES=OFF) warns and passes.
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "models/gpt2/model.h"
#include "models/registry.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "tests/program_runner.h"

namespace fs = std::filesystem;
using namespace lora;
using namespace lora::testing;

namespace {}  // namespace

TEST_CASE("generate: greedy tokens of the tiny fixture, streamed and as JSON", "[examples]") {
  REQUIRE_PROGRAM(generate, "generate");
  const RunResult r = run(generate, "--weights " + quote(kTinyModel) +
                                        " --prompt-ids 5,17,42,8 --max-new-tokens 12 --temperature 0 --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const nlohmann::json j = last_json_line(r.out);
  const std::vector<int32_t> prompt = {5, 17, 42, 8}, greedy = {7, 23, 23, 23, 11, 11, 11, 15, 75, 14, 15, 15};
  CHECK(j["prompt_ids"].get<std::vector<int32_t>>() == prompt);
  CHECK(j["generated_ids"].get<std::vector<int32_t>>() == greedy);
  CHECK(j["tokens_per_s"].get<double>() > 0);

  // The streamed text (prompt, then continuation) comes first, on its own line.
  const auto tokenizer = tokenizer::GPT2Tokenizer::load_default();
  CHECK(j["text"].get<std::string>() == tokenizer.decode(greedy));
  CHECK(r.out.rfind(tokenizer.decode(prompt) + tokenizer.decode(greedy) + "\n", 0) == 0);
}

TEST_CASE("generate: a random model with a notice, and clear errors", "[examples]") {
  REQUIRE_PROGRAM(generate, "generate");
  const RunResult random = run(generate, "--config tiny --prompt-ids 1,2 --max-new-tokens 3 --seed 1");
  CHECK(random.exit_code == 0);
  CHECK_THAT(random.err, Catch::Contains("randomly initialised"));

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--bogus", "--bogus"},
      {"--prompt hi --prompt-ids 1", "--prompt-ids"},
      {"--config tiny --prompt-ids 1,x", "'x'"},
      {"--config tiny --prompt ''", "--prompt is empty"},
      {"--weights /nonexistent/model --prompt-ids 1", "/nonexistent/model"},
      {"--config tiny --prompt-ids 1 --top-p 2", "--top-p"},
  };
  for (const auto& [args, message] : bad) {
    INFO("generate " << args);
    const RunResult r = run(generate, args);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
}

TEST_CASE("perplexity: windows and loss on an llm.c .bin match the library", "[examples]") {
  REQUIRE_PROGRAM(perplexity, "perplexity");
  const int64_t T = 8, n_tokens = 43;  // floor(42 / 8) = 5 windows; batches of 2 leave a partial last batch
  std::vector<int32_t> tokens(static_cast<size_t>(n_tokens));
  Generator gen(7);
  for (int32_t& t : tokens) t = static_cast<int32_t>(gen.next_u64() % 101);
  const fs::path data = scratch_dir() / "tokens.bin";
  write_file(data, llmc_bin(tokens));

  const RunResult r = run(
      perplexity, "--weights " + quote(kTinyModel) + " --data " + quote(data.string()) + " --seq 8 --batch 2 --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const nlohmann::json j = last_json_line(r.out);
  const int64_t windows = (n_tokens - 1) / T;
  CHECK(j["windows"].get<int64_t>() == windows);
  CHECK(j["tokens"].get<int64_t>() == windows * T);
  const double loss = j["mean_loss"].get<double>();
  REQUIRE(std::isfinite(loss));
  CHECK(j["perplexity"].get<double>() == Approx(std::exp(loss)).epsilon(1e-9));

  // The same mean through the library, one window at a time.
  auto model = models::load_model(kTinyModel, "");
  model->eval();
  NoGradGuard no_grad;
  double sum = 0.0;
  for (int64_t k = 0; k < windows; ++k) {
    const std::vector<int32_t> ids(tokens.begin() + k * T, tokens.begin() + k * T + T);
    const std::vector<int32_t> targets(tokens.begin() + k * T + 1, tokens.begin() + k * T + T + 1);
    sum += model->loss(Tensor::from_vector(ids, {1, T}), Tensor::from_vector(targets, {1, T})).item();
  }
  CHECK(loss == Approx(sum / double(windows)).epsilon(1e-5));
}

TEST_CASE("perplexity: bad input gives a clear error", "[examples]") {
  REQUIRE_PROGRAM(perplexity, "perplexity");
  const fs::path good = scratch_dir() / "good.bin", bad_magic = scratch_dir() / "bad_magic.bin",
                 truncated = scratch_dir() / "truncated.bin", text = scratch_dir() / "text.txt";
  write_file(good, llmc_bin(std::vector<int32_t>(20, 3)));
  write_file(bad_magic, llmc_bin(std::vector<int32_t>(20, 3), 12345));
  const std::string full = llmc_bin(std::vector<int32_t>(20, 3));
  write_file(truncated, full.substr(0, full.size() - 6));
  write_file(text, "Hello world, these tokens are beyond the tiny vocabulary.");

  const std::string weights = "--weights " + quote(kTinyModel);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {weights + " --data " + quote(good.string()) + " --bogus", "--bogus"},
      {weights, "--data"},
      {weights + " --data /nonexistent/tokens.bin", "/nonexistent/tokens.bin"},
      {weights + " --data " + quote(good.string()) + " --seq 0", "--seq"},
      {weights + " --data " + quote(good.string()) + " --seq 64", "--seq 64"},
      {weights + " --data " + quote(good.string()) + " --seq 30", "one window"},
      {weights + " --data " + quote(bad_magic.string()), "magic"},
      {weights + " --data " + quote(truncated.string()), truncated.string()},
      {weights + " --data " + quote(text.string()), "vocabulary"},
  };
  for (const auto& [args, message] : bad) {
    INFO("perplexity " << args);
    const RunResult r = run(perplexity, args);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
}

TEST_CASE("tokenize --json encodes text", "[examples]") {
  REQUIRE_PROGRAM(tokenize, "tokenize");
  const RunResult r = run(tokenize, "--json", "Hello world");
  REQUIRE(r.exit_code == 0);
  CHECK(last_json_line(r.out)["ids"].get<std::vector<int32_t>>() == std::vector<int32_t>{15496, 995});
  CHECK(run(tokenize, "--bogus").exit_code != 0);
}

TEST_CASE("every program answers --help", "[examples]") {
  // Every program of examples/ and benchmarks/, found from the sources, so that a new one is covered.
  const fs::path source = fs::path(LORA_TEST_DATA_DIR).parent_path().parent_path();
  std::vector<std::string> names;
  for (const char* folder : {"examples", "benchmarks"}) {
    for (const auto& entry : fs::directory_iterator(source / folder)) {
      if (entry.path().extension() == ".cpp") names.push_back(entry.path().stem().string());
    }
  }
  std::sort(names.begin(), names.end());
  REQUIRE(names.size() >= 20);
  int ran = 0;
  for (const std::string& name : names) {
    const fs::path program = program_path(name);
    if (program.empty()) {
      WARN(name << " was not built next to the tests: skipping");
      continue;
    }
    INFO(name);
    const RunResult r = run(program, "--help");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("--help"));
    ++ran;
  }
  // A build without the programs (the sanitizer build) checks none of them; the Release build checks all.
  if (ran == 0) WARN("no program was built next to the tests");
}

TEST_CASE("finetune --mode compare: the report holds LoRA's savings", "[examples][slow]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const fs::path report = scratch_dir() / "report.json";
  const RunResult r = run(finetune,
                          "--config small-test --steps 2 --warmup 1 --batch 2 --seq 32 --eval-batches 1 "
                          "--mode compare --report-json " +
                              quote(report.string()));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.find("Full fine-tuning vs LoRA") != std::string::npos);
  REQUIRE(r.out.find("trainable params: 16,384 || all params: 7,275,392") != std::string::npos);
  std::ifstream in(report);
  const auto j = nlohmann::json::parse(in);
  REQUIRE(j["modes"].size() == 2);
  const auto& full = j["modes"][0];
  const auto& lora = j["modes"][1];
  REQUIRE(full["mode"] == "full");
  REQUIRE(lora["mode"] == "lora");
  const int64_t base_bytes = full["total_params"].get<int64_t>() * 4;
  // Full fine-tuning: every parameter trains, with a gradient and two AdamW moments each.
  REQUIRE(full["trainable_params"] == full["total_params"]);
  REQUIRE(full["peak_bytes"]["gradients"] == base_bytes);
  REQUIRE(full["peak_bytes"]["optimizer_state"] == 2 * base_bytes);
  // LoRA: the frozen bytes are the base model; gradients and optimizer state are the adapters' alone.
  const int64_t lora_bytes = lora["trainable_params"].get<int64_t>() * 4;
  REQUIRE(lora["peak_bytes"]["frozen_params"] == base_bytes);
  REQUIRE(lora["peak_bytes"]["gradients"] == lora_bytes);
  REQUIRE(lora["peak_bytes"]["optimizer_state"] == 2 * lora_bytes);
  REQUIRE(lora["peak_bytes"]["gradients"].get<int64_t>() * 100 < full["peak_bytes"]["gradients"].get<int64_t>());
  REQUIRE(lora["peak_bytes"]["total"].get<int64_t>() < full["peak_bytes"]["total"].get<int64_t>());
  REQUIRE(lora["saved_bytes"].get<int64_t>() * 50 < full["saved_bytes"].get<int64_t>());
  for (const auto* mode : {&full, &lora}) {
    REQUIRE((*mode)["losses"].size() == 2);
    REQUIRE((*mode)["peak_rss_bytes"].get<int64_t>() >= (*mode)["peak_bytes"]["total"].get<int64_t>());
    REQUIRE((*mode)["step_time_s"].get<double>() > 0);
    REQUIRE((*mode)["tokens_per_s"].get<double>() > 0);
  }
}

TEST_CASE("a bad LORA_CPU_* setting ends a program with status 2, naming the variable", "[examples]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  for (const std::string setting : {"LORA_CPU_HUGEPAGES=yes", "LORA_CPU_CACHE_MIB=-1"}) {
    INFO(setting);
    const RunResult r = run("/usr/bin/env", setting + " " + quote(finetune) + " --config tiny --steps 1");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(setting.substr(0, setting.find('='))) != std::string::npos);
  }
  CHECK(run("/usr/bin/env", "LORA_CPU_HUGEPAGES=0 " + quote(finetune) + " --help").exit_code == 0);
}

TEST_CASE("finetune: bad flags exit non-zero with a clear message", "[examples]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  RunResult r = run(finetune, "--mode half");
  REQUIRE(r.exit_code != 0);
  r = run(finetune, "--config tiny --steps 1 --mode lora --data /nonexistent.txt");
  REQUIRE(r.exit_code != 0);
  REQUIRE(r.err.find("/nonexistent.txt") != std::string::npos);
  r = run(finetune, "--config tiny --steps 1 --mode lora --targets q,zz");
  REQUIRE(r.exit_code != 0);
  r = run(finetune, "--help");
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.find("--rank") != std::string::npos);
}
