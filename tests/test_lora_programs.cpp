// End-to-end runs of the LoRA programs as subprocesses: an adapter trained by finetune on the tiny
// fixture gives the same greedy tokens unmerged (generate --adapter), merged (--merge) and folded into
// a plain GPT-2 by merge_lora; the merged checkpoint holds exactly W + s B A; errors and --help; and
// bench_inference on the tiny preset.
//
// Programs are found beside the test binary's folder (BUILD/tests/lora_tests -> BUILD/<program>); a test
// whose program was not built (LORA_BUILD_EXAMPLES=OFF) warns and passes.
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "core/safetensors.h"
#include "models/gpt2/model.h"
#include "models/registry.h"
#include "nn/lora/adapter.h"
#include "tests/program_runner.h"

namespace fs = std::filesystem;
using namespace lora;
using namespace lora::testing;

namespace {

// ---------------------------------------------------------------------------------------------------
// Adapters trained by finetune

// 400 tokens below the tiny vocabulary (101), with some structure to learn.
fs::path token_file() {
  const fs::path path = scratch_dir() / "lora_adapter_tokens.bin";
  if (!fs::exists(path)) {
    std::vector<int32_t> tokens;
    Generator gen(11);
    for (int i = 0; i < 400; ++i) tokens.push_back(i % 3 == 0 ? 42 : static_cast<int32_t>(gen.below(101)));
    write_file(path, llmc_bin(tokens));
  }
  return path;
}

// Trains a LoRA adapter (r=8 on q,v: finetune's defaults) and returns its folder, SAVE/lora.
fs::path train_adapter(const fs::path& finetune, const std::string& model_args, const std::string& name,
                       const std::string& train_args) {
  const fs::path save = scratch_dir() / name;
  if (fs::exists(save / "lora" / "adapter_model.safetensors")) return save / "lora";
  const RunResult r = run(finetune, model_args + " --data " + quote(token_file()) + " --mode lora " + train_args +
                                        " --save " + quote(save));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(fs::exists(save / "lora" / "adapter_config.json"));
  return save / "lora";
}

// The adapter for the tiny fixture: 3 steps at a high learning rate, so B moves well away from zero.
fs::path tiny_adapter(const fs::path& finetune) {
  return train_adapter(finetune, "--weights " + quote(kTinyModel), "tiny_adapter",
                       "--steps 3 --warmup 1 --batch 2 --seq 8 --eval-batches 1 --lr 0.05");
}

std::vector<int32_t> greedy_ids(const fs::path& generate, const std::string& model_args, std::string* err = nullptr) {
  const RunResult r = run(generate, model_args + " --prompt-ids 5,17,42,8 --max-new-tokens 12 --temperature 0 --json");
  INFO("generate " << model_args << "\n" << r.err);
  REQUIRE(r.exit_code == 0);
  if (err) *err = r.err;
  return last_json_line(r.out)["generated_ids"].get<std::vector<int32_t>>();
}

std::map<std::string, std::vector<float>> tensors_of(const std::vector<std::pair<std::string, Tensor>>& state) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, t] : state) out[name] = t.to_vector<float>();
  return out;
}

std::map<std::string, std::vector<float>> tensors_of_file(const fs::path& path) {
  const SafeTensorsFile file = SafeTensorsFile::open(path.string());
  std::map<std::string, std::vector<float>> out;
  for (const std::string& name : file.names()) out[name] = file.load(name, DType::F32).to_vector<float>();
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------

TEST_CASE("a trained adapter gives the same greedy tokens unmerged, merged, and merged by merge_lora", "[examples]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  REQUIRE_PROGRAM(generate, "generate");
  REQUIRE_PROGRAM(merge, "merge_lora");
  const fs::path adapter = tiny_adapter(finetune);
  const std::string base_args = "--weights " + quote(kTinyModel);

  std::string unmerged_err, merged_err;
  const std::vector<int32_t> base_ids = greedy_ids(generate, base_args);
  const std::vector<int32_t> unmerged = greedy_ids(generate, base_args + " --adapter " + quote(adapter), &unmerged_err);
  const std::vector<int32_t> merged =
      greedy_ids(generate, base_args + " --adapter " + quote(adapter) + " --merge", &merged_err);
  CHECK_THAT(unmerged_err, Catch::Contains("2 adapted layers") && Catch::Contains("unmerged"));
  CHECK_THAT(merged_err, Catch::Contains("merged into the base weights"));

  const fs::path out = scratch_dir() / "merged_model";
  const RunResult m = run(merge, base_args + " --adapter " + quote(adapter) + " --out " + quote(out));
  INFO(m.out << m.err);
  REQUIRE(m.exit_code == 0);
  CHECK_THAT(m.out, Catch::Contains("2 adapted layers") && Catch::Contains("rank 8") &&
                        Catch::Contains("merged 2 layers") && Catch::Contains((out / "model.safetensors").string()));
  REQUIRE(fs::exists(out / "config.json"));
  const std::vector<int32_t> from_file = greedy_ids(generate, "--weights " + quote(out));

  CHECK(merged == unmerged);
  CHECK(from_file == unmerged);
  // The adapter was trained (3 steps at lr 0.05), so it changes what the model generates.
  CHECK(unmerged != base_ids);
}

TEST_CASE("merge_lora writes exactly W + s B A on the adapted slices and the base weights elsewhere", "[examples]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  REQUIRE_PROGRAM(merge, "merge_lora");
  const fs::path adapter = tiny_adapter(finetune);

  // A .safetensors --out: the file plus a config.json beside it.
  const fs::path dir = scratch_dir() / "merged_file", file = dir / "merged.safetensors";
  const std::string args = "--weights " + quote(kTinyModel) + " --adapter " + quote(adapter) + " --out " + quote(file);
  RunResult r = run(merge, args);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(fs::exists(file));
  REQUIRE(fs::exists(dir / "config.json"));
  // Again into the same place: the config.json there describes this model, so it is kept.
  r = run(merge, args);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("kept the existing"));

  // The file loads as a plain GPT-2, and holds what the library's merge computes, bit for bit.
  auto merged_model = models::load_model(file.string(), "");
  CHECK(nn::lora_layers(*merged_model).empty());
  auto reference = models::load_model(kTinyModel, "");
  nn::load_adapter(*reference, adapter.string());
  nn::merge_lora(*reference);
  const auto written = tensors_of_file(file), expected = tensors_of(reference->hf_state());
  const auto base = tensors_of(models::load_model(kTinyModel, "")->hf_state());
  REQUIRE(written.size() == base.size());
  for (const auto& [name, values] : base) {
    INFO(name);
    REQUIRE(written.count(name));
    CHECK(written.at(name) == expected.at(name));
    if (name.ends_with("attn.c_attn.weight")) {
      // HF layout [in = C, out = 3C]: columns [0, C) are q, [C, 2C) k, [2C, 3C) v. Only q and v move.
      const size_t C = 48;
      bool q_moved = false, k_moved = false, v_moved = false;
      for (size_t i = 0; i < C; ++i) {
        for (size_t j = 0; j < 3 * C; ++j) {
          const bool moved = written.at(name)[i * 3 * C + j] != values[i * 3 * C + j];
          (j < C ? q_moved : j < 2 * C ? k_moved : v_moved) |= moved;
        }
      }
      CHECK(q_moved);
      CHECK_FALSE(k_moved);
      CHECK(v_moved);
    } else {
      CHECK(written.at(name) == values);  // untouched by a q,v adapter
    }
  }
}

TEST_CASE("merge_lora and generate --adapter refuse bad adapters and outputs with a clear error", "[examples]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  REQUIRE_PROGRAM(generate, "generate");
  REQUIRE_PROGRAM(merge, "merge_lora");
  const std::string weights = "--weights " + quote(kTinyModel);
  const fs::path tiny = tiny_adapter(finetune);
  // An adapter for another model size: trained on the small-test preset (4 layers, 128 wide).
  const fs::path other = train_adapter(finetune, "--config small-test", "small_test_adapter",
                                       "--steps 1 --warmup 0 --batch 1 --seq 8 --eval-batches 1");
  const fs::path empty = scratch_dir() / "empty_adapter";
  fs::create_directories(empty);
  const fs::path foreign = scratch_dir() / "foreign_config";
  fs::create_directories(foreign);
  std::ofstream(foreign / "config.json") << gpt2::GPT2Config::preset("small-test").to_json().dump(2);
  const std::string out = " --out " + quote(scratch_dir() / "unused");

  const std::vector<std::tuple<fs::path, std::string, std::string>> bad = {
      {generate, weights + " --adapter /nonexistent/adapter --prompt-ids 1", "/nonexistent/adapter"},
      {merge, weights + " --adapter /nonexistent/adapter" + out, "/nonexistent/adapter"},
      {generate, weights + " --adapter " + quote(empty) + " --prompt-ids 1", "adapter_model.safetensors"},
      {merge, weights + " --adapter " + quote(empty) + out, "adapter_model.safetensors"},
      {generate, weights + " --adapter " + quote(other) + " --prompt-ids 1",
       "lora_A has shape [16, 128], expected [16, 48]"},
      {merge, weights + " --adapter " + quote(other) + out, "lora_A has shape [16, 128], expected [16, 48]"},
      {generate, weights + " --adapter " + quote(other) + " --prompt-ids 1", "the adapter was trained on 'small-test'"},
      {merge, weights + " --adapter " + quote(other) + out, "the adapter was trained on 'small-test'"},
      {generate, weights + " --merge --prompt-ids 1", "--adapter"},
      {merge, weights + " --adapter " + quote(tiny), "--out"},
      {merge, "--adapter " + quote(tiny) + out, "--weights"},
      {merge, weights + " --adapter " + quote(tiny) + " --out " + quote(kTinyModel), "overwrite the base model"},
      {merge, weights + " --adapter " + quote(tiny) + " --out " + quote(foreign / "m.safetensors"), "another model"},
  };
  for (const auto& [program, args, message] : bad) {
    INFO(program.filename().string() << " " << args);
    const RunResult r = run(program, args);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
  CHECK_FALSE(fs::exists(scratch_dir() / "unused"));
  CHECK_FALSE(fs::exists(foreign / "m.safetensors"));
}

TEST_CASE("bench_inference times base, unmerged and merged LoRA on the tiny preset", "[examples]") {
  REQUIRE_PROGRAM(bench, "bench_inference");
  const RunResult r =
      run(bench, "--config tiny --seq 16 --prompt-tokens 4 --new-tokens 8 --repeats 2 --threads 1 --json");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("LoRA merged vs base") && Catch::Contains("2 adapted layers"));
  const nlohmann::json j = last_json_line(r.out);
  for (const char* variant : {"base", "LoRA unmerged", "LoRA merged", "merged, unwrapped", "base, 2nd copy"}) {
    INFO(variant);
    CHECK(j.at(variant).at("forward_ms").get<double>() > 0);
    CHECK(j.at(variant).at("generate_ms").get<double>() > 0);
  }
  CHECK(j["max_abs_logit_diff_merged_unmerged"].get<double>() < 1e-4);
  CHECK(j["same_tokens_merged_unmerged"].get<bool>());

  const RunResult too_long = run(bench, "--config tiny --seq 64");
  CHECK(too_long.exit_code != 0);
  CHECK_THAT(too_long.err, Catch::Contains("--seq 64"));
}

TEST_CASE("merge_lora, bench_inference and generate answer --help", "[examples]") {
  for (const auto& [name, flag] : std::vector<std::pair<std::string, std::string>>{
           {"merge_lora", "--adapter"}, {"bench_inference", "--repeats"}, {"generate", "--merge"}}) {
    const fs::path program = program_path(name);
    if (program.empty()) {
      WARN(name << " was not built next to the tests: skipping");
      continue;
    }
    INFO(name);
    const RunResult r = run(program, "--help");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("--help") && Catch::Contains(flag));
  }
}
