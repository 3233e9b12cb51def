// --base-dtype and --checkpoint-activations in the programs, as subprocesses on the tiny fixture: LoRA
// trains on an nf4 base with checkpointing, generate and perplexity run on a quantized base, and bad
// flags are refused naming them.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <tuple>

#include "core/files.h"
#include "core/random.h"
#include "tests/program_runner.h"

namespace fs = std::filesystem;
using namespace lora;
using namespace lora::testing;

namespace {

fs::path quantized_tokens() {
  const fs::path path = scratch_dir() / "quantized_tokens.bin";
  if (!fs::exists(path)) {
    std::vector<int32_t> tokens;
    Generator gen(13);
    for (int i = 0; i < 400; ++i) tokens.push_back(i % 3 == 0 ? 42 : static_cast<int32_t>(gen.below(101)));
    write_file(path, llmc_bin(tokens));
  }
  return path;
}

}  // namespace

TEST_CASE("finetune trains LoRA on an nf4 base with checkpointed activations", "[examples][quantized]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const fs::path json = scratch_dir() / "qlora_report.json";
  const RunResult r = run(finetune, "--weights " + quote(kTinyModel) + " --data " + quote(quantized_tokens()) +
                                        " --mode lora --base-dtype nf4 --checkpoint-activations --steps 3 --warmup 1"
                                        " --batch 2 --seq 8 --eval-batches 1 --lr 0.05 --report-json " +
                                        quote(json));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("on a nf4 base, activations checkpointed"));
  CHECK_THAT(r.out, Catch::Contains("linear layers:"));
  const auto report = nlohmann::json::parse(lora::read_file(json.string(), "the report"))["modes"][0];
  CHECK(report["val_loss_after"].get<double>() < report["val_loss_before"].get<double>());
}

TEST_CASE("finetune --mode compare --variants gives each variant a column", "[examples][quantized]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const fs::path json = scratch_dir() / "variants_report.json";
  const RunResult r = run(finetune, "--weights " + quote(kTinyModel) + " --data " + quote(quantized_tokens()) +
                                        " --variants lora,lora+nf4+ckpt --steps 2 --warmup 1 --batch 2 --seq 8"
                                        " --eval-batches 1 --report-json " +
                                        quote(json));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("Variants, batch 2 x 8") && Catch::Contains("lora+nf4+ckpt") &&
                        Catch::Contains("predicted peak total"));
  const auto modes = nlohmann::json::parse(lora::read_file(json.string(), "the report"))["modes"];
  REQUIRE(modes.size() == 2);
  // The nf4 base holds the linear weights in about an eighth of the bytes; checkpointing keeps fewer activations.
  CHECK(modes[1]["peak_bytes"]["frozen_params"].get<int64_t>() <
        modes[0]["peak_bytes"]["frozen_params"].get<int64_t>());
  CHECK(modes[1]["peak_bytes"]["activations"].get<int64_t>() < modes[0]["peak_bytes"]["activations"].get<int64_t>());
}

TEST_CASE("generate and perplexity run on a quantized base, close to the f32 base", "[examples][quantized]") {
  REQUIRE_PROGRAM(generate, "generate");
  REQUIRE_PROGRAM(perplexity, "perplexity");
  const std::string weights = "--weights " + quote(kTinyModel);
  const RunResult g =
      run(generate, weights + " --base-dtype nf4 --prompt-ids 5,17,42 --max-new-tokens 4 --temperature 0 --json");
  INFO(g.err);
  REQUIRE(g.exit_code == 0);
  CHECK(last_json_line(g.out)["generated_ids"].size() == 4);
  // ggml's blocks need layers of whole blocks of 32 inputs: the tiny GPT-2 (48 wide) is refused, naming a
  // layer; the tiny Llama (64 wide) runs.
  const RunResult refused = run(generate, weights + " --base-dtype q8_0 --prompt-ids 5,17 --max-new-tokens 2");
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("has 48 input features (this model's layers need bf16 or nf4)"));
  const std::string llama = std::string(LORA_TEST_DATA_DIR) + "/llama_tied";
  auto llama_ppl = [&](const std::string& base) {
    const RunResult r = run(perplexity, "--weights " + quote(llama) + " --data " + quote(quantized_tokens()) +
                                            " --seq 16 --base-dtype " + base + " --json");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return last_json_line(r.out)["mean_loss"].get<double>();
  };
  const double l32 = llama_ppl("f32"), l8 = llama_ppl("int8"), l4 = llama_ppl("q4_0");
  CHECK(std::abs(l8 - l32) < 1e-2 * l32);
  CHECK(std::abs(l4 - l32) < 0.1 * l32);
  auto ppl = [&](const std::string& base) {
    const RunResult r = run(
        perplexity, weights + " --data " + quote(quantized_tokens()) + " --seq 16 --base-dtype " + base + " --json");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return last_json_line(r.out)["mean_loss"].get<double>();
  };
  const double f32 = ppl("f32"), bf16 = ppl("bf16"), nf4 = ppl("nf4");
  CHECK(std::abs(bf16 - f32) < 1e-2);
  CHECK(std::abs(nf4 - f32) < 0.1 * f32);
}

TEST_CASE("bad --base-dtype uses are refused, naming the flag", "[examples][quantized]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  REQUIRE_PROGRAM(perplexity, "perplexity");
  const std::string model = "--weights " + quote(kTinyModel) + " --data " + quote(quantized_tokens()) + " --steps 1";
  const std::vector<std::tuple<fs::path, std::string, std::string>> bad = {
      {finetune, model + " --mode lora --base-dtype fp8",
       "--base-dtype 'fp8': expected one of f32, bf16, q8_0 (or int8), q4_0, nf4"},
      {finetune, model + " --mode full --base-dtype nf4", "use it with --mode lora"},
      {finetune, model + " --base-dtype int8", "per variant (--variants lora+nf4+ckpt)"},  // compare: per variant
      {finetune, model + " --variants lora,lora+fp8", "--variants 'lora+fp8': the base format 'fp8'"},
      {finetune, model + " --variants full+nf4", "a quantized base (+nf4) needs lora"},
      {finetune, model + " --variants half", "must start with full or lora"},
      {finetune, model + " --mode lora --variants lora,lora+nf4", "--variants applies to --mode compare"},
      {perplexity, "--weights " + quote(kTinyModel) + " --data " + quote(quantized_tokens()) + " --base-dtype q4",
       "--base-dtype 'q4'"},
  };
  for (const auto& [program, args, message] : bad) {
    INFO(program.filename().string() << " " << args);
    const RunResult r = run(program, args);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
}

TEST_CASE("quantize writes a compact base that the programs read as stored, and the ones needing floats refuse",
          "[examples][quantized]") {
  REQUIRE_PROGRAM(quantize, "quantize");
  REQUIRE_PROGRAM(generate, "generate");
  REQUIRE_PROGRAM(finetune, "finetune");
  REQUIRE_PROGRAM(export_gguf, "export_gguf");
  const std::string llama = std::string(LORA_TEST_DATA_DIR) + "/llama_tied";
  for (const auto& [source, type] :
       {std::pair{kTinyModel, std::string("nf4")}, std::pair{llama, std::string("q8_0")}}) {
    INFO(source << " " << type);
    const fs::path out = scratch_dir() / ("compact_" + type);
    fs::remove_all(out);
    const RunResult q = run(quantize, "--weights " + quote(source) + " --type " + type + " --out " + quote(out));
    INFO(q.out << q.err);
    REQUIRE(q.exit_code == 0);
    CHECK_THAT(q.out, Catch::Contains("it reads back to the same logits"));
    CHECK(fs::exists(out / "tokenizer.json") == fs::exists(fs::path(source) / "tokenizer.json"));
    // Decoding the stored base gives what quantizing the float model on load gives, token for token.
    // (The Llama fixture has no tokenizer of its own: GPT-2's files decode its ids, all below 101.)
    const std::string prompt = " --prompt-ids 5,17,42 --max-new-tokens 6 --temperature 0 --json --tokenizer " +
                               quote(fs::path(LORA_TEST_DATA_DIR) / ".." / ".." / "data" / "gpt2");
    const RunResult stored = run(generate, "--weights " + quote(out) + prompt);
    const RunResult on_load = run(generate, "--weights " + quote(source) + " --base-dtype " + type + prompt);
    INFO(stored.err << on_load.err);
    REQUIRE(stored.exit_code == 0);
    REQUIRE(on_load.exit_code == 0);
    CHECK(last_json_line(stored.out)["generated_ids"] == last_json_line(on_load.out)["generated_ids"]);
    CHECK_THAT(stored.err, Catch::Contains("compact base read as stored (" + type + ")"));
    // LoRA trains on it; a full fine-tune and another format refuse it, naming the stored one.
    const std::string data =
        " --data " + quote(quantized_tokens()) + " --steps 2 --warmup 1 --batch 2 --seq 8 --eval-batches 1";
    const fs::path run_dir = scratch_dir() / ("compact_run_" + type);
    fs::remove_all(run_dir);
    const RunResult lora = run(finetune, "--weights " + quote(out) + data + " --mode lora --save " + quote(run_dir));
    INFO(lora.out << lora.err);
    REQUIRE(lora.exit_code == 0);
    CHECK_THAT(lora.out, Catch::Contains("on a " + type + " base"));
    // Its adapter goes to llama.cpp as a GGUF adapter: the same file from the compact folder as from the float one.
    std::vector<std::string> adapters;
    for (const std::string& base : {out.string(), source}) {
      const fs::path gguf = scratch_dir() / ("compact_adapter_" + type + std::to_string(adapters.size()) + ".gguf");
      const RunResult e = run(export_gguf, "--weights " + quote(base) + " --adapter " + quote(run_dir / "lora") +
                                               " --adapter-only --out " + quote(gguf));
      INFO(e.out << e.err);
      REQUIRE(e.exit_code == 0);
      adapters.push_back(lora::read_file(gguf.string(), "the adapter"));
    }
    CHECK(adapters[0] == adapters[1]);
    const RunResult full = run(finetune, "--weights " + quote(out) + data + " --mode full");
    CHECK(full.exit_code != 0);
    CHECK_THAT(full.err, Catch::Contains("stored compact (" + type));
    const RunResult other = run(generate, "--weights " + quote(out) + " --base-dtype bf16" + prompt);
    CHECK(other.exit_code != 0);
    CHECK_THAT(other.err, Catch::Contains("not as bf16"));
  }
  // quantize's own refusals.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--weights " + quote(kTinyModel) + " --type f32 --out " + quote(scratch_dir() / "x"), "--type f32"},
      {"--weights " + quote(kTinyModel) + " --type q5 --out " + quote(scratch_dir() / "x"), "--type 'q5'"},
      {"--weights " + quote(kTinyModel) + " --type nf4 --out " + quote(kTinyModel), "is --weights"},
      {"--weights " + quote(kTinyModel) + " --type q8_0 --out " + quote(scratch_dir() / "x"), "48 input features"},
      {"--weights model.gguf --type q8_0 --out " + quote(scratch_dir() / "x"), "a GGUF file is read as it is stored"},
  };
  for (const auto& [args, message] : bad) {
    INFO(args);
    const RunResult r = run(quantize, args);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
  CHECK(!fs::exists(scratch_dir() / "x"));
}
