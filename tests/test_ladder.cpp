// The ladder of examples (docs/ladder.md), each run end to end with small flags: seconds each, so CI runs
// every rung. The full-size runs and their figures are in docs/ladder.md.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/program_runner.h"

namespace fs = std::filesystem;
using namespace lora::testing;
using Catch::Matchers::Contains;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("ladder 1, autograd_basics: the tape, and autograd agrees with the chain rule and finite differences",
          "[ladder][examples]") {
  REQUIRE_PROGRAM(program, "autograd_basics");
  const RunResult r = run(program, "--rows 3 --seed 2");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("The tape: 5 nodes"));
  CHECK_THAT(r.out, Contains("x (activations)"));  // linear saved its input, recharged to activations
  CHECK_THAT(r.out, Contains("backward(L): the tape now holds 0 nodes"));
  CHECK_THAT(r.out, Contains("from finite differences: agree"));
  CHECK(count(r.out, "  W[") == 6);  // every element of dL/dW checked
  // Frozen W: linear saves nothing.
  CHECK_THAT(r.out.substr(r.out.find("with W frozen")), Contains("linear   x [3, 3], W [2, 3], b [2] grad"));
  CHECK(run(program, "--rows 0").exit_code != 0);
  CHECK(run(program, "--bogus").exit_code != 0);
}

TEST_CASE("ladder 2, train_mlp: SGD and Adam learn the moons, and the SVG shows both", "[ladder][examples]") {
  REQUIRE_PROGRAM(program, "train_mlp");
  const fs::path svg = scratch_dir() / "ladder_moons.svg";
  const RunResult r =
      run(program, "--dataset moons --points 60 --steps 300 --grid 24 --log-every 100 --json --out " + quote(svg));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const nlohmann::json j = last_json_line(r.out);
  CHECK(j["adam"]["held_out_accuracy"].get<double>() > 0.9);
  CHECK(j["sgd"]["held_out_accuracy"].get<double>() > 0.8);
  CHECK_THAT(r.out, Contains("ETA"));
  const std::string text = read_text(svg);
  CHECK(text.rfind("<svg ", 0) == 0);
  CHECK(text.size() > 100);
  CHECK(text.substr(text.size() - 7) == "</svg>\n");
  CHECK(count(text, "<circle") == 2 * 120);  // every training point, in both panels
  CHECK(count(text, "<g class=\"panel\"") == 2);

  const RunResult bad = run(program, "--dataset rings");
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.err, Contains("--dataset"));
  CHECK(run(program, "--steps 0").exit_code != 0);
}

TEST_CASE("ladder 3, train_char_gpt: a tiny character GPT learns, samples and is saved", "[ladder][examples]") {
  REQUIRE_PROGRAM(train, "train_char_gpt");
  const fs::path base = scratch_dir() / "ladder_char_gpt";
  const RunResult t = run(train,
                          "--steps 30 --layers 1 --embd 32 --heads 2 --seq 32 --batch 8 --warmup 5 "
                          "--eval-every 15 --eval-batches 2 --log-every 10 --sample-chars 40 --json --out " +
                              quote(base));
  INFO(t.out << t.err);
  REQUIRE(t.exit_code == 0);
  const nlohmann::json tj = last_json_line(t.out);
  CHECK(tj["held_out_loss"].get<double>() < std::log(65.0) - 0.5);  // it learned something in 30 steps
  CHECK_THAT(t.out, Contains("--- sample at step 15"));
  CHECK_THAT(t.out, Contains("ETA"));
  for (const char* file : {"config.json", "model.safetensors", "char_vocab.json"}) CHECK(fs::exists(base / file));

  const RunResult bad_heads = run(train, "--embd 32 --heads 3");
  CHECK(bad_heads.exit_code != 0);
  CHECK_THAT(bad_heads.err, Contains("--heads 3"));
  const RunResult bad_data = run(train, "--data " + quote(scratch_dir() / "no_such.txt"));
  CHECK(bad_data.exit_code != 0);
  CHECK_THAT(bad_data.err, Contains("no_such.txt"));
}

TEST_CASE("ladder 4, lora_char_gpt: LoRA on Austen, its memory, the adapter switched in and out",
          "[ladder][examples]") {
  REQUIRE_PROGRAM(train, "train_char_gpt");
  REQUIRE_PROGRAM(lora, "lora_char_gpt");
  const fs::path base = scratch_dir() / "ladder_lora_base", adapter = scratch_dir() / "ladder_austen";
  const RunResult t = run(train,
                          "--steps 30 --layers 1 --embd 32 --heads 2 --seq 32 --batch 8 --warmup 5 "
                          "--eval-every 0 --eval-batches 1 --sample-chars 0 --out " +
                              quote(base));
  INFO(t.out << t.err);
  REQUIRE(t.exit_code == 0);

  const RunResult l = run(lora, "--base " + quote(base) + " --out " + quote(adapter) +
                                    " --steps 20 --full-steps 2 --batch 8 --warmup 2 --eval-every 10 --eval-batches 2 "
                                    "--log-every 10 --sample-chars 40 --rank 4 --json");
  INFO(l.out << l.err);
  REQUIRE(l.exit_code == 0);
  const nlohmann::json lj = last_json_line(l.out);
  CHECK(lj["adapted"]["new_text"].get<double>() < lj["base"]["new_text"].get<double>());  // it fits Austen
  CHECK(lj["switched_out"]["base_text"].get<double>() == Approx(lj["base"]["base_text"].get<double>()).margin(1e-4));
  // Gradients: 4 bytes per trainable parameter, LoRA's alone vs the whole model's.
  CHECK(lj["lora_gradient_bytes"].get<int64_t>() == 4 * lj["trainable_params"].get<int64_t>());
  CHECK(lj["full_gradient_bytes"].get<int64_t>() == 4 * lj["base_params"].get<int64_t>());
  CHECK(lj["lora_peak_bytes"].get<int64_t>() < lj["full_peak_bytes"].get<int64_t>());
  CHECK_THAT(l.out, Contains("optimizer_state"));
  CHECK_THAT(l.out, Contains("switching the adapter out restores the base model: yes"));
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) CHECK(fs::exists(adapter / file));

  const RunResult no_base = run(lora, "--base " + quote(scratch_dir() / "nothing_here"));
  CHECK(no_base.exit_code != 0);
  CHECK_THAT(no_base.err, Contains("char_vocab.json"));
  const RunResult bad_seq = run(lora, "--base " + quote(base) + " --seq 64");
  CHECK(bad_seq.exit_code != 0);
  CHECK_THAT(bad_seq.err, Contains("context of 32"));
  const RunResult bad_target = run(lora, "--base " + quote(base) + " --targets zz --steps 2 --warmup 0 --full-steps 0");
  CHECK(bad_target.exit_code != 0);
  CHECK_THAT(bad_target.err, Contains("'zz'"));
}

TEST_CASE("training_step_tour: the same output every run, and LoRA's smaller step", "[ladder][examples]") {
  REQUIRE_PROGRAM(program, "training_step_tour");
  const RunResult first = run(program, ""), second = run(program, "");
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 0);
  CHECK(first.out == second.out);  // what docs/training-step.md quotes, and scripts/check-docs.sh compares
  for (const char* phase :
       {"after forward", "after backward", "after clipping", "after AdamW step", "after zero_grad"}) {
    CHECK(count(first.out, phase) == 2);  // full, then LoRA
  }
  CHECK_THAT(first.out, Contains("linear_cross_entropy"));
  CHECK(run(program, "--embd 30 --heads 4").exit_code != 0);
}

TEST_CASE("the ladder's programs answer --help", "[ladder][examples]") {
  for (const char* name : {"autograd_basics", "train_mlp", "train_char_gpt", "lora_char_gpt", "training_step_tour"}) {
    const fs::path program = program_path(name);
    if (program.empty()) {
      WARN(name << " was not built next to the tests: skipping");
      continue;
    }
    INFO(name);
    const RunResult r = run(program, "--help");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Contains("--help"));
  }
}
